"""Experiment configs as plain dicts (the tutorial's five, then ours).

Edit a value here, or override one key per run:
    python dldemos/VQVAE/main.py -c 0 --cfg-options n_epochs=5 lr=1e-3

Checkpoint paths without a folder (`model_mnist.pth`) are written inside the
run's work dir (`--work-dir`, default `work_dirs/`); a path with a folder is
used as given.
"""
import copy

# Keys shared by every config, with defaults. The tutorial's configs set only
# the model / optimisation keys; everything below was added by this project
# and keeps the tutorial's behaviour unless changed.
DEFAULTS = dict(
    train_subset=None,     # cap on training images (None = all): smoke runs
    num_workers=4,         # DataLoader workers (the tutorial's lesson)
    use_lmdb=False,        # read CelebA(HQ) images from an LMDB
    lr_2=1e-3,             # prior learning rate (hard-coded in the tutorial)
    n_sample=81,           # images in the sample grid
    sampler='cached',      # 'cached' (incremental) or 'naive' (tutorial's)
    temperature=1.0,       # sampling temperature
    top_k=None,            # sample only from the k most likely codes
    eval_subset=1000,      # held-out images scored at the end of each epoch
    epoch_swd_samples=0,   # samples scored each prior epoch by the patch
                           # distance (scoring/swd.py; 0 = off)
    save_every=1,          # epochs between checkpoints (and resume points)
    preview_every=1,       # epochs between preview grids in previews/ (0=off)
    n_preview=16,          # images in a preview grid (cheap: a handful)
    use_code_cache=True,   # encode the train set once for prior training
    prior_hflip=False,     # the prior also trains on the codes of every
                           # training image mirrored left-right (faces:
                           # twice the data; not for digits or text)
    amp=False,             # bf16 autocast on CUDA and on a CPU with
                           # native bf16 (elsewhere ignored, said once);
                           # off: the tutorial's runs train in fp32
    channels_last=False,   # NHWC memory layout: both models on CUDA, the
                           # VQ-VAE only on a CPU (where the prior's masked
                           # convs run slower in it)
    compile=False,         # torch.compile the models
    pixelcnn_bn=True,      # BatchNorm in the prior's gated blocks (the
                           # tutorial's); per-rank batch statistics make a
                           # DDP step differ slightly from one big-batch step
    n_classes=None,        # None: the tutorial's unconditional prior; 10:
                           # an MNIST prior conditioned on the digit
    dead_code_restart=False,  # move codes unused for a while onto encoder
                              # outputs of the batch (codebook.py)
    restart_threshold=1.0,    # ... when their usage EMA (encoder outputs per
                              # batch) falls below this
    codebook_ema=False,    # EMA codebook updates (VQ-VAE paper, appendix
                           # A.1) instead of the embedding loss
    ema_decay=0.99,        # decay of the EMA updates and of the usage EMA
    kmeans_init=False,     # k-means on the first batch's encoder outputs
                           # initialises the codebook
    lr_schedule='constant',    # VQ-VAE lr: 'constant' | 'cosine' (warmup,
                               # cosine decay) | 'onecycle' (lr_schedule.py)
    lr_schedule_2='constant',  # the same for the prior's lr_2
    warmup=0.05,           # fraction of the steps the lr rises ('cosine',
                           # 'onecycle')
    img_fit='auto',        # how an image is fitted to img_shape: 'crop'
                           # (resize the short side, cut the centre),
                           # 'stretch', 'celeba' (the tutorial's CenterCrop
                           # 168 + Resize); 'auto': 'celeba' for CelebA(HQ),
                           # 'crop' for your own images (MNIST: resized)
)

mnist_cfg1 = dict(dataset_type='MNIST',
                  img_shape=(1, 28, 28),
                  dim=32,
                  n_embedding=32,
                  batch_size=256,
                  n_epochs=20,
                  l_w_embedding=1,
                  l_w_commitment=0.25,
                  lr=2e-4,
                  n_epochs_2=50,
                  batch_size_2=256,
                  pixelcnn_n_blocks=15,
                  pixelcnn_dim=128,
                  pixelcnn_linear_dim=32,
                  vqvae_path='model_mnist.pth',
                  gen_model_path='gen_model_mnist.pth')

celebahq_cfg1 = dict(dataset_type='CelebAHQ',
                     img_shape=(3, 128, 128),
                     dim=128,
                     n_embedding=64,
                     batch_size=64,
                     n_epochs=30,
                     l_w_embedding=1,
                     l_w_commitment=0.25,
                     lr=2e-4,
                     n_epochs_2=200,
                     batch_size_2=32,
                     pixelcnn_n_blocks=15,
                     pixelcnn_dim=384,
                     pixelcnn_linear_dim=256,
                     vqvae_path='model_celebahq_1.pth',
                     gen_model_path='gen_model_celebahq_1.pth')

celebahq_cfg2 = dict(dataset_type='CelebAHQ',
                     img_shape=(3, 128, 128),
                     dim=128,
                     n_embedding=128,
                     batch_size=64,
                     n_epochs=30,
                     l_w_embedding=1,
                     l_w_commitment=0.25,
                     lr=2e-4,
                     n_epochs_2=200,
                     batch_size_2=32,
                     pixelcnn_n_blocks=15,
                     pixelcnn_dim=384,
                     pixelcnn_linear_dim=256,
                     vqvae_path='model_celebahq_2.pth',
                     gen_model_path='gen_model_celebahq_2.pth')

celebahq_cfg3 = dict(dataset_type='CelebAHQ',
                     img_shape=(3, 64, 64),
                     dim=128,
                     n_embedding=64,
                     batch_size=64,
                     n_epochs=20,
                     l_w_embedding=1,
                     l_w_commitment=0.25,
                     lr=2e-4,
                     n_epochs_2=200,
                     batch_size_2=32,
                     pixelcnn_n_blocks=15,
                     pixelcnn_dim=384,
                     pixelcnn_linear_dim=256,
                     vqvae_path='model_celebahq_3.pth',
                     gen_model_path='gen_model_celebahq_3.pth')

celebahq_cfg4 = dict(dataset_type='CelebAHQ',
                     img_shape=(3, 64, 64),
                     dim=128,
                     n_embedding=32,
                     batch_size=64,
                     n_epochs=20,
                     l_w_embedding=1,
                     l_w_commitment=0.25,
                     lr=2e-4,
                     n_epochs_2=100,
                     batch_size_2=32,
                     pixelcnn_n_blocks=15,
                     pixelcnn_dim=384,
                     pixelcnn_linear_dim=256,
                     vqvae_path='model_celebahq_4.pth',
                     gen_model_path='gen_model_celebahq_4.pth')

# Ours. 5: all four stages on MNIST in minutes on a 2-core CPU: the
# tutorial's VQ-VAE for 5 epochs at a higher lr (few epochs need larger
# steps), and a much smaller prior trained 12 epochs, because fewer prior
# epochs gave clearly worse held-out samples when this was chosen. Times and
# scores: docs/results.md.
mnist_quick_cfg = dict(dataset_type='MNIST',
                       img_shape=(1, 28, 28),
                       dim=32,
                       n_embedding=32,
                       batch_size=256,
                       n_epochs=5,
                       l_w_embedding=1,
                       l_w_commitment=0.25,
                       lr=1e-3,
                       n_epochs_2=12,
                       batch_size_2=256,
                       pixelcnn_n_blocks=5,
                       pixelcnn_dim=32,
                       pixelcnn_linear_dim=32,
                       vqvae_path='model_mnist_quick.pth',
                       gen_model_path='gen_model_mnist_quick.pth')

# 6: MNIST beyond the tutorial at config 0's budget (its model sizes and
# epochs): the VQ-VAE option that measured best and a prior conditioned on
# the digit. The codebook ablation on config 0's VQ-VAE
# (benchmarks/experiments/ablation_codebook.py, measured in
# docs/results.md#codebook-ablation-config-0s-vq-vae) found the lr schedule
# is what counts: a one-cycle lr beat the tutorial's constant lr at every
# peak tried, 8e-3 best, and twice that diverged, so 8e-3 sits a factor of 2
# below the edge. On MNIST the codebook never collapses, so dead-code
# restarts and k-means init do not help there, and EMA updates added
# nothing on top of the one-cycle lr: all three stay off. The prior keeps
# the tutorial's lr_2 with a cosine decay (its 50 epochs need a GPU and were
# not tuned).
mnist_plus_cfg = dict(mnist_cfg1,
                      lr=8e-3,
                      lr_schedule='onecycle',
                      lr_schedule_2='cosine',
                      n_classes=10,
                      vqvae_path='model_mnist_plus.pth',
                      gen_model_path='gen_model_mnist_plus.pth')

# 7: config 6's VQ-VAE recipe and conditional prior sized for a 2-core CPU
# (all four stages on the full MNIST in minutes). Chosen by runs on such a
# CPU scored on the MNIST test split
# (docs/results.md#how-configs-6-and-7-were-chosen): 6 VQ-VAE epochs at
# config 6's one-cycle peak reconstruct better than lower peaks or fewer
# epochs; the prior, wider than config 5's
# (p=48, linear 64) with a one-cycle lr peaking at 3e-3, reaches a lower
# held-out NLL in 6 epochs than p=32 in 9; sampling at temperature 0.9
# raises the conditional accuracy and lowers the sample distance
# (temperature=1.0 samples as the tutorial does). The prior and temperature
# were chosen over an earlier VQ-VAE (one-cycle peak 2e-3) and kept.
mnist_plus_quick_cfg = dict(mnist_quick_cfg,
                            n_epochs=6,
                            lr=8e-3,
                            lr_schedule='onecycle',
                            n_epochs_2=6,
                            pixelcnn_dim=48,
                            pixelcnn_linear_dim=64,
                            lr_2=3e-3,
                            lr_schedule_2='onecycle',
                            n_classes=10,
                            temperature=0.9,
                            vqvae_path='model_mnist_plus_quick.pth',
                            gen_model_path='gen_model_mnist_plus_quick.pth')

# 8: CelebA faces at 64x64 (the tutorial's CelebA pipeline: CenterCrop(168) +
# Resize) sized for 2 CPU cores and a few thousand faces; the same config
# runs unchanged on the full CelebA on a GPU. On faces the tutorial's
# codebook training collapses at this budget (most of the 64 codes unused
# after a few epochs, at lr 2e-4 and at 1e-3), so this config trains the
# codebook by EMA updates with k-means init and dead-code restarts, which
# kept nearly every code in use (docs/results.md#faces-config-8-cpu). It
# trains in bf16 where the CPU (or GPU) computes it natively: run to the end
# in fp32 and in bf16 with the same seed, bf16 kept the held-out PSNR, prior
# NLL and sample distance within what a second fp32 training seed moved
# them (docs/performance_cpu.md#config-8-end-to-end-fp32-vs-bf16); elsewhere
# amp is ignored and the run is the fp32 one.
celeba_cfg = dict(dataset_type='CelebA',
                  img_shape=(3, 64, 64),
                  dim=64,
                  n_embedding=64,
                  batch_size=64,
                  n_epochs=15,
                  l_w_embedding=1,
                  l_w_commitment=0.25,
                  lr=1e-3,
                  codebook_ema=True,
                  kmeans_init=True,
                  dead_code_restart=True,
                  restart_threshold=32.0,
                  lr_schedule='cosine',
                  n_epochs_2=12,
                  batch_size_2=32,
                  pixelcnn_n_blocks=8,
                  pixelcnn_dim=64,
                  pixelcnn_linear_dim=128,
                  lr_schedule_2='cosine',
                  eval_subset=600,
                  num_workers=2,
                  amp=True,
                  vqvae_path='model_celeba.pth',
                  gen_model_path='gen_model_celeba.pth')

# 9: your own images: every image under --data-root (recursively, any format
# PIL reads), fitted to 64x64 RGB (resize the short side, cut the centre),
# with config 8's sizes and codebook options (which kept the codebook in use
# on faces where the tutorial's training collapsed it). Class subfolders
# make the prior class-conditional: n_classes='auto' takes their count from
# the folder (a flat folder: unconditional); n_classes=None keeps a labelled
# folder unconditional. img_shape=(1, H, W) trains on grey images; H and W
# must be multiples of 4 (the VQ-VAE halves them twice). fp32: bf16 was
# measured end to end on faces (config 8), not on your images.
images_cfg = dict(celeba_cfg,
                  dataset_type='ImageFolder',
                  amp=False,
                  n_classes='auto',
                  img_fit='crop',
                  vqvae_path='model_images.pth',
                  gen_model_path='gen_model_images.pth')

# 10: faces beyond config 8 in about half an hour on a 2-core CPU, chosen by
# held-out PSNR and the samples' patch distance (scoring/swd.py) in the runs
# of docs/results.md#faces-config-10-cpu: 512 codes instead of 64 (the
# largest single gain in reconstruction and in the samples' distance),
# batch 32 and 30 epochs for the VQ-VAE, a prior that also sees every face
# mirrored (it overfits 5,400 faces; with the mirrored codes it trains half
# the epochs over twice the data), all paid for by bf16 autocast and the
# VQ-VAE in channels_last. Lower sampling temperatures and top-k made the
# samples' distance worse. On a CPU without native bf16 amp is ignored and
# the run is slower, not different.
celeba_plus_cfg = dict(celeba_cfg,
                       n_embedding=512,
                       batch_size=32,
                       n_epochs=30,
                       prior_hflip=True,
                       n_epochs_2=6,
                       amp=True,
                       channels_last=True,
                       vqvae_path='model_celeba_plus.pth',
                       gen_model_path='gen_model_celeba_plus.pth')

cfgs = [mnist_cfg1, celebahq_cfg1, celebahq_cfg2, celebahq_cfg3, celebahq_cfg4,
        mnist_quick_cfg, mnist_plus_cfg, mnist_plus_quick_cfg, celeba_cfg,
        images_cfg, celeba_plus_cfg]
# one line each, for --help and error messages
CONFIG_NAMES = ['MNIST, the tutorial\'s run (GPU)',
                'CelebAHQ 128x128, 64 codes (tutorial)',
                'CelebAHQ 128x128, 128 codes (tutorial)',
                'CelebAHQ 64x64, 64 codes (tutorial)',
                'CelebAHQ 64x64, 32 codes (tutorial, the quickest face run)',
                'quick MNIST on a CPU',
                'MNIST beyond the tutorial: tuned lr, conditional '
                'prior (GPU)',
                'config 6 sized for a CPU',
                'CelebA faces 64x64 on a CPU (about 20 minutes)',
                'your images (--data-root FOLDER; class subfolders: a '
                'conditional prior) 64x64 on a CPU',
                'better CelebA faces 64x64 on a CPU: 512 codes, bf16 (about '
                '35 minutes)']


# sized for a GPU: on a CPU they take hours to days
GPU_CONFIGS = (0, 1, 2, 3, 4, 6)


def describe_configs():
    return '; '.join(f'{i} = {name}' for i, name in enumerate(CONFIG_NAMES))


def get_cfg(id: int):
    """A fresh copy of config `id` with every default key filled in."""
    if not isinstance(id, int) or not 0 <= id < len(cfgs):
        raise ValueError(f'unknown config id {id!r}: valid ids are '
                         f'0-{len(cfgs) - 1} ({describe_configs()})')
    cfg = copy.deepcopy(cfgs[id])
    for k, v in DEFAULTS.items():
        cfg.setdefault(k, v)
    return cfg
