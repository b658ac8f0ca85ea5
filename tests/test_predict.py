"""src/predict.py: top classes of videos, from the test loader's views averaged as testing averages them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers import run_script, write_checkpoint
from vivit.checkpoints import load_model
from vivit.data import decoding
from vivit.data.decoding import VideoDecodeError, count_frames
from vivit.predict import checkpoint_class_names, predict, video_views, view_dataset

VERBS = ["move-left", "move-right", "move-up", "move-down", "grow", "shrink"]


def fixture_videos(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "moving_digits" / "P01" / "videos").glob("*.MP4"))[:2]


@pytest.mark.parametrize(
    ("model", "settings"),
    [
        ("factorised_encoder", []),  # model.view_average=logits: softmax of the views' mean logits
        ("factorised_dot_product", ["model.view_average=softmax"]),  # the views' mean softmax
        ("spatiotemporal", ["data.target_fps=30"]),  # stride 2 at 30 fps: every 4th of the 60 fps frames
    ],
)
def test_predictions_are_the_test_scores_of_each_video(
    model: str, settings: list[str], tiny_cfg, tmp_path: Path
) -> None:
    """predict() gives a video the probabilities that testing scores it on (src/eval.py): the same views,
    decoded and sampled as the checkpoint's data config says, averaged as its model.view_average says."""
    torch.manual_seed(0)
    cfg = tiny_cfg(f"model={model}", "data.test_clips=2", "data.test_crops=3", *settings)
    net, run_cfg = load_model(write_checkpoint(cfg, tmp_path / "t.ckpt"))
    datamodule = instantiate(run_cfg.data)
    datamodule.setup("test")
    net.on_test_epoch_start()
    with torch.inference_mode():
        for batch in datamodule.test_dataloader():
            net.test_step(batch, 0)  # each view's scores, summed per video
    records = datamodule.datasets["test"].records[:3]
    assert all(r.start == 0 and r.stop == count_frames(r.path) for r in records)  # whole videos, as predict takes
    results = predict(net, [r.path for r in records], run_cfg.data, class_names=checkpoint_class_names(run_cfg))
    for index, result in enumerate(results):
        tested = net.test_videos[index]
        assert result["views"] == len(tested.views) == 6
        expected = net.video_logits(tested.total / len(tested.views)).softmax(-1)
        torch.testing.assert_close(result["probs"]["verb"], expected)
        ranked = result["top"]["verb"]
        assert [name for name, _ in ranked] == [VERBS[i] for i in expected.argsort(descending=True)[:5]]
        assert [p for _, p in ranked] == pytest.approx(expected.sort(descending=True).values[:5].tolist(), abs=1e-6)


def test_views_follow_the_data_config(tiny_cfg, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The views are the test loader's: read with data.decoder's backend, at data.target_fps, test_clips x
    test_crops of them, clip-major."""
    cfg = tiny_cfg("data.test_clips=2", "data.test_crops=3")
    video = fixture_videos(data_dir)[0]
    read = []
    pyav = decoding.DECODERS["pyav"]()
    monkeypatch.setitem(  # a backend of its own, which records the frames it is asked for
        decoding.DECODERS,
        "recording",
        lambda: decoding.Decoder(
            pyav.count_frames, pyav.frame_rate, lambda p, i: read.append(i) or pyav.decode_frames(p, i)
        ),
    )
    heads = {"verb": 6}
    views = {}
    for decoder, target_fps in (("pyav", None), ("recording", None), ("recording", 30)):
        data = OmegaConf.merge(cfg.data, {"decoder": decoder, "target_fps": target_fps})
        views[decoder, target_fps] = video_views(view_dataset([video], data, heads), 0)
    assert views["pyav", None].shape == (6, 3, 4, 32, 32)
    torch.testing.assert_close(views["recording", None], views["pyav", None])
    # 2 clips each, each decoded once for its 3 crops; at 30 fps every 4th frame of 8, repeated past the end
    assert read == [[0, 2, 4, 6], [1, 3, 5, 7], [0, 4, 0, 4], [0, 4, 0, 4]]


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
    proc = run_script(
        "predict", f"ckpt_path={ckpt}", f"video={folder}", "data.test_clips=2", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "broken.mp4: skipped" in out
    lines = [line for line in out.splitlines() if line.startswith("  verb: ")]
    assert len(lines) == 2 and all(len(line.split(", ")) == 5 for line in lines)
    assert all(line.split()[1] in VERBS for line in lines)
    assert "(2 views)" in out


def test_hf_vivit_without_checkpoint_uses_id2label(data_dir: Path, tmp_path: Path, capsys) -> None:
    transformers = pytest.importorskip("transformers")
    from helpers import compose_config
    from vivit.predict import run

    torch.manual_seed(0)
    sizes = dict(image_size=32, num_frames=4, tubelet_size=[2, 8, 8], hidden_size=32, num_hidden_layers=1)
    sizes.update(num_attention_heads=2, intermediate_size=128)
    config = transformers.VivitConfig(**sizes, num_labels=6, id2label={i: f"class {i}" for i in range(6)})
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
