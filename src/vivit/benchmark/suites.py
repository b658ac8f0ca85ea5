"""The benchmark's suites, in the order they run (:data:`SUITES`; ``--suites`` picks some): each measures its rows
on a :class:`~vivit.benchmark.bench.Bench` at one setting, and may add to its ``meta`` (the peers' ratios, say)."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from vivit.benchmark.bench import Bench, Entry, seconds_per_call
from vivit.benchmark.models import SIZES, TOKENISERS, VARIANTS, Setting, TimmModel1, TransformersModel1, build_vivit
from vivit.benchmark.report import Result, ratio
from vivit.models.layers import attention_priority


def measure_peers(bench: Bench, s: Setting, args: argparse.Namespace) -> None:
    """Model 1 against its peers: ours (eager and compiled), timm blocks and transformers, and the ratios."""
    gpu = bench.device.type == "cuda"
    model_1 = partial(build_vivit, "spatiotemporal", "tubelet", s)
    name = "ours: spatiotemporal/tubelet"
    entries = [Entry(name, model_1), Entry(name, model_1, compile=True)]
    if gpu:  # cuDNN's attention first (Hopper kernels), then flash
        entries.append(Entry(name, model_1, compile=True, attention=["cudnn", "flash", "efficient", "math"]))
    entries += [
        Entry("timm blocks: Model 1", partial(TimmModel1, s), compile=True),
        Entry("transformers: ViViT (sdpa)", partial(TransformersModel1, s, "sdpa")),
    ]
    ours, *compiled, timm_, hf = bench.side_by_side(s, entries, args.rounds)
    if gpu:
        bench.measure("transformers: ViViT (eager attention)", partial(TransformersModel1, s, "eager"), s)
    compiled = max(compiled, key=lambda r: r.train_clips_s or 0)
    fastest = max((ours, compiled), key=lambda r: r.train_clips_s or 0)
    bench.meta["ratios"] = {
        "train vs transformers": ratio(fastest.train_clips_s, hf.train_clips_s),
        "train vs timm blocks (compiled)": ratio(fastest.train_clips_s, timm_.train_clips_s),
        "inference vs transformers": ratio(max(ours.infer_clips_s or 0, compiled.infer_clips_s or 0), hf.infer_clips_s),
    }
    if args.rounds > 1:  # the spread: the same ratio in each round
        rounds = zip(fastest.notes.get("train rounds", []), hf.notes.get("train rounds", []))
        bench.meta["ratios"]["train vs transformers, per round"] = [ratio(a, b) for a, b in rounds]


def measure_variants(bench: Bench, s: Setting, args: argparse.Namespace) -> None:
    """Every variant × tokeniser, eager; on GPU after the peers, Model 2 on Model 1's fastest compiled path.
    Model 4 at a size with an odd number of heads (ViViT-Ti) is skipped, with a note in its row."""
    heads = SIZES[s.size][2]
    for variant in VARIANTS:
        for tokeniser in TOKENISERS:
            name = f"ours: {variant}/{tokeniser}"
            if variant == "factorised_dot_product" and heads % 2:
                skipped = f"Model 4 splits its heads between space and time; ViViT-{s.size.upper()} has {heads}"
                bench.record(Result(name, s.frames, notes={"skipped": skipped}, suite=bench.suite))
                continue
            bench.measure(name, partial(build_vivit, variant, tokeniser, s), s)
    model_1 = [r for r in bench.results if r.suite == "peers" and r.notes["compile"] and r.name.startswith("ours")]
    if bench.device.type == "cuda" and model_1:
        compiled = max(model_1, key=lambda r: r.train_clips_s or 0)
        build = partial(build_vivit, "factorised_encoder", "tubelet", s)
        attention = compiled.notes["attention"]
        fe = bench.measure("ours: factorised_encoder/tubelet", build, s, compile=True, infer=False, attention=attention)
        bench.meta["ratios"]["factorised encoder vs Model 1, training (compiled)"] = ratio(
            fe.train_clips_s, compiled.train_clips_s
        )


def measure_long(bench: Bench, s: Setting, args: argparse.Namespace) -> None:
    """ViViT-L/16x2 Model 1 at 128 frames, 224², with and without activation checkpointing (GPU)."""
    sl = Setting("l", 128, 224, train_batch=2, infer_batch=2, steps=3, warmup=1)
    for checkpointing in (True, False):
        build = partial(build_vivit, "spatiotemporal", "tubelet", sl, activation_checkpointing=checkpointing)
        name = "long clip: ViViT-L/16x2 Model 1"
        bench.measure(name, build, sl, infer=False, activation_checkpointing=checkpointing)


def measure_attention(bench: Bench, s: Setting, args: argparse.Namespace) -> None:
    """Each SDPA backend alone, forward + backward, at Model 1's shape (GPU)."""
    n = 1 + (s.frames // s.patch[0]) * (s.resolution // s.patch[1]) ** 2
    dim, _, heads = SIZES[s.size]
    shape = (s.train_batch, heads, n, dim // heads)
    q, k, v = (torch.randn(shape, device=bench.device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    flops = 3 * 4 * s.train_batch * heads * n * n * (dim // heads)  # fwd: 2 matmuls × 2; bwd ≈ 2 × fwd
    timings = {}
    for backend in ("cudnn", "flash", "efficient"):
        try:
            with attention_priority([backend])():
                call = lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()  # noqa: E731
                timings[backend] = round(flops / seconds_per_call(call, 10, 3, bench.device) / 1e12, 1)
        except RuntimeError as error:
            timings[backend] = f"unavailable: {str(error).splitlines()[0][:80]}"
    bench.meta["attention_tflops_fwd_bwd"] = {"shape": list(shape), **timings}
    print(f"SDPA fwd+bwd TFLOP/s at {bench.meta['attention_tflops_fwd_bwd']}")


def measure_frames(bench: Bench, s: Setting, args: argparse.Namespace) -> None:
    """Time and memory against frames, Models 1 and 2, one clip per step."""
    for frames in args.sweep_frames or ([8, 16, 32, 64, 128] if bench.device.type == "cuda" else [8, 16, 32]):
        sf = Setting(s.size, frames, s.resolution, train_batch=1, infer_batch=1, steps=3, warmup=1)
        for variant in ("spatiotemporal", "factorised_encoder"):
            bench.measure(f"frames sweep: {variant}", partial(build_vivit, variant, "tubelet", sf), sf, infer=False)


def measure_loader(bench: Bench, s: Setting, args: argparse.Namespace) -> None:
    """The input pipeline on real video (:mod:`vivit.data.loader_benchmark`; needs PyAV and Lightning) and, on a
    GPU, the photometric ops and normalisation of a training batch there (torchvision only)."""
    loader: dict = {}
    if bench.device.type == "cuda":
        loader["device_photometric"] = device_photometric(bench.device)
        print(f"loader: photometric ops on {bench.name}: {loader['device_photometric']}", flush=True)
    try:
        from vivit.data import loader_benchmark
    except ImportError as error:  # the GPU image has no PyAV
        print(f"loader: real video skipped, {error}")
    else:
        results = args.out or Path("experiments/benchmark/results")
        loader.update(loader_benchmark.measure(args.loader_repeats, args.loader_workers, args.loader_batches, results))
    bench.meta["loader"] = loader


def device_photometric(device: torch.device, batch: int = 16, frames: int = 32, size: int = 224) -> dict:
    """Milliseconds per batch of ``batch`` uint8 clips for ``finish_clips`` on ``device``: colour jitter (p = 0.8)
    with and without RandAugment (2 ops, level 15), and normalisation alone (evaluation)."""
    from vivit.data.photometric import Photometric, finish_clips

    torch.manual_seed(0)
    video = torch.randint(0, 256, (batch, 3, frames, size, size), dtype=torch.uint8, device=device)
    out = {}
    for name, photometric in (
        ("colour jitter", Photometric(0.8)),
        ("colour jitter + RandAugment", Photometric(0.8, randaugment_layers=2, randaugment_magnitude=15)),
        ("normalisation only", Photometric()),
    ):
        params = [photometric.draw(size, size) if photometric else None for _ in range(batch)]
        call = partial(finish_clips, video, params, photometric, (0.5,) * 3, (0.5,) * 3)
        seconds = seconds_per_call(call, steps=5, warmup=2, device=device)
        out[name] = {"ms_per_batch": round(1000 * seconds, 2), "ms_per_clip": round(1000 * seconds / batch, 3)}
    return {"batch": batch, "frames": frames, "size": size, **out}


SUITES = {  # in the order they run; the frames sweep, the least telling, last
    "peers": measure_peers,
    "variants": measure_variants,
    "long": measure_long,
    "attention": measure_attention,
    "loader": measure_loader,
    "frames": measure_frames,
}
GPU_SUITES = {"long", "attention"}
