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
from vivit.report import aggregate, collect, markdown  # noqa: E402

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


def mean_std(values: list[float], runs: int) -> str:
    """``mean ± std`` of ``values`` (nan: a run without a clip in the right pair, left out), "(n=k)" when fewer
    than ``runs`` hold one."""
    found = [value for value in values if not math.isnan(value)]
    if not found:
        return "– ± –"
    std = f"{statistics.stdev(found):.2f}" if len(found) > 1 else "–"
    return f"{statistics.fmean(found):.2f} ± {std}" + (f" (n={len(found)})" if len(found) < runs else "")


def main(sweep: Path) -> None:
    axes, groups = aggregate(collect(sweep))  # one group per row of src/report.py's table, seeds averaged
    columns = [*PAIRS, "right pair"]
    body, scores = [], {}
    for group in groups:
        runs = []
        for run in group["runs"]:
            if best := sorted((sweep / run["run"] / "checkpoints").glob("epoch_*.ckpt")):
                runs.append(pair_accuracies(best[-1]))
                print(run["run"], runs[-1], flush=True)
        values = list(group["overrides"].values())
        scores[" ".join(values)] = runs
        body.append([*values, str(len(runs)), *(mean_std([r[c] for r in runs], len(runs)) for c in columns)])
    text = (
        f"Validation top-1 within each pair of classes (chance 0.50) and right pairs (chance 0.33), {sweep.name}; "
        f"mean ± std over seeds (n runs):\n\n{markdown([*axes, 'n', *columns], body)}"
    )
    (sweep / "pairs.md").write_text(text)
    (sweep / "pairs.json").write_text(json.dumps(scores, indent=1))
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
