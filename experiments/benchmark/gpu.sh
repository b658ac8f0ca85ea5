#!/usr/bin/env bash
# Issue 6's GPU check as one command, for a session that is lent a GPU machine. Its image has torch, timm,
# transformers, einops, lightning and torchmetrics; no hydra, av or wandb, which these parts do not import.
#     bash experiments/benchmark/gpu.sh "$OUT"    # then copy $OUT's files into experiments/benchmark/results/
# The fast-path and benchmark tests on the GPU, then every suite of `make bench` (on an H200
# about 5 minutes, 3 min 47 s of it the suites; the results are written after each measurement, so a cut-off run still returns them, and
# the committed file's rows of the suites it did not reach are kept, with their dates).
set -uo pipefail
out=${1:?usage: bash experiments/benchmark/gpu.sh OUT_DIR}
cd "$(dirname "$0")/../.."
export PYTHONPATH=src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m pytest -q --noconftest -p no:cacheprovider -m "not slow" tests/test_fast_path.py tests/test_benchmark.py \
    2>&1 | tee "$out/gpu_tests.txt"
cp experiments/benchmark/results/nvidia_*.json "$out"/ 2>/dev/null
python3 -m vivit.benchmark --out "$out" --plot 2>&1 | tee "$out/bench.log"
