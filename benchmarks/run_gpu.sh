#!/usr/bin/env bash
# All GPU benchmarks in one go; each prints ours vs the tutorial's algorithm
# from the same run, the device and its command. Output: one log per
# benchmark in OUT (default benchmarks/results_gpu), plus all.md (tables).
#   bash benchmarks/run_gpu.sh [OUT]
# About 5-8 minutes on one H100 (the tutorial's side takes most of it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results_gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    > "$OUT/gpu.txt" 2>&1 || true
run() {  # name, then the command
    local name=$1; shift
    echo "== $name: $*"
    ( time "$@" ) > "$OUT/$name.log" 2>&1
    echo "   exit $? -> $OUT/$name.log"
}
B="python benchmarks"
run sampling          $B/bench_sampling.py --device cuda
run nearest_neighbor  $B/bench_nearest_neighbor.py --device cuda
run prior_c4          $B/bench_training.py prior --device cuda -c 4
run prior_c4_cl       $B/bench_training.py prior --device cuda -c 4 --channels-last
run prior_c0          $B/bench_training.py prior --device cuda -c 0
run vqvae_c4          $B/bench_training.py vqvae --device cuda -c 4
run vqvae_c4_cl       $B/bench_training.py vqvae --device cuda -c 4 --channels-last
run vqvae_c0          $B/bench_training.py vqvae --device cuda -c 0
if [ "${COMPILE:-1}" = 1 ]; then  # torch.compile adds a minute or two
    run prior_c4_compile $B/bench_training.py prior --device cuda -c 4 --compile
    run vqvae_c4_compile $B/bench_training.py vqvae --device cuda -c 4 --compile
fi
# the tables only, in one file
for f in "$OUT"/*.log; do
    sed -n '/^## /,$p' "$f" | grep -v '^real\|^user\|^sys'
done > "$OUT/all.md"
cat "$OUT/all.md"
