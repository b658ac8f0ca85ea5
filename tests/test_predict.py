"""src/predict.py: top classes of videos, softmax averaged over the test loader's views."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from test_export import write_checkpoint
from vivit.data.decoding import VideoDecodeError
from vivit.pipeline import load_model
from vivit.predict import checkpoint_class_names, predict, video_views

VERBS = ["move-left", "move-right", "move-up", "move-down", "grow", "shrink"]


def fixture_videos(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "moving_digits" / "P01" / "videos").glob("*.MP4"))[:2]


@pytest.mark.parametrize("model", ["factorised_encoder", "factorised_dot_product"])
def test_predict_averages_softmax_over_the_test_views(model: str, tiny_cfg, data_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = write_checkpoint(tiny_cfg(f"model={model}", "data.test_clips=2", "data.test_crops=3"), tmp_path / "t.ckpt")
    net, run_cfg = load_model(ckpt)
    names = checkpoint_class_names(run_cfg)
    assert names == {"verb": VERBS}
    videos = fixture_videos(data_dir)
    results = predict(net, videos, run_cfg.data, class_names=names, device="cpu")
    for video, result in zip(videos, results, strict=True):
        ranked = result["top"]["verb"]
        assert len(ranked) == 5 and {name for name, _ in ranked} <= set(VERBS)
        probs = [p for _, p in ranked]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        views = video_views(video, run_cfg.data)
        assert views.shape[0] == result["views"] == 6
        with torch.inference_mode():
            expected = net(views).softmax(-1).mean(0)
        torch.testing.assert_close(result["probs"]["verb"], expected)
        assert probs == pytest.approx(expected.sort(descending=True).values[:5].tolist(), abs=1e-6)


def test_views_match_the_test_loader(tiny_cfg) -> None:
    cfg = tiny_cfg("data.test_clips=2", "data.test_crops=3")
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    dataset = datamodule.datasets["test"]
    record = dataset.records[0]
    assert record.start == 0
    expected = torch.stack([dataset[i]["video"] for i in range(dataset.views)])
    torch.testing.assert_close(video_views(record.path, cfg.data), expected)


def test_two_heads_give_verb_noun_and_action(tiny_cfg, data_dir: Path, tmp_path: Path) -> None:
    ckpt = write_checkpoint(tiny_cfg("model=spatiotemporal", "data=moving_digits_action"), tmp_path / "t.ckpt")
    net, run_cfg = load_model(ckpt)
    names = checkpoint_class_names(run_cfg)
    (result,) = predict(net, fixture_videos(data_dir)[:1], run_cfg.data, class_names=names)
    verb, noun = result["probs"]["verb"], result["probs"]["noun"]
    action = result["top"]["action"]
    assert len(action) == 5 and len(result["top"]["noun"]) == 5
    best_verb, best_noun = int(verb.argmax()), int(noun.argmax())
    assert action[0][0] == f"{names['verb'][best_verb]} {names['noun'][best_noun]}"
    assert action[0][1] == pytest.approx(float(verb.max() * noun.max()), abs=1e-6)


def test_bad_video_is_named(tiny_cfg, tmp_path: Path) -> None:
    ckpt = write_checkpoint(tiny_cfg("model=spatiotemporal"), tmp_path / "t.ckpt")
    net, run_cfg = load_model(ckpt)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        predict(net, [bad], run_cfg.data)
    (result,) = predict(net, [bad], run_cfg.data, skip_bad=True)
    assert "bad.mp4" in result["error"]


def test_cli_prints_top_5_names(tiny_cfg, data_dir: Path, tmp_path: Path) -> None:
    ckpt = write_checkpoint(tiny_cfg("model=factorised_self_attention"), tmp_path / "t.ckpt")
    folder = tmp_path / "videos"
    folder.mkdir()
    for video in fixture_videos(data_dir):
        (folder / video.name).symlink_to(video)
    (folder / "broken.mp4").write_bytes(b"")  # a folder: skipped with a message
    command = [sys.executable, "src/predict.py", f"ckpt_path={ckpt}", f"video={folder}", "data.test_clips=2"]
    command.append(f"hydra.run.dir={tmp_path / 'run'}")
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
    assert "broken.mp4: skipped" in out
    lines = [line for line in out.splitlines() if line.startswith("  verb: ")]
    assert len(lines) == 2 and all(len(line.split(", ")) == 5 for line in lines)
    assert all(line.split()[1] in VERBS for line in lines)
    assert "(2 views)" in out


def test_hf_vivit_without_checkpoint_uses_id2label(data_dir: Path, tmp_path: Path, capsys) -> None:
    transformers = pytest.importorskip("transformers")
    from conftest import compose_config
    from vivit.predict import run

    torch.manual_seed(0)
    config = transformers.VivitConfig(
        image_size=32, num_frames=4, tubelet_size=[2, 8, 8], hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=128, num_labels=6, id2label={i: f"class {i}" for i in range(6)},
    )  # fmt: skip
    source = tmp_path / "hf"
    transformers.VivitForVideoClassification(config).save_pretrained(source)
    overrides = ["model=spatiotemporal", "tokeniser=tubelet", "backbone.embed_dim=32", "backbone.depth=1"]
    overrides += ["backbone.num_heads=2", "backbone.patch_size=8"]
    overrides += ["model.net.gelu=tanh", "data.num_frames=4", "init=hf_vivit", f"init.source={source}"]
    overrides += [f"paths.data_dir={data_dir}", f"video={fixture_videos(data_dir)[0]}"]
    (result,) = run(compose_config("predict", overrides, tmp_path / "run"))
    assert len(result["top"]["verb"]) == 5
    assert all(name.startswith("class ") for name, _ in result["top"]["verb"])
    assert "class " in capsys.readouterr().out
