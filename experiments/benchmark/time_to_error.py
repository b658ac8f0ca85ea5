"""Time to error: how long each entry point takes to answer a mistake in its command line.

    .venv/bin/python experiments/benchmark/time_to_error.py [--repeats 3] [--out time_to_error.md]

Runs every case below as a user would (``python src/<script>.py <overrides>``, in a fresh process, with no GPU
visible), and prints a Markdown table: the median wall time over the repeats, the exit status and the first
line that the command wrote to stderr. A figure, not a test: the tests check the messages
(tests/test_configs.py); this measures what they cost on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# (entry point, overrides, the mistake); {ckpt}: a file that torch.save wrote, {empty}: an empty directory.
CASES = [
    ("train", ["trainer.max_epoch=3"], "a misspelled key"),
    ("train", ["+trainer.max_epoch=3"], "the misspelled key, added with +"),
    ("train", ["optimizer.lr=0.1"], "a key under the wrong node"),
    ("train", ["model=factorised_encodr"], "a misspelled option"),
    ("train", ["data.batch_size=sixteen"], "text for a number"),
    ("train", ["model.optimizer.lr=fast"], "text for a number"),
    ("train", ["trainer.deterministic=maybe"], "a word the key does not take"),
    ("train", ["data.num_frames=15"], "frames not divisible by the tubelet"),
    ("train", ["trainer=gpu"], "a GPU trainer without a GPU"),
    ("train", ["data=kinetics400", "data.root={empty}"], "an empty data.root"),
    ("eval", [], "no ckpt_path"),
    ("eval", ["ckpt_path={ckpt}", "data.batch_size=sixteen"], "text for a number"),
    ("eval", ["ckpt_path={ckpt}", "data.test_clips=four"], "text for a number"),
    ("eval", ["ckpt_path={ckpt}", "data.test_clip=4"], "a misspelled key"),
    ("eval", ["ckpt_path={ckpt}", "trainer=gpu"], "a GPU trainer without a GPU"),
    ("export", [], "no ckpt_path"),
    ("export", ["ckpt_path={ckpt}", "format=tflite"], "an unknown format"),
    ("export", ["ckpt_path={ckpt}", "format=ONNX"], "a format in capitals"),
    ("export", ["ckpt_path={ckpt}", "batch_size=two"], "text for a number"),
    ("predict", [], "no video"),
    ("predict", ["ckpt_path={ckpt}", "video=x.mp4", "top_k=five"], "text for a number"),
    ("predict", ["ckpt_path={ckpt}", "video=x.mp4", "topk=3"], "a misspelled key"),
    ("check_data", ["data.rot=/videos"], "a misspelled key"),
    ("check_data", ["data=kinetics400", "data.root={empty}"], "an empty data.root"),
    ("prepare_data", ["out=/tmp/prepared", "crf=good"], "text for a number"),
    ("prepare_data", ["out=/tmp/prepared", "short_sid=128"], "a misspelled key"),
    ("prepare_data", ["out=/tmp/prepared", "codec=h265"], "an unknown codec"),
]


def time_case(script: str, overrides: list[str], run_dir: Path) -> tuple[float, int, str]:
    """Wall seconds, exit status and the first line on stderr of one run of ``src/<script>.py``."""
    command = [sys.executable, str(ROOT / "src" / f"{script}.py"), *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HYDRA_FULL_ERROR": ""}
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return seconds, proc.returncode, lines[0] if lines else "(nothing on stderr)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the table gives the median")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    import torch  # only to write the checkpoint file that the cases name

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.save({}, tmp / "any.ckpt")
        (tmp / "empty").mkdir()
        rows = [
            "| entry point | command | mistake | seconds (median) | exit | first line on stderr |",
            "|---|---|---|---:|---:|---|",
        ]
        for n, (script, overrides, mistake) in enumerate(CASES):
            given = [o.format(ckpt=tmp / "any.ckpt", empty=tmp / "empty") for o in overrides]
            runs = [time_case(script, given, tmp / f"run{n}_{i}") for i in range(args.repeats)]
            seconds = statistics.median(r[0] for r in runs)
            _, code, line = runs[-1]
            shown = " ".join(overrides) or "(nothing)"
            message = line.replace(str(tmp), "<tmp>").replace("|", "\\|")
            rows.append(f"| {script} | `{shown}` | {mistake} | {seconds:.2f} | {code} | {message[:140]} |")
            print(rows[-1], flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    note = f"{os.cpu_count()} CPUs, load average {load:.1f} at the end, {args.repeats} runs each."
    table = "\n".join(rows) + f"\n\n{note}\n"
    print("\n" + table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
