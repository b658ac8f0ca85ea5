"""What src/check_data.py and src/prepare_data.py report: problems, one per file and kind, in a report written as
JSON and Markdown. Imports no torch (src/prepare_data.py checks its options before the imports)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One problem of a split ("all": of the dataset), with a file (a video, or the annotation file of a row
    with an unknown label) and the annotation rows it concerns (none: the whole split). ``severity`` is
    "error" or "note": a note (a short clip) does not stop training."""

    split: str
    file: str
    rows: tuple[str, ...]
    problem: str
    severity: str = "error"


def problems_table(problems: Sequence[Problem], limit: int | None = None) -> list[str]:
    """Markdown lines of a report's problems, one row each (the first ``limit``; None: all)."""
    if not problems:
        return []
    lines = ["| | split | file | rows | problem |", "|---|---|---|---|---|"]
    for problem in problems[:limit]:
        more = len(problem.rows) - 3
        rows = ", ".join(problem.rows[:3]) + (f" and {more} more" if more > 0 else "")
        cells = (problem.severity, problem.split, problem.file, rows, problem.problem)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    if limit is not None and len(problems) > limit:
        lines.append(f"\n... and {len(problems) - limit} more")
    return lines


class ProblemReport:
    """Base of a dataclass report with a ``problems`` list; the report gives its own ``markdown(limit)``."""

    problems: list[Problem]

    @property
    def failed(self) -> bool:
        """An error among the problems (notes do not fail a report)."""
        return any(problem.severity == "error" for problem in self.problems)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "failed": self.failed}, indent=1)

    def write(self, out: Path, stem: str) -> int:
        """Writes ``<out>/<stem>.json`` and ``.md``, prints the Markdown (the first 50 problems) and where the
        files are; returns the exit status: 1 when the report failed, else 0."""
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(self.to_json())
        (out / f"{stem}.md").write_text(self.markdown())
        print(self.markdown(limit=50))
        print(f"Report: {out / f'{stem}.md'} and {out / f'{stem}.json'}")
        return 1 if self.failed else 0
