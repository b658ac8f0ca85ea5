"""What :func:`~vivit.data.prepare.dataset.prepare_data` found, as ``prepare_data.json`` and ``prepare_data.md``."""

from __future__ import annotations

from dataclasses import dataclass, field

from vivit.data.problems import Problem, ProblemReport, problems_table


@dataclass
class PreparedData(ProblemReport):
    """The findings of :func:`~vivit.data.prepare.dataset.prepare_data`: per-video results, sizes, sample times
    and the problems."""

    root: str
    out: str
    encoding: dict
    train_with: str  # the overrides that train on the prepared copy
    splits: dict[str, dict[str, int]]  # split -> records, videos, failed
    counts: dict[str, int]  # videos prepared, skipped, failed; annotation files copied; media files left out
    bytes: dict[str, int]  # videos before and after, annotation files copied
    seconds: float  # preparing the videos and copying the other files
    videos: list[dict]  # {"file", "output", "status", "frames", "source_size", "size", "error"}
    problems: list[Problem]
    # "raw" and "prepared": one training sample; "raw_decode", "prepared_decode": decoding its clip
    sample_seconds: dict[str, float | None] = field(default_factory=dict)

    def markdown(self, limit: int | None = None) -> str:
        """Counts, sizes, sample times and the problems (errors first) as Markdown; at most ``limit`` problems."""
        n, size = self.counts, self.bytes
        errors = sum(problem.severity == "error" for problem in self.problems)
        ratio = f" ({size['after'] / size['before']:.0%})" if size["before"] else ""
        lines = [
            f"# Prepared copy of {self.root}",
            "",
            f"In {self.out}, in {self.seconds:.0f} s: "
            + ("FAILED: see the errors below." if self.failed else "OK.")
            + f" Train on it with `{self.train_with}`.",
            "",
            f"- Videos: {n['prepared']} prepared, {n['skipped']} skipped (done before), {n['failed']} failed.",
            f"- Size of the videos: {_mib(size['before'])} before, {_mib(size['after'])} after{ratio}.",
            f"- Annotation files copied: {n['copied']} ({_mib(size['copied'])}); videos and images no record "
            f"uses, left out: {n['left_out']}.",
        ]
        times = self.sample_seconds
        if times.get("raw") and times.get("prepared"):
            lines.append(
                f"- One training sample (decode and transforms, median): {_speed(times['raw'], times['prepared'])}; "
                f"decoding its clip alone: {_speed(times['raw_decode'], times['prepared_decode'])}."
            )
        settings = ", ".join(f"{key}={value}" for key, value in self.encoding.items())
        lines += [f"- Settings: {settings}.", "", "| split | records | videos | failed |", "|---|---|---|---|"]
        lines += [f"| {split} | {c['records']} | {c['videos']} | {c['failed']} |" for split, c in self.splits.items()]
        lines += ["", f"## Problems: {errors} errors, {len(self.problems) - errors} notes", ""]
        lines += problems_table(self.problems, limit)
        return "\n".join(lines) + "\n"


def _speed(before: float, after: float) -> str:
    return f"{before * 1000:.1f} ms before, {after * 1000:.1f} ms after ({before / after:.1f}x as fast)"


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
