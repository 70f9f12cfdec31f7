"""full_fp32(): float32 math in true fp32, whatever the global settings.

`torch.set_float32_matmul_precision('high' / 'medium')` lets fp32 matmuls run
in TF32 / bf16 (cuBLAS on CUDA, oneDNN on CPUs with bf16 units), and
`torch.backends.cudnn.allow_tf32` (True by default) does the same for cuDNN
convolutions. Code whose result must not depend on those settings (argmins
over near ties, draws that must equal another code path's) runs inside
`full_fp32()`, which turns them off and restores them afterwards.

A leaf module (imports only torch), so any model file can use it.
"""
import contextlib

import torch


@contextlib.contextmanager
def full_fp32():
    """Inside: fp32 matmuls and cuDNN convolutions in full fp32. The caller's
    settings come back on exit, also when the body raises."""
    # the legacy flags, like the rest of the repo: mixing them with the
    # newer fp32_precision API makes PyTorch itself raise
    matmul = torch.get_float32_matmul_precision()
    cudnn = torch.backends.cudnn.allow_tf32
    # 'highest' also sets torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision('highest')
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        # restores cuda.matmul.allow_tf32 with it ('highest' <=> False)
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def cpu_has_native_bf16():
    """True where this CPU computes bf16 in hardware, as oneDNN sees it
    (AVX512-BF16 or AMX): there bf16 convolutions and matmuls are faster than
    fp32. Elsewhere oneDNN emulates bf16 and autocast only slows down."""
    if not torch.backends.mkldnn.is_available():
        return False
    check = getattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:  # an op this build registers but does not carry
        return False
