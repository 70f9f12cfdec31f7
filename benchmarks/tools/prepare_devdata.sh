#!/usr/bin/env bash
# Fill .devdata/ (git-ignored) with what benchmarks/tools/run_gpu.sh needs on
# a GPU machine that reaches neither the data nor the network; carry it there
# (the device tool's run: carry [".devdata"]).
#
#   bash benchmarks/tools/prepare_devdata.sh SRC  # SRC: the data root (the
#                                                 # --data-root of main.py)
#
#   .devdata/mnist/MNIST/raw/*.gz          MNIST, compressed (11.6 MB);
#                                          run_gpu.sh unpacks it there
#   .devdata/whl/lmdb-*.whl                the lmdb module for the device's
#                                          Python (WHL_PY, default 3.12)
#   .devdata/celebA/img_align_celeba/      the first FACES (default 1000)
#                                          CelebA faces, for the LMDB step
# The device tool carries at most 64 MiB with the working tree: this is
# about 21 MB.
set -euo pipefail
if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: bash $0 SRC: SRC is the data root holding mnist/ (and" \
         "celebA/), e.g. data" >&2
    exit 2
fi
SRC=$(cd "$1" && pwd)  # before the cd: SRC may be relative to the caller
cd "$(dirname "$0")/../.."  # the repository root
DEST=.devdata
FACES=${FACES:-1000}
WHL_PY=${WHL_PY:-3.12}

raw=$SRC/mnist/MNIST/raw
mkdir -p "$DEST/mnist/MNIST/raw" "$DEST/whl"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte \
         t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [ -f "$raw/$f.gz" ]; then
        cp "$raw/$f.gz" "$DEST/mnist/MNIST/raw/"
    elif [ -f "$raw/$f" ]; then  # run_gpu.sh unpacks what it finds
        gzip -nc "$raw/$f" > "$DEST/mnist/MNIST/raw/$f.gz"
    else
        echo "error: no $raw/$f(.gz): pass the data root holding mnist/" >&2
        exit 2
    fi
done
echo "MNIST: $(du -sh "$DEST/mnist" | cut -f1) in $DEST/mnist"

faces=$SRC/celebA/img_align_celeba
if [ -d "$faces" ] && [ "$FACES" -gt 0 ]; then
    mkdir -p "$DEST/celebA/img_align_celeba"
    mapfile -t jpgs < <(find "$faces" -maxdepth 1 -type f -name '*.jpg' | sort)
    [ ${#jpgs[@]} -gt 0 ] &&
        cp -t "$DEST/celebA/img_align_celeba/" "${jpgs[@]:0:$FACES}"
    echo "faces: $(ls "$DEST/celebA/img_align_celeba" | wc -l) in" \
         "$DEST/celebA/img_align_celeba"
else
    echo "faces: none ($faces absent or FACES=0): run_gpu.sh skips the LMDB step"
fi

# lmdb for the device's Python (its own image lacks it): a copy from .whl/,
# else pip (PyPI) for the version installed here
if ls "$DEST"/whl/lmdb-*cp${WHL_PY/./}*.whl > /dev/null 2>&1; then
    echo "lmdb wheel: already in $DEST/whl"
elif ls .whl/lmdb-*cp${WHL_PY/./}*.whl > /dev/null 2>&1; then
    cp .whl/lmdb-*cp${WHL_PY/./}*.whl "$DEST/whl/"
    echo "lmdb wheel: copied from .whl/"
else
    version=$(python3 -c 'import lmdb; print(lmdb.__version__)' 2>/dev/null ||
              true)
    if python3 -m pip download -q --no-deps --only-binary=:all: \
            --python-version "$WHL_PY" --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$DEST/whl" \
            "lmdb${version:+==$version}"; then
        echo "lmdb wheel: downloaded"
    else
        echo "lmdb wheel: none (pip could not fetch one): run_gpu.sh says" \
             "so and skips the LMDB step"
    fi
fi
ls "$DEST/whl"
echo "total: $(du -sh "$DEST" | cut -f1) in $DEST (the device carries 64 MiB" \
     "with the working tree)"
