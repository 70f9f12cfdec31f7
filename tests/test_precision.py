"""full_fp32(): settings off inside, the caller's back afterwards."""
import pytest
import torch

from dldemos.utils.precision import full_fp32


def flags():
    return (torch.get_float32_matmul_precision(),
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32)


@pytest.mark.parametrize('precision', ['high', 'medium'])
def test_full_fp32_turns_off_tf32_and_restores_even_on_error(precision):
    before = flags()
    try:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = True
        with pytest.raises(RuntimeError, match='boom'):
            with full_fp32():
                assert flags() == ('highest', False, False)
                raise RuntimeError('boom')
        assert flags() == (precision, True, True)
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[2]
