"""Models of a config, and how a stage wraps them for training."""
import functools

import torch
from torch.nn.parallel import DistributedDataParallel

from dldemos.utils.dist_utils import is_dist, is_main
from dldemos.utils.precision import cpu_has_native_bf16
from dldemos.VQVAE.model import VQVAE
from dldemos.VQVAE.pixelcnn_model import PixelCNNWithEmbedding


def build_models(cfg):
    """(vqvae, gen_model) as the tutorial builds them from a config (the
    prior class-conditional when cfg['n_classes'] is set)."""
    img_shape = cfg['img_shape']
    vqvae = VQVAE(img_shape[0], cfg['dim'], cfg['n_embedding'])
    gen_model = PixelCNNWithEmbedding(cfg['pixelcnn_n_blocks'],
                                      cfg['pixelcnn_dim'],
                                      cfg['pixelcnn_linear_dim'],
                                      cfg['pixelcnn_bn'], cfg['n_embedding'],
                                      cfg['n_classes'])
    return vqvae, gen_model


def prepare_for_training(model, cfg, device):
    """The module a training step calls: `model` moved to the device, then
    (as configured) channels_last, DDP under torchrun, torch.compile. The
    optimizer and checkpoints keep using `model` itself (the unwrapped one)."""
    model.to(device)
    if cfg['channels_last'] and channels_last_pays(model, device):
        model.to(memory_format=torch.channels_last)
    if is_dist():
        model = DistributedDataParallel(
            model, device_ids=[device] if device.type == 'cuda' else None)
    if cfg['compile']:
        model = torch.compile(model)
    return model


def channels_last_pays(model, device):
    """Whether cfg['channels_last'] applies to `model` on `device`: every
    model on CUDA; on a CPU only the VQ-VAE, whose plain convs oneDNN runs
    faster in NHWC, while the prior's masked convs ran slower in NHWC
    (benchmarks/speed/bench_cpu.py --channels-last)."""
    return device.type == 'cuda' or (device.type == 'cpu'
                                     and isinstance(model, VQVAE))


def amp_enabled(cfg, device):
    """Whether cfg['amp'] (bf16 autocast) takes effect on `device`: on CUDA,
    and on a CPU that computes bf16 natively; elsewhere bf16 is emulated and
    slower than fp32, so the run trains in fp32 (said once)."""
    if not cfg['amp']:
        return False
    if device.type == 'cuda':
        return True
    if device.type == 'cpu' and cpu_has_native_bf16():
        return True
    _say_amp_ignored(device.type)
    return False


@functools.cache  # one line per process and device type, not per step
def _say_amp_ignored(device_type):
    if is_main():
        print(f'note: amp=True is ignored on this {device_type} (no native '
              'bf16 support): training in fp32', flush=True)


def autocast(cfg, device):
    """bf16 autocast where amp_enabled(cfg, device): bf16 needs no loss
    scaling; the quantizer's distances and the prior's output layer stay fp32
    (on CUDA and on a CPU alike)."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=amp_enabled(cfg, device))
