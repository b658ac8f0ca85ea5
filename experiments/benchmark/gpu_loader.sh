#!/usr/bin/env bash
# Issue 16's GPU check as one command (the input pipeline beside the model), for a session lent a GPU machine.
# The GPU image has torch, lightning, timm and transformers but no hydra, PyAV or scikit-video: they travel as
# wheels in .whl/ (pip download --no-deps av==18.1.0 hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3
# scikit-video==1.1.11 for cp312 manylinux; the device tool's README says how) and are installed under /tmp/site.
#     bash experiments/benchmark/gpu_loader.sh "$OUT"    # then copy $OUT's results into experiments/benchmark/results/
# In order, each step cut off at its own limit so that a hang costs only that step: end-to-end training on
# real-content files against synthetic input (end_to_end.py), the loader suite (`--suites loader`: photometric
# ops on the GPU, the real-video loader with one worker per core), `src/train.py trainer=gpu` as a user runs it,
# then the GPU tests of the input pipeline. About 6 minutes on an H200.
set -uo pipefail
out=${1:?usage: bash experiments/benchmark/gpu_loader.sh OUT_DIR}
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu_loader.log"
nproc | tee -a "$out/gpu_loader.log"
cp experiments/benchmark/results/nvidia_h200.json "$out"/ 2>/dev/null  # the other suites' rows are kept
timeout 180 python3 experiments/benchmark/end_to_end.py "$out" --batches 120 --results "$out" 2>&1 | grep -v -i warn \
    | tee -a "$out/gpu_loader.log"
timeout 200 python3 -m vivit.benchmark --suites loader --loader-repeats 3 --out "$out" 2>&1 | tee -a "$out/gpu_loader.log"
timeout 90 python3 src/train.py trainer=gpu debug=limit hydra.run.dir=/tmp/gpu_run 2>&1 | tail -25 | tee -a "$out/gpu_loader.log"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_fast_path.py tests/test_input_pipeline.py \
    tests/test_benchmark.py 2>&1 | tail -15 | tee -a "$out/gpu_loader.log"
