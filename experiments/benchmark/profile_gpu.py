"""Where Model 1's GPU training step spends its time, by kernel kind, and what Inductor's max-autotune changes.

ViViT-B/16x2 at 32×224², training batch 16, bf16 autocast, fused AdamW, compiled: the setting of `make bench`.
For a session lent a GPU machine (the image has torch, einops, timm and transformers)::

    PYTHONPATH=src python experiments/benchmark/profile_gpu.py profile OUT    # kernel time by kind
    PYTHONPATH=src python experiments/benchmark/profile_gpu.py autotune OUT   # compile(mode=max-autotune-...)

On the H200 (2026-11-27) the profile is `results/nvidia_h200_profile.json`; max-autotune had not compiled
after 5 minutes (experiments/benchmark/README.md). Each part writes ``OUT/profile_<part>.json``.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from vivit.benchmark import SIZES, Bench, Entry, Result, Setting, build_vivit, seconds_per_call

KINDS = (  # the first match names a kernel's kind
    ("attention", ("sdpa", "fmha", "flash", "attention")),
    ("optimiser", ("adam", "multi_tensor")),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "cublas", "sm90")),
    ("fused by Inductor", ("triton",)),
)


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    return next((kind for kind, keys in KINDS if any(key in name for key in keys)), "other")


def main(part: str, out: Path) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bench = Bench(device, None)
    s = Setting("b", 32, 224, train_batch=16, infer_batch=32) if device.type == "cuda" else Setting("ti", 4, 32, 2, 2)
    build = partial(build_vivit, "spatiotemporal", "tubelet", s)
    report: dict = {"device": bench.name, "torch": torch.__version__, "setting": str(s)}
    if part == "profile":
        result = Result("ours compiled", s.frames)
        _, step = bench.prepare(Entry("ours", build, compile=True, infer=False), s, result, alone=True)["train"]
        seconds = seconds_per_call(step, 10, 0, device)
        steps = 3
        with profile(activities=[ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
            torch.cuda.synchronize(device) if device.type == "cuda" else None
        by_kind, by_kernel = defaultdict(float), defaultdict(float)
        for event in prof.key_averages():
            ms = event.self_device_time_total / 1e3 / steps
            if ms > 0:
                by_kind[kind_of(event.key)] += ms
                by_kernel[event.key] += ms
        n = 1 + (s.frames // 2) * (s.resolution // 16) ** 2
        dim, depth, _ = SIZES[s.size]
        attention_flops = depth * 3 * 4 * s.train_batch * n * n * dim  # fwd: 2 products; bwd about 2 × fwd
        report.update(
            step_ms=round(seconds * 1e3, 1),
            clips_s=round(s.train_batch / seconds, 1),
            kernel_ms_per_step={k: round(v, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            attention_tflops=round(attention_flops / max(by_kind["attention"] / 1e3, 1e-9) / 1e12, 1),
            top_kernels={k[:120]: round(v, 2) for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:25]},
        )
    else:
        for mode in ("default", "max-autotune-no-cudagraphs"):
            torch._dynamo.reset()
            with device:
                model = build()
            model.compile(mode=None if mode == "default" else mode)
            step = bench.train_step(model, s, True, nullcontext)
            for _ in range(3):
                step()
            seconds = seconds_per_call(step, 10, 0, device)
            report[mode] = round(s.train_batch / seconds, 1)
            print(mode, report[mode], "clips/s", flush=True)
            (out / f"profile_{part}.json").write_text(json.dumps(report, indent=1))  # each mode as it ends
            del model, step
    print(json.dumps(report, indent=1))
    (out / f"profile_{part}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
