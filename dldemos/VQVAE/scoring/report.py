"""evaluate.py's printed table. Each row is named by its key in
metrics.json (section, key), so a number on the screen is found in the file
and in docs/results.md under the same name."""


def format_table(r):
    """metrics.json's dict as aligned rows: section, key, value (with its
    unit or what it is measured against)."""
    v, p, s = r['vqvae'], r['prior'], r['samples']
    ep = {k: c['epochs_trained'] for k, c in r['checkpoints'].items()}
    rows = [
        ('vqvae', 'epochs_trained', f'{ep["vqvae"]}'),
        ('', 'n_images', f'{v["n_images"]} held-out'),
        ('', 'mse', f'{v["mse"]:.5f}'),
        ('', 'psnr', f'{v["psnr"]:.2f} dB (of the mean MSE)'),
        ('', 'ssim', f'{v["ssim"]:.4f}'),
        ('', 'codes_used', f'{v["codes_used"]}/{v["n_embedding"]}'),
        ('', 'perplexity', f'{v["perplexity"]:.2f}'),
    ]
    if 'skipped' in p:  # no prior, or one trained on another VQ-VAE
        return align(rows + [('prior', 'skipped', p['skipped'])])
    rows += [
        ('prior', 'epochs_trained', f'{ep["gen_model"]}'),
        ('', 'nll_nats_per_latent', f'{p["nll_nats_per_latent"]:.4f}'),
        ('', 'uniform_nats_per_latent',
         f'{p["uniform_nats_per_latent"]:.4f} (log K)'),
        ('', 'bits_per_dim', f'{p["bits_per_dim"]:.4f} (code bits only)'),
        ('samples', 'n_samples', f'{s["n_samples"]}'),
    ]
    if s['n_samples']:
        rows += sample_rows(s)
    return align(rows)


def sample_rows(s):
    """The samples' rows: their distances to the held-out images beside the
    two references that say what a good value is (reconstructions: the
    decoder's limit; real train images: the floor)."""
    fid = 'skipped' if s.get('fid') is None else f'{s["fid"]:.3f}'
    rows = [('', 'fid', f'{fid} ({s["fid_feature"]} features)')]
    if 'reference' in s:
        ref = s['reference']
        rows += [('', 'reference.reconstructions_vs_test.fid',
                  f'{ref["reconstructions_vs_test"]["fid"]:.3f}'),
                 ('', 'reference.train_vs_test.fid',
                  f'{ref["train_vs_test"]["fid"]:.3f}')]
    for key in ('swd', 'swd_ref_reconstructions', 'swd_ref_train'):
        if s.get(key) is not None:
            rows.append(('', key, f'{s[key]:.3f}'))
    if 'classifier' in s:
        rows += [('', 'classifier.test_accuracy',
                  f'{s["classifier"]["test_accuracy"]:.4f}'),
                 ('', 'mean_confidence', f'{s["mean_confidence"]:.4f}'),
                 ('', 'class_histogram',
                  ' '.join(map(str, s['class_histogram'])))]
    if 'conditional_accuracy' in s:
        rows.append(('', 'conditional_accuracy',
                     f'{s["conditional_accuracy"]:.4f} (the classifier '
                     'agrees with the class asked for)'))
    return rows


def align(rows):
    """Rows as columns padded to their widest cell (no table library)."""
    w = [max(len(row[i]) for row in rows) for i in range(2)]
    return '\n'.join(f'{a:<{w[0]}}  {b:<{w[1]}}  {c}' for a, b, c in rows)
