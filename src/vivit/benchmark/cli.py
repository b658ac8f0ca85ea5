"""``python -m vivit.benchmark`` (``make bench``): the command line; runs the suites asked for at the device's
setting and writes the results (:mod:`vivit.benchmark`)."""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict, replace
from pathlib import Path

import torch

from vivit import benchmark
from vivit.benchmark.bench import Bench, cpu_name
from vivit.benchmark.models import SIZES, Setting
from vivit.benchmark.report import ResultsFile, loader_markdown, plot_frames
from vivit.benchmark.suites import GPU_SUITES, SUITES

DEFAULT_SETTINGS = {  # per device type: the setting of the committed results, <out>/<device>.json
    "cuda": Setting("b", 32, 224, train_batch=16, infer_batch=32),  # the paper's ViViT-B/16x2 at 32×224²
    # A reduced size that a laptop runs in minutes; ViViT-S, whose 6 heads Model 4 can split (Ti's 3 not).
    "cpu": Setting("s", 16, 112, train_batch=4, infer_batch=8, steps=5, warmup=2),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser("python -m vivit.benchmark", description=benchmark.__doc__.split("\n\n")[0])
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
    parser.add_argument(
        "--loader-batches",
        type=int,
        default=12,
        help="loader suite: batches of 8 timed per loader (at least 4 per worker)",
    )
    parser.add_argument("--out", type=Path, help="results folder (JSON and markdown per device)")
    parser.add_argument(
        "--name", help="results file name (default: the device's; at another size or frames, with them appended)"
    )
    parser.add_argument("--plot", action="store_true", help="plot the frames sweep (needs matplotlib)")
    run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> Bench:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    args.rounds = args.rounds or (1 if gpu else 5)
    default = DEFAULT_SETTINGS["cuda" if gpu else "cpu"]
    s = replace(default, size=args.size or default.size, frames=args.frames or default.frames)
    name = torch.cuda.get_device_name(device) if gpu else cpu_name()
    stem = args.name or slug(name) + ("" if s == default else f"_{s.size}_{s.frames}f")
    bench = Bench(device, ResultsFile(args.out, stem, list(SUITES)) if args.out else None)
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
        plot_frames(bench, args.out / f"{stem}_frames.png")
    return bench


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
