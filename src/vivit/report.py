"""Run results on disk, and the report of a sweep: a markdown table and a plot, without W&B.

Every finished run writes ``<run dir>/results.json`` (:func:`save_results`): its axes (the config
choices that identify it), its command-line overrides, its final metrics, the network's parameters
and forward GMACs (``gmacs``: 10^9 multiply-accumulates per clip, the unit of the paper's "GFLOPs") and its
training throughput. :func:`collect` reads them back from a sweep directory (files written before the key was
renamed hold it as ``gflops``); ``python src/report.py <sweep dir>`` writes ``report.md`` and ``report.png``
beside them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from vivit.models import count_macs, count_params

__all__ = ["RESULTS_FILE", "collect", "markdown_table", "plot", "save_results", "write_report"]

RESULTS_FILE = "results.json"
COLUMNS = {  # column -> (results key, format)
    "top-1": ("test/acc_top1", "{:.3f}"),
    "top-5": ("test/acc_top5", "{:.3f}"),
    "GMACs": ("gmacs", "{:.3g}"),
    "params (M)": ("params_m", "{:.2f}"),
    "clips/s": ("train/clips_per_s", "{:.1f}"),
}


def save_results(
    path: Path, net: nn.Module, video_shape: Sequence[int], metrics: dict[str, float], **fields: Any
) -> dict:
    """Write a run's results (see the module docstring). ``net`` may live on the meta device: its
    MACs are counted with one clip of ``video_shape`` = (C, T, H, W) wherever it is."""
    results = {
        **fields,
        "params_m": count_params(net) / 1e6,
        "gmacs": count_macs(net, (1, *video_shape)) / 1e9,
        **{k: v for k, v in metrics.items() if math.isfinite(v)},
    }
    path.write_text(json.dumps(results, indent=1, sort_keys=True))
    return results


def collect(sweep_dir: Path) -> list[dict]:
    """The results of every finished run under ``sweep_dir``, ordered by the sweep's axes."""
    rows = []
    for path in Path(sweep_dir).rglob(RESULTS_FILE):
        row = json.loads(path.read_text())
        if "gflops" in row:  # written before the key was renamed: the same count
            row.setdefault("gmacs", row.pop("gflops"))
        row["run"] = str(path.parent.relative_to(sweep_dir)) or "."
        rows.append(row)
    axes = varying_axes(rows)
    return sorted(rows, key=lambda r: ([natural(r.get("overrides", {}).get(a, "")) for a in axes], r["run"]))


def natural(value: str) -> tuple[int, float | str]:
    """Sort key: numbers by value, before words."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def varying_axes(rows: list[dict]) -> list[str]:
    """The overrides that differ between runs: the sweep's axes, in command-line order."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row.get("overrides", {}) if k not in keys]
    return [k for k in keys if len({str(r.get("overrides", {}).get(k)) for r in rows}) > 1]


def markdown_table(rows: list[dict]) -> str:
    axes = varying_axes(rows) or ["run"]
    header = [*axes, *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row.get("overrides", {}).get(a, row.get(a, ""))) for a in axes]
        for key, fmt in COLUMNS.values():
            value = row.get(key)
            cells.append("–" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Top-1 against GMACs, one point per run, labelled by its axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = varying_axes(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        x, y = row.get("gmacs"), row.get("test/acc_top1", row.get("val/acc_top1"))
        if x is None or y is None:
            continue
        ax.scatter(x, y)
        label = ", ".join(str(row.get("overrides", {}).get(a)) for a in axes) or row["run"]
        ax.annotate(label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel="GMACs per clip (the paper's GFLOPs)", ylabel="top-1")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(sweep_dir: Path) -> tuple[Path, Path]:
    rows = collect(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"no {RESULTS_FILE} under {sweep_dir}: no run of this sweep has finished")
    md, png = Path(sweep_dir) / "report.md", Path(sweep_dir) / "report.png"
    md.write_text(f"# Sweep {Path(sweep_dir).resolve().name}: {len(rows)} runs\n\n" + markdown_table(rows))
    plot(rows, png)
    return md, png
