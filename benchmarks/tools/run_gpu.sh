#!/usr/bin/env bash
# Every GPU measurement of the project in one command, in priority order,
# each step with its own log; a failing step does not stop the others.
#
#   bash benchmarks/tools/prepare_devdata.sh path/to/data  # once, with data
#   bash benchmarks/tools/run_gpu.sh [OUT]            # on the GPU machine
#   bash benchmarks/tools/run_gpu.sh --dry-run [OUT]  # the same steps on
#                                   # the CPU, tiny: checks the script
#
# OUT (default benchmarks/results_gpu) gets three files, rewritten after
# every step, so a run cut short still leaves what it finished:
#   all.md       the run (device, torch, data) and per step its exit status,
#                wall time and tables
#   gpu.txt      nvidia-smi, python, torch, CUDA, NCCL, lmdb
#   logs.tar.gz  every step's log and the runs' metrics.json, per-epoch
#                logs, config.json and images (no checkpoints)
# The work dirs and full logs stay in WORK (default
# work_dirs/run_gpu_<date>_<time>).
#
# Steps, in this order unless STEPS names others (cheapest first):
#   env          python, torch, GPU; lmdb from a carried wheel; MNIST unpacked
#                (always runs)
#   torchrun     both launchers, torchrun --nproc_per_node=1 (NCCL on a GPU),
#                config 0 for 1 epoch on 300 images
#   amp          benchmarks/speed/bench_amp.py: config 0 with bf16 autocast
#                off vs on, 3 + 3 epochs, same seed: test PSNR, prior NLL,
#                images/s
#   bench        (= bench_sampling ... bench_nn) ours vs the tutorial:
#                sampling (configs 0 and 4, batch 81), prior and VQ-VAE
#                training of configs 0 and 4 (bf16 and fp32), prior MFU,
#                nearest neighbour
#   c0           config 0's four stages + evaluate.py, the README row
#                (benchmarks/experiments/readme_results.py --runs c0), wall
#                time per stage
#   c6           config 6 likewise (--runs plus)
#   bench_extra  channels_last and torch.compile variants (COMPILE=0: none
#                of the compile runs)
#   lmdb         benchmarks/speed/bench_lmdb.py on
#                DATA_ROOT/celebA/img_align_celeba (skipped when absent or
#                when lmdb cannot be imported)
#
# Environment: DATA_ROOT (default .devdata if it exists, else data), DEVICE
# (default cuda; --dry-run: cpu), STEPS (e.g. "c0 c6"), WORK, PYTHON
# (default python3), BUDGET_S (seconds for all steps; default 540, dry run
# 1800): a step is skipped when less than its minimum is left, and a running
# step is stopped with SIGTERM when the budget ends (main.py then saves a
# resume point), so the summary is always written. Exit status 1 when a
# step failed, else 0 (also with steps skipped or stopped by the budget).
set -uo pipefail
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")  # for --help after the cd
cd "$(dirname "$0")/../.."  # the repository root

DRY=0
if [ "${1:-}" = --dry-run ]; then DRY=1; shift; fi
case "${1:-}" in -h|--help) sed -n '2,/^set /p' "$SELF" | sed '$d; s/^# \{0,1\}//'
                 exit 0 ;; -*) echo "unknown option $1 (see --help)" >&2
                 exit 2 ;; esac
OUT=${1:-benchmarks/results_gpu}
PY=${PYTHON:-python3}
if [ -z "${DATA_ROOT:-}" ]; then
    if [ -d .devdata ]; then DATA_ROOT=.devdata; else DATA_ROOT=data; fi
fi
if [ $DRY = 1 ]; then DEVICE=${DEVICE:-cpu}; BUDGET_S=${BUDGET_S:-1800}
else DEVICE=${DEVICE:-cuda}; BUDGET_S=${BUDGET_S:-540}; fi
WORK=${WORK:-work_dirs/run_gpu_$(date +%Y%m%d_%H%M%S)}
DEFAULT_STEPS='torchrun amp bench c0 c6 bench_extra lmdb'
STEPS=${STEPS:-$DEFAULT_STEPS}
mkdir -p "$OUT" "$WORK" || exit 2
OUT=$(cd "$OUT" && pwd); WORK=$(cd "$WORK" && pwd)
rm -f "$OUT/all.md" "$OUT/gpu.txt" "$OUT/logs.tar.gz" "$WORK/steps.tsv"
: > "$WORK/steps.tsv"
DEADLINE=$((SECONDS + BUDGET_S))
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}
export PY DATA_ROOT DEVICE WORK DRY OUT

BENCH_CORE="bench_sampling bench_prior_c0 bench_prior_c0_fp32 bench_vqvae_c0
bench_vqvae_c0_fp32 bench_prior_c4 bench_vqvae_c4 bench_nn"
BENCH_EXTRA="bench_prior_c4_cl bench_vqvae_c4_cl bench_prior_c4_compile
bench_vqvae_c4_compile"
declare -A MIN_S=([torchrun]=60 [amp]=120 [c0]=90 [c6]=90 [lmdb]=30)
declare -A WHAT=(
    [env]='python, torch, GPU, lmdb, data'
    [torchrun]='torchrun --nproc_per_node=1, both launchers, config 0, 1 epoch'
    [amp]='config 0, bf16 autocast off vs on (bench_amp.py)'
    [bench_sampling]='sampling, ours vs the tutorial (configs 0, 4)'
    [bench_prior_c0]='prior training config 0, bf16, MFU'
    [bench_prior_c0_fp32]='prior training config 0, fp32 (as configs 0-4 train)'
    [bench_vqvae_c0]='VQ-VAE training config 0, bf16'
    [bench_vqvae_c0_fp32]='VQ-VAE training config 0, fp32'
    [bench_prior_c4]='prior training config 4, bf16, MFU'
    [bench_vqvae_c4]='VQ-VAE training config 4, bf16'
    [bench_nn]='nearest neighbour, time and memory'
    [c0]="config 0: four stages + evaluate.py (README's row)"
    [c6]='config 6: four stages + evaluate.py'
    [bench_prior_c4_cl]='prior training config 4, channels_last'
    [bench_vqvae_c4_cl]='VQ-VAE training config 4, channels_last'
    [bench_prior_c4_compile]='prior training config 4, torch.compile'
    [bench_vqvae_c4_compile]='VQ-VAE training config 4, torch.compile'
    [lmdb]='LMDB vs folder reading (bench_lmdb.py)')

# ------------------------------------------------------------ the steps
# Each runs in its own bash (under `timeout`), so they are exported.
x() { echo "\$ $*"; "$@"; }  # show a command, then run it

if [ $DRY = 1 ]; then  # tiny: checks every command, measures nothing
    SMALL='train_subset=64 eval_subset=32 n_sample=4 n_preview=0 num_workers=0'
    TINY="$SMALL n_epochs=1 n_epochs_2=1"
    TORCHRUN_OPTS="train_subset=32 eval_subset=16 n_epochs=1 n_epochs_2=1
n_preview=0 num_workers=0"
    AMP_ARGS="--epochs 1 --epochs-2 1 --cfg-options $SMALL"
    AMP_EVAL='--eval-images 64'
    README_ARGS="--cfg-options $TINY"
    README_EVAL='--n-samples 12 --classifier-epochs 1 --classifier-subset 64'
    README_EVAL+=' --eval-images 64'
    BQ='--quick --repeats 1 --steps 1 --batch 2'  # bench_training
    SQ='--quick --repeats 1 --configs 0 --batch 2'  # bench_sampling
    NQ='--quick --repeats 1'
    LMDB_ARGS='--repeats 1 --workers 0'
else
    TORCHRUN_OPTS='train_subset=300 eval_subset=300 n_epochs=1 n_epochs_2=1'
    AMP_ARGS='--epochs 3 --epochs-2 3'
    AMP_EVAL=''
    README_ARGS='' README_EVAL='' BQ='' SQ='' NQ='' LMDB_ARGS=''
fi
export TORCHRUN_OPTS AMP_ARGS AMP_EVAL README_ARGS README_EVAL BQ SQ NQ \
    LMDB_ARGS

step_torchrun() {
    local dev=() launcher
    [ "$DEVICE" = cpu ] && dev=(--device cpu)  # gloo; else NCCL, LOCAL_RANK's GPU
    for launcher in dist_train_vqvae.py dist_train_pixelcnn.py; do
        x "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 \
            "dldemos/VQVAE/$launcher" -c 0 --data-root "$DATA_ROOT" \
            --work-dir "$WORK/torchrun" "${dev[@]}" \
            --cfg-options $TORCHRUN_OPTS || return
    done
}
step_amp() {
    x "$PY" benchmarks/speed/bench_amp.py -c 0 --data-root "$DATA_ROOT" \
        --work-root "$WORK/amp" --device "$DEVICE" $AMP_ARGS \
        --eval-args "$AMP_EVAL"
}
readme_run() {  # run name (readme_results.py --runs)
    x "$PY" benchmarks/experiments/readme_results.py --runs "$1" --data-root \
        "$DATA_ROOT" --work-root "$WORK/readme" --device "$DEVICE" \
        ${README_ARGS} --eval-args "$README_EVAL"
}
step_c0() { readme_run c0; }
step_c6() { readme_run plus; }
training() {  # prior|vqvae, then bench_training.py flags
    x "$PY" benchmarks/speed/bench_training.py "$@" --device "$DEVICE" $BQ
}
step_bench_sampling() {
    x "$PY" benchmarks/speed/bench_sampling.py --device "$DEVICE" $SQ
}
step_bench_prior_c0() { training prior -c 0; }
# fp32 convolutions run as TF32 on tensor cores: the H100's TF32 peak
step_bench_prior_c0_fp32() { training prior -c 0 --no-amp --peak-tflops 494.5; }
step_bench_vqvae_c0() { training vqvae -c 0; }
step_bench_vqvae_c0_fp32() { training vqvae -c 0 --no-amp; }
step_bench_prior_c4() { training prior -c 4; }
step_bench_vqvae_c4() { training vqvae -c 4; }
step_bench_nn() {
    x "$PY" benchmarks/speed/bench_nearest_neighbor.py --device "$DEVICE" $NQ
}
step_bench_prior_c4_cl() { training prior -c 4 --channels-last; }
step_bench_vqvae_c4_cl() { training vqvae -c 4 --channels-last; }
step_bench_prior_c4_compile() { training prior -c 4 --compile; }
step_bench_vqvae_c4_compile() { training vqvae -c 4 --compile; }
step_lmdb() {
    x "$PY" benchmarks/speed/bench_lmdb.py --folder \
        "$DATA_ROOT/celebA/img_align_celeba" $LMDB_ARGS
}
export -f x step_torchrun step_amp readme_run step_c0 step_c6 training \
    step_bench_sampling step_bench_prior_c0 step_bench_prior_c0_fp32 \
    step_bench_vqvae_c0 step_bench_vqvae_c0_fp32 step_bench_prior_c4 \
    step_bench_vqvae_c4 step_bench_nn step_bench_prior_c4_cl \
    step_bench_vqvae_c4_cl step_bench_prior_c4_compile \
    step_bench_vqvae_c4_compile step_lmdb

# ------------------------------------------------------------ env (always)
step_env() {
    echo "host: $(hostname); date: $(date -Is); mode: $([ $DRY = 1 ] &&
        echo 'dry run on the CPU' || echo "device $DEVICE")"
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
            --format=csv 2>&1
    else
        echo 'nvidia-smi: not found'
    fi
    # lmdb: from a carried wheel where the machine lacks it
    if ! "$PY" -c 'import lmdb' 2>/dev/null; then
        local whl
        whl=$(ls .devdata/whl/lmdb-*.whl .whl/lmdb-*.whl 2>/dev/null | head -1)
        if [ -n "$whl" ] && "$PY" -m pip install -q --no-index --no-deps \
                --no-compile --no-cache-dir --target "$WORK/site" "$whl"; then
            export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
            echo "lmdb: installed from $whl into $WORK/site"
        else
            echo "lmdb: not importable and no usable wheel in .devdata/whl" \
                 "or .whl: the LMDB step is skipped"
        fi
    fi
    "$PY" - <<'EOF'
import sys
import torch
print('python', sys.version.split()[0], sys.executable)
print('torch', torch.__version__, '| CUDA', torch.version.cuda,
      '| cuda available:', torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print('gpu:', p.name, f'{p.total_memory / 2**30:.1f} GiB,',
          p.multi_processor_count, 'SMs')
    print('nccl', '.'.join(map(str, torch.cuda.nccl.version())))
try:
    import lmdb
    print('lmdb', lmdb.__version__)
except ImportError as e:
    print('lmdb: not importable:', e)
EOF
    # MNIST as carried (.gz only): unpacked into WORK/data, which becomes the
    # data root (the rest of DATA_ROOT linked there), so .devdata stays small
    local raw="$DATA_ROOT/mnist/MNIST/raw" f d
    if [ ! -s "$raw/t10k-images-idx3-ubyte" ] && [ -f "$raw/t10k-images-idx3-ubyte.gz" ]; then
        mkdir -p "$WORK/data/mnist/MNIST/raw" || return
        for f in "$raw"/*.gz; do
            gunzip -c "$f" > "$WORK/data/mnist/MNIST/raw/$(basename "$f" .gz)" ||
                return
        done
        for d in "$DATA_ROOT"/*; do
            [ "$(basename "$d")" = mnist ] || ln -s "$(cd "$d" && pwd)" "$WORK/data/"
        done
        echo "MNIST: $raw/*.gz unpacked into $WORK/data, the data root from here on"
        DATA_ROOT=$WORK/data
        raw="$DATA_ROOT/mnist/MNIST/raw"
    fi
    if [ -s "$raw/t10k-images-idx3-ubyte" ]; then
        echo "MNIST: $raw ($(du -sh "$raw" | cut -f1))"
    else
        echo "MNIST: not in $raw: the MNIST steps will fail (DATA_ROOT=...)"
    fi
}

# ------------------------------------------------------------ bookkeeping
duration() { local s=$1; [ "$s" -ge 60 ] && echo "$((s / 60)) min $((s % 60)) s" ||
             echo "$s s"; }

lines() { tr '\r' '\n' < "$1"; }  # progress bars (\r) apart from the lines

section() {  # the part of a step's log that goes into all.md
    local name=$1 status=$2 log="$WORK/$1.log"
    [ -f "$log" ] || return 0
    case $name in
    env) echo '```'; cat "$log"; echo '```' ;;
    torchrun)
        echo '```'
        lines "$log" | grep -E '^(\$ |device:|epoch [0-9]+ loss|error)'
        echo '```' ;;
    c0|c6)
        sed -n '/^machine:/,$p' "$log"
        echo; echo "main.py's lines per epoch and stage:"; echo; echo '```'
        lines "$log" | grep -E '^(epoch [0-9]+ loss|stage [0-9] \(|error)' |
            cut -c1-300
        echo '```' ;;
    lmdb) echo '```'; sed -n '/^device:/,$p' "$log"; echo '```' ;;
    *) sed -n '/^## /,$p' "$log" | sed 's/^## /### /' |
           grep -v -E '^(real|user|sys)[[:space:]]' ;;
    esac
    if [ "$status" != ok ]; then
        echo; echo 'Last lines of the log:'; echo; echo '```'
        lines "$log" | grep -v '^[[:space:]]*$' | tail -n 25 | cut -c1-300
        echo '```'
    fi
}

summarize() {
    {
        echo "# benchmarks/tools/run_gpu.sh$([ $DRY = 1 ] && echo ' --dry-run')"
        echo
        [ $DRY = 1 ] && echo '**Dry run on the CPU: tiny subsets, 1 epoch,' \
            'a few batches. It checks the script; its numbers mean' \
            'nothing.**' && echo
        echo "- machine: $(sed -n '/^\(python\|torch\|gpu:\|nccl\) /p' \
            "$WORK/env.log" 2>/dev/null | paste -sd ';' - | sed 's/;/; /g')"
        echo "- device: $DEVICE; data root: $DATA_ROOT; work dir: $WORK"
        echo "- steps: $STEPS; budget $BUDGET_S s, used" \
             "$(duration $((SECONDS - START)))"
        echo "- repeat: \`$REPEAT\`"
        echo
        echo '| step | what | status | wall time |'
        echo '|---|---|---|---|'
        local name status secs
        while IFS=$'\t' read -r name status secs; do
            echo "| $name | ${WHAT[$name]:-} | $status | $(duration "$secs") |"
        done < "$WORK/steps.tsv"
        while IFS=$'\t' read -r name status secs; do
            echo; echo "## $name: $status"; echo
            section "$name" "$status"
        done < "$WORK/steps.tsv"
    } > "$OUT/all.md.tmp" && mv "$OUT/all.md.tmp" "$OUT/all.md"
    sed -n '1,/^MNIST/p' "$WORK/env.log" > "$OUT/gpu.txt" 2>/dev/null
    (cd "$WORK" && find . -type f \( -name '*.log' -o -name '*.json' \
        -o -name '*.jsonl' -o -name '*.jpg' -o -name '*.png' \
        -o -name '*.tsv' -o -name 'command.txt' \) -not -path './site/*' \
        -not -path './data/*' |
        sort | tar -czf "$OUT/logs.tar.gz.tmp" -T - ) &&
        mv "$OUT/logs.tar.gz.tmp" "$OUT/logs.tar.gz"
}

record() {  # name, status, seconds
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$WORK/steps.tsv"
    echo "   $2 ($(duration "$3"))$([ -f "$WORK/$1.log" ] &&
        echo " -> $WORK/$1.log")"
    summarize
}

run_step() {  # name: runs step_<name> under the budget
    local name=$1 min=${MIN_S[$1]:-20} left=$((DEADLINE - SECONDS)) t0=$SECONDS
    local rc status
    if [ $left -lt "$min" ]; then
        echo "== $name: skipped, $left s of the budget left (needs $min s)"
        record "$name" "skipped: $left s of the budget left, needs $min s" 0
        return
    fi
    if [ "$name" = lmdb ] && ! { [ -d "$DATA_ROOT/celebA/img_align_celeba" ] &&
            "$PY" -c 'import lmdb' 2>/dev/null; }; then
        echo "== $name: skipped (no $DATA_ROOT/celebA/img_align_celeba or no lmdb)"
        record "$name" "skipped: no $DATA_ROOT/celebA/img_align_celeba or lmdb not importable" 0
        return
    fi
    echo "== $name: ${WHAT[$name]} (at most $left s)"
    timeout -k 30 "$left" bash -c "step_$name" > "$WORK/$name.log" 2>&1
    rc=$?
    case $rc in
    0) status=ok ;;
    124|137) status="stopped at the end of the budget (exit $rc)" ;;
    *) status="failed (exit $rc)" ;;
    esac
    record "$name" "$status" $((SECONDS - t0))
}

START=$SECONDS
REPEAT="bash benchmarks/tools/run_gpu.sh$([ $DRY = 1 ] && echo ' --dry-run') $OUT"
[ "$STEPS" != "$DEFAULT_STEPS" ] && REPEAT="STEPS='$STEPS' $REPEAT"
echo "run_gpu.sh: $([ $DRY = 1 ] && echo 'dry run, ')device $DEVICE, data $DATA_ROOT, budget $BUDGET_S s"
echo "   OUT $OUT, WORK $WORK"
echo "== env"
step_env > "$WORK/env.log" 2>&1
rc=$?  # (step_env ran in this shell: its PYTHONPATH for lmdb holds)
record env "$([ $rc = 0 ] && echo ok || echo "failed (exit $rc)")" \
    $((SECONDS - START))

for s in $STEPS; do
    case $s in
    bench) names=$BENCH_CORE ;;
    bench_extra)
        names=$BENCH_EXTRA
        # torch.compile on a CPU needs minutes and a compiler: not in a dry run
        if [ "${COMPILE:-1}" = 0 ] || [ $DRY = 1 ]; then
            names=$(echo $names | tr ' ' '\n' | grep -v compile); fi ;;
    *) names=$s ;;
    esac
    for name in $names; do
        if ! declare -F "step_$name" > /dev/null; then
            echo "== $name: no such step"
            record "$name" 'failed: no such step' 0
            continue
        fi
        run_step "$name"
    done
done
echo
echo "all.md: $OUT/all.md"
sed -n '/^| step |/,/^$/p' "$OUT/all.md"
# exit 1 when a step failed (skipped or stopped by the budget: 0)
! cut -f2 "$WORK/steps.tsv" | grep -q '^failed'
