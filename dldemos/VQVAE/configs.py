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
    save_every=1,          # epochs between checkpoints (and resume points)
    preview_every=1,       # epochs between preview grids in previews/ (0=off)
    n_preview=16,          # images in a preview grid (cheap: a handful)
    use_code_cache=True,   # encode the train set once for prior training
    amp=False,             # bf16 autocast on CUDA (ignored on CPU); off:
                           # the tutorial's runs train in fp32
    channels_last=False,   # NHWC memory layout on CUDA
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

# Ours. 5: MNIST on a 2-core CPU in about 6 minutes, all four stages: the
# tutorial's VQ-VAE for 5 epochs at a higher lr, and a smaller prior for 12
# (2 and 3 epochs gave held-out sample FID 213 vs 115 here: see README).
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

cfgs = [mnist_cfg1, celebahq_cfg1, celebahq_cfg2, celebahq_cfg3, celebahq_cfg4,
        mnist_quick_cfg]
# one line each, for --help and error messages
CONFIG_NAMES = ['MNIST, the tutorial\'s run (GPU)',
                'CelebAHQ 128x128, 64 codes (tutorial)',
                'CelebAHQ 128x128, 128 codes (tutorial)',
                'CelebAHQ 64x64, 64 codes (tutorial)',
                'CelebAHQ 64x64, 32 codes (tutorial, the quickest face run)',
                'quick MNIST on a CPU']


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
