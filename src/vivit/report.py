"""Run results on disk, and the report of a sweep: a markdown table and a plot, without W&B.

Every finished run writes ``<run dir>/results.json`` (:func:`save_results`): its axes (the config
choices that identify it), its command-line overrides, its final metrics, the network's parameters
and forward GMACs (``gmacs``: 10^9 multiply-accumulates per clip, the unit of the paper's "GFLOPs") and its
training throughput. :func:`collect` reads them back from a sweep directory (files written before the key was
renamed hold it as ``gflops``); ``python src/report.py <sweep dir>`` writes ``report.md`` and ``report.png``
beside them.

Runs that differ only in an averaged axis (:data:`AVERAGED`: the official split of UCF-101 and HMDB-51, whose
standard report is the mean over the three; the seed) repeat one configuration: :func:`aggregate` makes them one
row, each column their mean ± sample standard deviation with n, and the plot shows it as an error bar. Rows whose
top-1 mean ± std intervals overlap are marked as not separated. The runs themselves follow in a second table.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from vivit.models import count_macs, count_params

__all__ = [
    "AVERAGED",
    "RESULTS_FILE",
    "aggregate",
    "averaged_table",
    "collect",
    "markdown_table",
    "plot",
    "save_results",
    "write_report",
]

RESULTS_FILE = "results.json"
COLUMNS = {  # column -> (results key, format)
    "top-1": ("test/acc_top1", "{:.3f}"),
    "top-5": ("test/acc_top5", "{:.3f}"),
    "GMACs": ("gmacs", "{:.3g}"),
    "params (M)": ("params_m", "{:.2f}"),
    "clips/s": ("train/clips_per_s", "{:.1f}"),
}
CONFIGURATION = ("GMACs", "params (M)")  # columns that repeats share: averaged, shown without a std of 0
AVERAGED = ("data.split", "seed")  # axes whose runs repeat one configuration: reported as mean ± std over them
NOT_SEPARATED = "†"  # marks a top-1 whose mean ± std interval overlaps another row's


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


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body]) + "\n"


def markdown_table(rows: list[dict]) -> str:
    """One row per run: its axes and every column."""
    axes = varying_axes(rows) or ["run"]
    body = []
    for row in rows:
        cells = [str(row.get("overrides", {}).get(a, row.get(a, ""))) for a in axes]
        body.append(cells + ["–" if row.get(key) is None else fmt.format(row[key]) for key, fmt in COLUMNS.values()])
    return markdown([*axes, *COLUMNS], body)


def aggregate(rows: list[dict], averaged: Sequence[str] = AVERAGED) -> tuple[list[str], list[dict]]:
    """The axes that stay (the varying ones not in ``averaged``), and one group per value of them, in the order
    of ``rows``: its ``overrides`` (those axes), its ``runs`` and, for each results key of :data:`COLUMNS` (and
    ``val/acc_top1``, which the plot falls back on), ``stats[key] = (mean, sample std or None for one, n)``
    over the runs that hold it."""
    axes = [a for a in varying_axes(rows) if a not in averaged]
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row.get("overrides", {}).get(a, "")) for a in axes), []).append(row)
    out = []
    for values, runs in groups.items():
        stats = {}
        for key in [key for key, _ in COLUMNS.values()] + ["val/acc_top1"]:
            if found := [run[key] for run in runs if run.get(key) is not None]:
                stats[key] = (statistics.fmean(found), statistics.stdev(found) if len(found) > 1 else None, len(found))
        out.append({"overrides": dict(zip(axes, values, strict=True)), "runs": runs, "stats": stats})
    return axes, out


def not_separated(groups: list[dict], key: str = COLUMNS["top-1"][0]) -> list[tuple[int, int]]:
    """The pairs of groups (indices) whose ``key`` mean ± std intervals overlap, among those with a std (n ≥ 2)."""
    spans = {}
    for i, group in enumerate(groups):
        mean, std, _ = group["stats"].get(key, (None, None, 0))
        if std is not None:
            spans[i] = (mean - std, mean + std)
    return [(i, j) for i in spans for j in spans if i < j and spans[i][0] <= spans[j][1] and spans[j][0] <= spans[i][1]]


def label(group: dict) -> str:
    return ", ".join(f"{axis}={value}" for axis, value in group["overrides"].items()) or "all runs"


def averaged_table(axes: list[str], groups: list[dict]) -> str:
    """One row per group (:func:`aggregate`): its axes, n (its runs), and each column as mean ± std (– for one
    run; GMACs and parameters, the same for every run, as the value), with "(n=k)" where only k of its runs hold
    the column; overlapping top-1s marked, with a footnote."""
    pairs = not_separated(groups)
    marked = {i for pair in pairs for i in pair}
    body = []
    for i, group in enumerate(groups):
        cells = [*group["overrides"].values(), str(len(group["runs"]))]
        for name, (key, fmt) in COLUMNS.items():
            if key not in group["stats"]:
                cells.append("–")
                continue
            mean, std, n = group["stats"][key]
            cell = fmt.format(mean)
            if not (name in CONFIGURATION and not std):
                cell += f" ± {'–' if std is None else fmt.format(std)}"
            cell += f" (n={n})" if n < len(group["runs"]) else ""
            cells.append(cell + (NOT_SEPARATED if name == "top-1" and i in marked else ""))
        body.append(cells)
    notes = [
        f"{NOT_SEPARATED} not separated: the top-1 mean ± std of {label(groups[i])} and of {label(groups[j])} overlap."
        for i, j in pairs
    ]
    return markdown([*axes, "n", *COLUMNS], body) + "".join(f"\n{note}\n" for note in notes)


def x_axis(groups: list[dict]) -> tuple[list[float | None], str, list[str] | None]:
    """Where each group (:func:`aggregate`) goes on the plot's x axis: its GMACs, or, when every group has the
    same (regularisation, seeds of one model), its place in the table, with the groups' labels as tick labels."""
    gmacs = [group["stats"].get("gmacs", (None,))[0] for group in groups]
    if len({round(x, 3) for x in gmacs if x is not None}) > 1:
        return gmacs, "GMACs per clip (the paper's GFLOPs)", None
    return list(range(len(groups))), "", [", ".join(group["overrides"].values()) for group in groups]


def plot(groups: list[dict], path: Path) -> None:
    """Top-1 against GMACs (or, where they are all the same, one column per group: :func:`x_axis`), one point
    per group, its std as an error bar, labelled by its axes (and n)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, xlabel, ticks = x_axis(groups)
    fig, ax = plt.subplots(figsize=(6, 4))
    for x, group in zip(xs, groups, strict=True):
        y = group["stats"].get("test/acc_top1", group["stats"].get("val/acc_top1"))
        if x is None or y is None:
            continue
        ax.errorbar(x, y[0], yerr=y[1], fmt="o", capsize=3)
        runs = group["runs"]
        text = "" if ticks else ", ".join(group["overrides"].values()) or (runs[0]["run"] if len(runs) == 1 else "")
        text += f" (n={y[2]})" if y[2] > 1 else ""
        ax.annotate(text.strip(), (x, y[0]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if ticks:
        ax.set_xticks(xs, ticks, rotation=20, ha="right", fontsize=7)
    ax.set(xlabel=xlabel, ylabel="top-1")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(sweep_dir: Path) -> tuple[Path, Path]:
    """``report.md``: with an averaged axis (:data:`AVERAGED`) among the sweep's, the averaged table, then the
    runs; else the runs. ``report.png``: the plot."""
    rows = collect(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"no {RESULTS_FILE} under {sweep_dir}: no run of this sweep has finished")
    md, png = Path(sweep_dir) / "report.md", Path(sweep_dir) / "report.png"
    text = f"# Sweep {Path(sweep_dir).resolve().name}: {len(rows)} runs\n\n"
    axes, groups = aggregate(rows)
    if averaged := [a for a in varying_axes(rows) if a in AVERAGED]:
        text += f"Mean ± standard deviation over {' and '.join(averaged)}, n runs each:\n\n"
        text += averaged_table(axes, groups) + "\n## Runs\n\n"
    md.write_text(text + markdown_table(rows))
    plot(groups, png)
    return md, png
