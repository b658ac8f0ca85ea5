"""`make bench` end to end on CPU at a tiny size: every CPU suite measures its rows, the peers' ratios, the
markdown table and the frames plot. Numbers are not asserted (speed is the benchmark's report, not a test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vivit.benchmark import main


@pytest.mark.slow  # torch.compile of two models on CPU: a minute or more on 2 cores
def test_benchmark_measures_every_suite_and_writes_its_report(tmp_path: Path) -> None:
    args = ["--device", "cpu", "--size", "s", "--frames", "4", "--sweep-frames", "4", "8"]
    main([*args, "--suites", "peers,variants,frames", "--rounds", "2", "--out", str(tmp_path), "--plot"])
    (found,) = tmp_path.glob("*.json")
    report = json.loads(found.read_text())
    for row in report["results"]:  # every measurement ran, the compiled ones too
        assert row["error"] is None and row["train_clips_s"] > 0 and row["params_m"] > 0 and row["gmacs"] > 0, row
    rows = {(r["name"], r["frames"]): r for r in report["results"]}
    names = (
        "timm blocks: Model 1",
        "transformers: ViViT (sdpa)",
        *(f"ours: {v}/{t}" for v in VARIANTS for t in TOKENISERS),
    )
    assert {(name, 4) for name in names} <= set(rows)
    peers = ("ours: spatiotemporal/tubelet", "timm blocks: Model 1", "transformers: ViViT (sdpa)")
    assert len({(rows[name, 4]["params_m"], rows[name, 4]["gmacs"]) for name in peers}) == 1  # one network, 3 ways
    # The peers took two turns each (a figure is the median of its turns); the variants one.
    took_turns = [r for r in report["results"] if "train rounds" in r["notes"]]
    assert [r["name"] for r in took_turns] == [peers[0], peers[0], *peers[1:]]  # ours eager and compiled
    for row in took_turns:
        for kind in ("train", "infer"):
            turns = row["notes"][f"{kind} rounds"]
            assert len(turns) == 2 and min(turns) <= row[f"{kind}_clips_s"] <= max(turns)
    assert set(report["meta"]["ratios"]) == {
        "train vs transformers",
        "train vs timm blocks (compiled)",
        "inference vs transformers",
        "train vs transformers, per round",
    }
    assert {frames for name, frames in rows if name.startswith("frames sweep")} == {4, 8}
    assert "| transformers: ViViT (sdpa) |" in found.with_suffix(".md").read_text()
    assert found.with_name(f"{found.stem}_frames.png").stat().st_size > 0


VARIANTS = ("spatiotemporal", "factorised_encoder", "factorised_self_attention", "factorised_dot_product")
TOKENISERS = ("tubelet", "uniform_frame")
