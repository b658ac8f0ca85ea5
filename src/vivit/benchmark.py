"""`make bench`: speed and size of every ViViT variant, side by side with its peers, in one process.

For each variant × tokeniser at one size it measures parameters, forward GMACs (the paper's unit),
training throughput (a full step: bf16 autocast on GPU, loss, backward, optimiser), inference
throughput, peak memory and, on GPU, the model-FLOPs utilisation of training against the device's
measured bf16 matmul peak. In the same run it measures transformers' ``VivitForVideoClassification``
and a Model 1 assembled from timm ViT blocks (compiled), and prints our ratios to them; on CPU the
peers take turns (``--rounds``), so that a slow spell of the machine does not fall on one of them. A frames
sweep (Models 1 and 2) and a long-clip run (ViViT-L, activation checkpointing) complete it.

Imports only torch, einops, timm and transformers, so it runs on a bare GPU image::

    PYTHONPATH=src python -m vivit.benchmark --out experiments/benchmark/results

Results go to ``<out>/<device>.json`` (written after every measurement) and ``<out>/<device>.md``;
``--plot`` also draws the frames sweep (needs matplotlib). At another setting than the device's default
(``--size``, ``--frames``), they go to ``<out>/<device>_<size>_<frames>f.*`` instead, so a quick run does not
replace the committed results; ``--name`` chooses the file. A run of some suites keeps the other suites' rows
from the file's earlier results at the same setting, each suite dated (``meta["measured"]``), so re-running
one suite, or a run cut off part way, loses nothing.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vivit.models import (
    FactorisedDotProduct,
    FactorisedEncoder,
    FactorisedSelfAttention,
    SpatioTemporal,
    TubeletTokeniser,
    UniformFrameTokeniser,
    count_macs,
    count_params,
)
from vivit.models.layers import attention_priority

SIZES = {  # ViT sizes (embed_dim, depth, num_heads) of the paper's Table 2
    "ti": (192, 12, 3),
    "s": (384, 12, 6),
    "b": (768, 12, 12),
    "l": (1024, 24, 16),
}
VARIANTS = {
    "spatiotemporal": partial(SpatioTemporal, pool="cls"),
    "factorised_encoder": partial(FactorisedEncoder, pool="cls", temporal_depth=4),
    "factorised_self_attention": FactorisedSelfAttention,
    "factorised_dot_product": FactorisedDotProduct,
}
TOKENISERS = {"tubelet": TubeletTokeniser, "uniform_frame": UniformFrameTokeniser}
NUM_CLASSES = 400
SUITE_META = {
    "ratios": "peers",
    "attention_tflops_fwd_bwd": "attention",
    "loader": "loader",
}  # the suite that writes each key


@dataclass
class Setting:
    """One benchmark configuration: the clip, the model size and the batch sizes."""

    size: str
    frames: int
    resolution: int
    train_batch: int
    infer_batch: int
    patch: tuple[int, int, int] = (2, 16, 16)
    steps: int = 10
    warmup: int = 3


@dataclass
class Entry:
    """One model to measure: its builder, and how it runs (see ``Bench.measure``)."""

    name: str
    build: Callable[[], nn.Module]
    compile: bool = False
    attention: list[str] | None = None
    infer: bool = True
    train: bool = True
    notes: dict = field(default_factory=dict)


@dataclass
class Result:
    name: str
    frames: int
    params_m: float | None = None
    gmacs: float | None = None  # forward multiply-accumulates per clip, 10^9
    train_clips_s: float | None = None
    infer_clips_s: float | None = None
    train_peak_gib: float | None = None
    train_mfu: float | None = None
    error: str | None = None
    notes: dict = field(default_factory=dict)
    suite: str | None = None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def warm_up(mode: Callable[[], object], call: Callable[[], object], calls: int) -> None:
    """Compilation, kernel choice, allocator caches: ``calls`` untimed calls in ``mode`` (train or eval)."""
    mode()
    for _ in range(calls):
        call()


def matmul_peak_flops(device: torch.device) -> float | None:
    """Measured bf16 matmul FLOP/s (8192³ products), the denominator of MFU; None on CPU."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    seconds = seconds_per_call(lambda: a @ b, steps=20, warmup=5, device=device)
    return 2 * 8192**3 / seconds


def build_vivit(variant: str, tokeniser: str, s: Setting, **kwargs) -> nn.Module:
    dim, depth, heads = SIZES[s.size]
    tok = TOKENISERS[tokeniser](dim, (s.frames, s.resolution, s.resolution), s.patch)
    return VARIANTS[variant](tok, NUM_CLASSES, embed_dim=dim, depth=depth, num_heads=heads, **kwargs)


class TimmModel1(nn.Module):
    """Model 1 assembled from timm's ViT blocks: the usual way to build ViViT on timm."""

    def __init__(self, s: Setting) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        dim, depth, heads = SIZES[s.size]
        n = (s.frames // s.patch[0]) * (s.resolution // s.patch[1]) * (s.resolution // s.patch[2])
        self.patch_embed = nn.Conv3d(3, dim, s.patch, s.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, qkv_bias=True) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, video: Tensor) -> Tensor:  # (B, C, T, H, W) -> (B, K)
        x = self.patch_embed(video).flatten(2).transpose(1, 2)  # (B, n, D)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class TransformersModel1(nn.Module):
    """transformers' VivitForVideoClassification at the same size; takes its own (B, T, C, H, W)."""

    channels_first = False

    def __init__(self, s: Setting, attn_implementation: str) -> None:
        super().__init__()
        from transformers import VivitConfig, VivitForVideoClassification

        dim, depth, heads = SIZES[s.size]
        config = VivitConfig(
            image_size=s.resolution,
            num_frames=s.frames,
            tubelet_size=list(s.patch),
            hidden_size=dim,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            intermediate_size=4 * dim,
            num_labels=NUM_CLASSES,
            attn_implementation=attn_implementation,
        )
        self.model = VivitForVideoClassification(config)

    def forward(self, video: Tensor) -> Tensor:
        return self.model(pixel_values=video).logits


class Bench:
    """Runs measurements on one device and keeps the results (JSON after each measurement)."""

    def __init__(self, device: torch.device, out: Path | None, stem: str | None = None) -> None:
        self.device = device
        self.dtype = torch.bfloat16 if device.type == "cuda" else None  # autocast on GPU only
        self.name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
        self.stem = stem or slug(self.name)  # the results' file name: <out>/<stem>.json and .md
        self.peak = matmul_peak_flops(device)
        self.results: list[Result] = []
        self.out = out
        self.suite: str | None = None  # the suite being measured
        self.meta = {
            "device": self.name,
            "torch": torch.__version__,
            "matmul_peak_tflops": self.peak and round(self.peak / 1e12, 1),
            "threads": torch.get_num_threads(),
            "measured": {},  # suite: date and torch version
        }

    @contextmanager
    def measuring(self, suite: str) -> Iterator[None]:
        """Tags the results measured inside with ``suite``, dated."""
        self.suite = suite
        self.meta["measured"][suite] = f"{datetime.date.today().isoformat()}, torch {torch.__version__}"
        try:
            yield
        finally:
            self.suite = None

    def clip(self, s: Setting, batch: int, channels_first: bool = True) -> Tensor:
        shape = (batch, 3, s.frames, s.resolution, s.resolution)
        video = torch.randn(shape, device=self.device)
        return video if channels_first else video.transpose(1, 2).contiguous()  # (B, T, C, H, W)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def measure(
        self,
        name: str,
        build: Callable[[], nn.Module],
        s: Setting,
        compile: bool = False,
        infer: bool = True,
        train: bool = True,
        attention: list[str] | None = None,
        **notes,
    ) -> Result:
        """One model alone. ``attention``: SDPA backends in priority order (cudnn, flash, efficient, math),
        else torch's choice."""
        (result,) = self.side_by_side(s, [Entry(name, build, compile, attention, infer, train, notes)])
        return result

    def side_by_side(self, s: Setting, entries: list[Entry], rounds: int = 1) -> list[Result]:
        """Measures ``entries`` taking turns: each is built, compiled and warmed up, then in each of ``rounds``
        rounds each entry in turn runs ``s.steps`` timed training steps and inference calls. A figure is the
        median over rounds. Turns spread the slow spells of a shared machine (other tenants, clock changes)
        over all entries alike; on this project's 2-thread CPU they move a single figure by ±10%. Peak memory
        is measured only for an entry that is alone on the device."""
        alone = len(entries) == 1
        if rounds == 1 and len(entries) > 1:  # no turns: one at a time, each alone on the device
            return [result for entry in entries for result in self.side_by_side(s, [entry])]
        if any(entry.compile for entry in entries):
            torch._dynamo.reset()  # a fresh cache: no recompile limit carried over from earlier models
        results, runs = [], []
        for entry in entries:
            notes = {"compile": entry.compile, "attention": entry.attention}
            result = Result(entry.name, s.frames, notes=notes, suite=self.suite)
            result.notes.update(entry.notes)
            results.append(result)
            with self.failures(result):
                runs.append((result, self.prepare(entry, s, result, alone), {}))  # {kind: seconds per call, by round}
        self.take_turns(runs, rounds, s)
        timings = [(result, taken) for result, _, taken in runs]
        # Free the models and their optimisers. No name may hold a run's calls: a loop over runs would keep the
        # last one's model alive through the next measurement (+0.43 GiB after Model 2 on the H200).
        del runs
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        for result, taken in timings:
            for kind, batch in (("train", s.train_batch), ("infer", s.infer_batch)):
                if kind in taken and not result.error:
                    setattr(result, f"{kind}_clips_s", round(batch / statistics.median(taken[kind]), 2))
                    if rounds > 1:
                        result.notes[f"{kind} rounds"] = [round(batch / t, 2) for t in taken[kind]]
            if self.peak and result.gmacs and result.train_clips_s:  # training ≈ 3 forward passes, 2 FLOPs per MAC
                result.train_mfu = round(6 * result.gmacs * 1e9 * result.train_clips_s / self.peak, 3)
        for result in results:
            self.record(result, save=False)
        self.save()
        return results

    def record(self, result: Result, save: bool = True) -> None:
        """Keeps ``result``, prints it and (``save``) writes the results."""
        self.results.append(result)
        print(format_result(result), flush=True)
        if save:
            self.save()

    def take_turns(self, runs: list[tuple[Result, dict, dict]], rounds: int, s: Setting) -> None:
        """``rounds`` rounds in which each run in turn makes ``s.steps`` timed calls of each kind; the mean
        time of a call is appended to the run's ``{kind: [seconds, ...]}``."""
        for _ in range(rounds):
            for result, calls, taken in runs:
                for kind, (mode, call) in calls.items():
                    if result.error:
                        break
                    with self.failures(result):
                        mode()  # model.train() or model.eval()
                        taken.setdefault(kind, []).append(seconds_per_call(call, s.steps, 0, self.device))

    @contextmanager
    def failures(self, result: Result) -> Iterator[None]:
        """Records a model that does not fit (or cannot be built at this size) as the result's error."""
        try:
            yield
        except torch.OutOfMemoryError:
            result.error = "out of memory"
        except ValueError as error:  # e.g. Model 4 with an odd number of heads (ViViT-Ti)
            result.error = str(error).split(";")[0]

    def prepare(self, entry: Entry, s: Setting, result: Result, alone: bool) -> dict[str, tuple[Callable, Callable]]:
        """Counts the entry's parameters and MACs, builds it on the device and returns its warmed-up timed
        calls, by kind ("train", "infer"), each with the mode it runs in. On GPU, an entry ``alone`` on the
        device gets the peak memory of a training step, taken before the inference clip exists."""
        torch.manual_seed(0)
        with torch.device("meta"):
            meta = entry.build()
        channels_first = getattr(meta, "channels_first", True)
        result.params_m = round(count_params(meta) / 1e6, 2)
        # The FLOP counter runs on meta tensors: no memory, no time.
        clip = (1, 3, s.frames) if channels_first else (1, s.frames, 3)
        result.gmacs = round(count_macs(meta, (*clip, s.resolution, s.resolution)) / 1e9, 1)
        del meta
        with self.device:
            model = entry.build()
        if entry.compile:
            model.compile()
        attention = attention_priority(entry.attention)
        calls = {}
        if entry.train:
            calls["train"] = (model.train, self.train_step(model, s, channels_first, attention))
            warm_up(*calls["train"], s.warmup)
            if alone and self.device.type == "cuda":  # one more step, measured
                torch.cuda.reset_peak_memory_stats(self.device)
                calls["train"][1]()
                result.train_peak_gib = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        if entry.infer:
            calls["infer"] = (model.eval, self.infer_call(model, s, channels_first, attention))
            warm_up(*calls["infer"], s.warmup)
        return calls

    def train_step(self, model: nn.Module, s: Setting, channels_first: bool, attention) -> Callable[[], None]:
        """A full training step: forward (bf16 autocast on GPU), loss, backward, fused AdamW."""
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
        video = self.clip(s, s.train_batch, channels_first)
        labels = torch.randint(NUM_CLASSES, (s.train_batch,), device=self.device)

        def step() -> None:
            with self.autocast(), attention():
                logits = model(video)
            F.cross_entropy(logits.float(), labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    def infer_call(self, model: nn.Module, s: Setting, channels_first: bool, attention) -> Callable[[], None]:
        video = self.clip(s, s.infer_batch, channels_first)

        def forward() -> None:
            with torch.inference_mode(), self.autocast(), attention():
                model(video)

        return forward

    def save(self) -> None:
        """Writes this run's results, and from the device's earlier file at the same setting the rows and meta
        of the suites this run has not measured."""
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / f"{self.stem}.json"
        meta, results = self.meta, self.results
        earlier = json.loads(path.read_text()) if path.exists() else None
        same_setting = earlier and earlier["meta"].get("setting") == json.loads(json.dumps(meta.get("setting")))
        if same_setting:  # (compared as JSON: the file's tuples are lists)
            ran = meta["measured"]
            meta = {key: value for key, value in earlier["meta"].items() if SUITE_META.get(key) not in ran}
            measured = {**earlier["meta"].get("measured", {}), **ran}
            meta.update(self.meta, measured={suite: measured[suite] for suite in SUITES if suite in measured})
            kept = [Result(**row) for row in earlier["results"] if row.get("suite") not in ran]
            results = sorted(kept + results, key=lambda r: list(SUITES).index(r.suite) if r.suite in SUITES else 0)
        path.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1))
        path.with_suffix(".md").write_text(markdown(meta, results))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return platform.processor() or "CPU"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def format_result(r: Result) -> str:
    if r.error or r.notes.get("skipped"):
        return f"{r.name:48s} {r.frames:4d}f  {r.error or 'skipped: ' + r.notes['skipped']}"
    return (
        f"{r.name:48s} {r.frames:4d}f  params {r.params_m}M  {r.gmacs} GMACs  train {r.train_clips_s} clips/s"
        f"  infer {r.infer_clips_s} clips/s  peak {r.train_peak_gib} GiB  MFU {r.train_mfu}"
    )


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def markdown(meta: dict, results: list[Result]) -> str:
    lines = [
        f"# Benchmark on {meta['device']}",
        "",
        f"torch {meta['torch']}; bf16 matmul peak {meta['matmul_peak_tflops']} TFLOP/s; "
        f"{meta['threads']} CPU threads. GMACs: forward multiply-accumulates per clip (the paper's GFLOPs). "
        "Training: clips/s of a full step with fused AdamW; MFU: 6 × MACs × clips/s ÷ matmul peak. "
        "Rows with rounds took turns with each other; their figure is the median of their rounds.",
        "",
        "Measured: " + "; ".join(f"{suite} {when}" for suite, when in meta.get("measured", {}).items()) + ".",
        "",
        "| model | frames | params (M) | GMACs | train clips/s | infer clips/s | train peak GiB | train MFU | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        notes = ", ".join(f"{k}={v}" for k, v in r.notes.items() if v not in (None, False))
        cells = [r.params_m, r.gmacs, r.train_clips_s, r.infer_clips_s, r.train_peak_gib, r.train_mfu]
        row = " | ".join("–" if c is None else str(c) for c in cells)
        lines.append(f"| {r.name} | {r.frames} | {row} | {r.error or notes} |")
    if "loader" in meta:
        lines += ["", loader_markdown(meta["loader"])]
    return "\n".join(lines) + "\n"


def loader_markdown(loader: dict) -> str:
    """The loader suite's tables (:mod:`vivit.data.loader_benchmark`, and :func:`device_photometric` on a GPU)."""
    lines = ["## Input pipeline (`--suites loader`)", ""]
    if device := loader.get("device_photometric"):
        lines += [
            f"Photometric ops and normalisation of a training batch on this GPU ({device['batch']} uint8 clips of "
            f"{device['frames']}×{device['size']}², `data.photometric_on=device`):",
            "",
            "| ops | ms per batch | ms per clip |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name} | {row['ms_per_batch']} | {row['ms_per_clip']} |"
            for name, row in device.items()
            if isinstance(row, dict)
        ]
        lines.append("")
    if "one_core" not in loader:
        return "\n".join(lines) + "\n"
    lines += [
        "One training sample on one core (ms, median of "
        f"{loader['repeats']}); `loader`: every step in the worker (CPU runs); `device`: the photometric ops and "
        "normalisation run batched on the GPU (the default there), so the worker stops after the geometry.",
        "",
        "| file: recipe | open + index | decode | geometry | photometric | normalise | collate (float / uint8) "
        "| ms (loader) | clips/s per core (loader) | ms (device) | clips/s per core (device) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in loader["one_core"].items():
        s = row["stages_ms"]
        collate = f"{s['collate']} / {s.get('collate_uint8', '–')}"
        cells = [s["open_index"], s["decode"], s["geometry"], s["photometric"], s["normalise"], collate]
        cells += [row["ms_loader"], row["clips_s_loader"], row["ms_device"], row["clips_s_device"]]
        lines.append(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "| file | test views per video | ms per video (all views) |", "|---|---|---|"]
    for name, row in loader["test_views"].items():
        lines.append(f"| {name} | {row['views']} | {row['ms_per_video']} |")
    lines += ["", "| DataLoader | clips/s delivered |", "|---|---|"]
    lines += [f"| {name} | {rate} |" for name, rate in loader["dataloader_clips_s"].items()]
    if gpu := loader.get("gpu"):
        per_core = {name: row["clips_s_device"] for name, row in loader["one_core"].items() if name.endswith(": train")}
        lines += [
            "",
            f"Cores needed to feed the GPU: {gpu['device']}'s training clips/s (`make bench` there, "
            f"{gpu['setting']['size'].upper()}/16x2 at {gpu['setting']['frames']} frames) ÷ clips/s per core "
            "of the training recipe with the photometric ops on the GPU.",
            "",
            "| model | GPU train clips/s | " + " | ".join(f"cores ({name})" for name in per_core) + " |",
            "|---|---|" + "---|" * len(per_core),
        ]
        for model, rate in gpu.items():
            if model in ("device", "setting"):
                continue
            cores = " | ".join(f"{rate / clips:.1f}" for clips in per_core.values())
            lines.append(f"| {model} | {rate} | {cores} |")
    return "\n".join(lines) + "\n"


DEFAULT_SETTINGS = {  # per device type: the setting of the committed results, <out>/<device>.json
    "cuda": Setting("b", 32, 224, train_batch=16, infer_batch=32),  # the paper's ViViT-B/16x2 at 32×224²
    # A reduced size that a laptop runs in minutes; ViViT-S, whose 6 heads Model 4 can split (Ti's 3 not).
    "cpu": Setting("s", 16, 112, train_batch=4, infer_batch=8, steps=5, warmup=2),
}


def run(args: argparse.Namespace) -> Bench:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    args.rounds = args.rounds or (1 if gpu else 5)
    default = DEFAULT_SETTINGS["cuda" if gpu else "cpu"]
    s = replace(default, size=args.size or default.size, frames=args.frames or default.frames)
    name = torch.cuda.get_device_name(device) if gpu else cpu_name()
    stem = args.name or slug(name) + ("" if s == default else f"_{s.size}_{s.frames}f")
    bench = Bench(device, args.out, stem)
    print(f"device: {bench.name}; matmul peak: {bench.meta['matmul_peak_tflops']} TFLOP/s", flush=True)
    if args.out:
        print(f"results: {args.out / stem}.json and .md", flush=True)
    bench.meta["setting"] = asdict(s)
    suites = args.suites.split(",")
    if unknown := set(suites) - set(SUITES):
        raise SystemExit(f"--suites: unknown {', '.join(sorted(unknown))}; the suites are {', '.join(SUITES)}")
    for suite, measure in SUITES.items():
        if suite in suites and (gpu or suite not in GPU_SUITES):
            with bench.measuring(suite):
                measure(bench, s, args)
    bench.save()
    for key, value in bench.meta.get("ratios", {}).items():
        print(f"{key}: {value}")
    if "loader" in bench.meta["measured"] and bench.meta.get("loader"):
        print(loader_markdown(bench.meta["loader"]))
    if args.plot and args.out and "frames" in bench.meta["measured"]:
        plot_frames(bench, args.out / f"{bench.stem}_frames.png")
    return bench


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
    from vivit.data.transforms import Photometric, finish_clips

    torch.manual_seed(0)
    video = torch.randint(0, 256, (batch, 3, frames, size, size), dtype=torch.uint8, device=device)
    out = {}
    for name, photometric in (
        ("colour jitter", Photometric(0.8)),
        ("colour jitter + RandAugment", Photometric(0.8, 2, 15)),
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


def plot_frames(bench: Bench, path: Path) -> None:
    """Training step time and peak memory against frames, for Models 1 and 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    memory = bench.device.type == "cuda"  # peak memory is measured on GPU only
    fig, axes = plt.subplots(1, 2 if memory else 1, figsize=(9 if memory else 4.5, 3.5), squeeze=False)
    axes = axes[0]
    for variant in ("spatiotemporal", "factorised_encoder"):
        rows = [r for r in bench.results if r.name == f"frames sweep: {variant}" and r.train_clips_s]
        frames = [r.frames for r in rows]
        axes[0].plot(frames, [1000 / r.train_clips_s for r in rows], "o-", label=variant)
        if memory:
            axes[1].plot(frames, [r.train_peak_gib for r in rows], "o-", label=variant)
    axes[0].set(xlabel="frames", ylabel="training step, ms per clip", xscale="log", yscale="log")
    if memory:
        axes[1].set(xlabel="frames", ylabel="peak memory, GiB", xscale="log", yscale="log")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    size = bench.meta["setting"]["size"].upper()
    fig.suptitle(f"ViViT-{size} training step against clip length, on {bench.name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument(
        "--size", choices=list(SIZES), help="ViT size (default: b on GPU, s on CPU; at ti, Model 4 is skipped)"
    )
    parser.add_argument("--frames", type=int, help="clip length (default: 32 on GPU, 16 on CPU)")
    parser.add_argument("--suites", default=",".join(SUITES), help="comma-separated subset")
    parser.add_argument("--sweep-frames", type=int, nargs="+", help="default: 8 to 128 on GPU, 8 to 32 on CPU")
    parser.add_argument(
        "--rounds", type=int, help="turns the peers take, each a few timed steps (default: 5 on CPU, 1 on GPU)"
    )
    parser.add_argument("--loader-repeats", type=int, default=6, help="loader suite: samples per median")
    parser.add_argument("--loader-workers", type=int, help="loader suite: DataLoader workers (default: one per CPU)")
    parser.add_argument("--loader-batches", type=int, default=12, help="loader suite: batches of 8 timed per loader")
    parser.add_argument("--out", type=Path, help="results folder (JSON and markdown per device)")
    parser.add_argument(
        "--name", help="results file name (default: the device's; at another size or frames, with them appended)"
    )
    parser.add_argument("--plot", action="store_true", help="plot the frames sweep (needs matplotlib)")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
