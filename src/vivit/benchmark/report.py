"""The benchmark's results: one :class:`Result` per measurement, written as ``<out>/<stem>.json`` and ``.md``
(:class:`ResultsFile`), printed one line each, and the frames sweep drawn (``--plot``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vivit.benchmark.bench import Bench

SUITE_META = {
    "ratios": "peers",
    "attention_tflops_fwd_bwd": "attention",
    "loader": "loader",
}  # the suite that writes each key


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


@dataclass
class ResultsFile:
    """``<folder>/<stem>.json`` and ``.md``; ``suites``: every suite, in the order that their rows are written."""

    folder: Path
    stem: str
    suites: Sequence[str]

    def save(self, meta: dict, results: list[Result]) -> None:
        """Writes this run's results, and from the device's earlier file at the same setting the rows and meta
        of the suites this run has not measured."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.stem}.json"
        earlier = json.loads(path.read_text()) if path.exists() else None
        same_setting = earlier and earlier["meta"].get("setting") == json.loads(json.dumps(meta.get("setting")))
        if same_setting:  # (compared as JSON: the file's tuples are lists)
            ran = meta["measured"]
            kept_meta = {key: value for key, value in earlier["meta"].items() if SUITE_META.get(key) not in ran}
            measured = {**earlier["meta"].get("measured", {}), **ran}
            kept_meta.update(meta, measured={suite: measured[suite] for suite in self.suites if suite in measured})
            meta, order = kept_meta, list(self.suites)
            kept = [Result(**row) for row in earlier["results"] if row.get("suite") not in ran]
            results = sorted(kept + results, key=lambda r: order.index(r.suite) if r.suite in order else 0)
        path.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1))
        path.with_suffix(".md").write_text(markdown(meta, results))


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
    if "end_to_end" in meta:
        lines += ["", end_to_end_markdown(meta["end_to_end"])]
    return "\n".join(lines) + "\n"


def end_to_end_markdown(run: dict) -> str:
    """The tables of ``experiments/benchmark/end_to_end.py`` (kept in the device's file by every later run)."""
    lines = [
        f"## End-to-end training (`experiments/benchmark/end_to_end.py`, {run['date']})",
        "",
        f"ViViT-B/16x2 Model 2 (`experiment=vivit_b16x2 model=factorised_encoder`, bf16, batch {run['batch']}) "
        f"fitted by the framework's trainer for {run['batches']} steps on {run['device']}; real-content files read by "
        f"{run['workers']} DataLoader workers ({run['cores']} cores), photometric ops on the GPU.",
        "",
        "| input | train clips/s | of synthetic |",
        "|---|---|---|",
    ]
    for name, fit in run["fits"].items():
        lines.append(f"| {name} | {fit['clips_s']} | {fit.get('of_synthetic', 1.0):.0%} |")
    if jpeg := run.get("jpeg_frames"):
        size = "×".join(str(n) for n in jpeg["size"])
        lines += [
            "",
            f"JPEG frame folders ({jpeg['frames']} frames of {size} per clip, `src/prepare_data.py format=jpeg`), "
            "ms per clip: "
            + ", ".join(
                f"{key.replace('_ms_per_clip', '').replace('_', ' ')} {ms}" for key, ms in jpeg.items() if "ms" in key
            )
            + ".",
        ]
    return "\n".join(lines) + "\n"


def loader_markdown(loader: dict) -> str:
    """The loader suite's tables (:mod:`vivit.data.loader_benchmark`, and on a GPU
    :func:`~vivit.benchmark.suites.device_photometric`)."""
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
