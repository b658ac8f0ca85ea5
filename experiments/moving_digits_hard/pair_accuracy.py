"""Which of data=moving_digits_hard's three class pairs each run of a sweep has learnt: the validation top-1 of
each run's best checkpoint within each pair (chance 50%: order, reversal, in front/behind), and how often it
picks the right pair at all. Averaged over the seeds of each row, as src/report.py averages its table.

    python experiments/moving_digits_hard/pair_accuracy.py logs/train/sweeps/<sweep>   # writes pairs.md there
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import vivit.config  # noqa: E402,F401  (the resolvers of conf/)
from vivit.checkpoints import load_model  # noqa: E402
from vivit.data.moving_digits_hard import VERBS  # noqa: E402
from vivit.report import AVERAGED, collect, varying_axes  # noqa: E402

PAIRS = ("order", "reversal", "in front/behind")


def pair_accuracies(checkpoint: Path) -> dict[str, float]:
    """Within-pair accuracy of each pair (of its clips put in the right pair, the share in the right class) and
    the rate of right pairs, on the validation clips (one view)."""
    from hydra.utils import instantiate

    model, cfg = load_model(checkpoint)
    cfg.data.num_workers = 0
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("validate")
    right = {p: [] for p in PAIRS}
    right_pair = []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            predicted = model(batch["video"])[:, : len(VERBS)].argmax(-1)  # the verb head (the first)
            for label, guess in zip(batch["label"].view(len(predicted), -1)[:, 0].tolist(), predicted.tolist()):
                right_pair.append(guess // 2 == label // 2)
                if right_pair[-1]:  # within the pair: of the clips put in the right pair, those in the right class
                    right[PAIRS[label // 2]].append(guess == label)
    return {
        **{p: statistics.fmean(v) if v else math.nan for p, v in right.items()},
        "right pair": statistics.fmean(right_pair),
    }


def main(sweep: Path) -> None:
    rows = collect(sweep)
    axes = [a for a in varying_axes(rows) if a not in AVERAGED]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        best = sorted((sweep / row["run"] / "checkpoints").glob("epoch_*.ckpt"))
        if best:
            scores = pair_accuracies(best[-1])
            print(row["run"], scores, flush=True)
            groups.setdefault(tuple(row["overrides"].get(a, "") for a in axes), []).append(scores)
    columns = [*PAIRS, "right pair"]
    lines = [
        f"Validation top-1 within each pair of classes (chance 0.50) and right pairs (chance 0.33), {sweep.name}; "
        "mean ± std over seeds (n runs):",
        "",
        "| " + " | ".join([*axes, "n", *columns]) + " |",
        "|" + "---|" * (len(axes) + 1 + len(columns)),
    ]
    for values, runs in groups.items():
        cells = []
        for column in columns:
            found = [run[column] for run in runs if not math.isnan(run[column])]  # nan: no clip in the right pair
            std = statistics.stdev(found) if len(found) > 1 else None
            mean = f"{statistics.fmean(found):.2f}" if found else "–"
            cells.append(
                f"{mean} ± {'–' if std is None else f'{std:.2f}'}"
                + (f" (n={len(found)})" if len(found) < len(runs) else "")
            )
        lines.append("| " + " | ".join([*values, str(len(runs)), *cells]) + " |")
    (sweep / "pairs.md").write_text("\n".join(lines) + "\n")
    (sweep / "pairs.json").write_text(json.dumps({" ".join(k): v for k, v in groups.items()}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
