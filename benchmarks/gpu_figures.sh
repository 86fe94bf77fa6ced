#!/usr/bin/env bash
# The README's GPU figures ("Throughput and GPUs"), measured on a machine with a CUDA GPU.
#
#   bash benchmarks/gpu_figures.sh [OUTDIR]      # from the repository root, the project importable
#
# Writes into OUTDIR (default: gpu-figures/): gpu.txt (the card, the CUDA device tests), bench.txt
# (every update case and the sampling cases, learners on the GPU, each acting where it says), acting.txt
# (the sampling cases again with every learner acting on the other device: is each choice the faster
# one?), bench_cpu.txt (the update cases on this machine's CPU, one thread: the GPU's speed-up) and
# estimate_paper.txt (`harness estimate suites/paper.yaml --device cuda`; the CPU bench runs beside it, on
# another core). Each file is written as soon as its step ends. DEVICE=cpu runs the same steps on the CPU
# (to try the script), SUITE another suite, BENCH_SIZES bench's size options. Nothing is written outside
# OUTDIR but the estimate's cache.
set -uo pipefail
out=${1:-gpu-figures}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
device=${DEVICE:-cuda}
suite=${SUITE:-suites/paper.yaml}
read -r -a sizes <<< "${BENCH_SIZES:-}"  # e.g. "--tasks 2 --episode-steps 5" to try the script quickly
sampling=gru,mlp,trmrl,trmrl_sliding,pearl
updates=update_rl2,update_trmrl,pearl_iteration,maml_trpo

step() { echo "=== $(date -u +%H:%M:%S) $*" >&2; }

step "the card and the CUDA device tests"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  "$python" -m pytest -q -p no:cacheprovider tests/test_device.py 2>&1 | tail -3; } > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt" >&2

step "bench on $device, each learner acting where it says"
"$python" -m harness bench "${sizes[@]}" --device "$device" --cases "$sampling,trmrl_cache,$updates" > "$out/bench.txt"
step "bench on $device, acting moved: RL², MAML and PEARL on the device; TrMRL on the CPU"
{ "$python" -m harness bench "${sizes[@]}" --device "$device" --acting device --cases gru,mlp,pearl
  "$python" -m harness bench "${sizes[@]}" --device "$device" --acting cpu --cases trmrl,trmrl_sliding; } > "$out/acting.txt"
step "estimate $suite on $device, and beside it the bench of the updates on one CPU core"
"$python" -m harness bench "${sizes[@]}" --device cpu --cases "$updates" > "$out/bench_cpu.txt" 2> "$out/bench_cpu.err" &
"$python" -m harness estimate "$suite" --device "$device" --workers "${WORKERS:-16}" \
    > "$out/estimate_paper.txt"
wait
step "done"
