"""Class predictions for video files: the test loader's views of each file, averaged as testing averages them.

``predict(model, paths, data)`` works on any trained :class:`~vivit.training.VideoClassifier` (every
variant, one head or several), e.g. from a notebook::

    model, run_cfg = load_model("last.ckpt")
    predict(model, ["a.mp4"], run_cfg.data, class_names=checkpoint_class_names(run_cfg))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from vivit.data.annotations import VIDEO_SUFFIXES
from vivit.data.clips import VideoClipDataset
from vivit.data.decoding import VideoDecodeError
from vivit.data.records import VideoRecord
from vivit.training import VideoClassifier

log = logging.getLogger(__name__)


def video_files(video: str | Path) -> list[Path]:
    """``video`` itself, or the video files (by suffix) anywhere under a folder, sorted."""
    path = Path(video)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not found:
            raise FileNotFoundError(f"video={str(path)!r}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) in it")
        return found
    if not path.is_file():
        raise FileNotFoundError(f"video={str(path)!r} is neither a file nor a folder")
    return [path]


def view_dataset(paths: Sequence[str | Path], data: Mapping[str, Any], heads: Mapping[str, int]) -> VideoClipDataset:
    """The test loader's dataset over whole video files: the data config ``data`` built as for testing, with
    ``paths`` as its test split, so that frames are decoded, sampled and cropped as the test loader does it
    (``data.decoder``, ``data.target_fps``, ``data.test_clips`` x ``data.test_crops``, ...). ``heads`` are the
    model's (label set -> class count); the labels are placeholders. Item ``v * views + j`` is view ``j`` of
    ``paths[v]``, clip-major (evenly spaced clips, each through every spatial crop); an item raises
    :class:`VideoDecodeError`, naming the file, when it cannot be read."""
    records = [VideoRecord(Path(p), 0, None, dict.fromkeys(heads, 0), str(p)) for p in paths]
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else os.getcwd()
    datamodule = instantiate(
        data,
        root=root,  # the videos' folder: the dataset's own root may be gone
        annotations=lambda root, split: records,
        heads=dict(heads),
        num_classes=None,
        classes=None,
        generate=None,
        eval_split="test",
        skip_bad_eval_videos=False,  # a bad video raises; predict() reports it
        photometric_on="loader",
    )
    datamodule.setup("test")
    return datamodule.datasets["test"]


def video_views(dataset: VideoClipDataset, video: int) -> Tensor:
    """The views of video ``video`` of a :func:`view_dataset`, ``(views, C, T, H, W)``; each clip is decoded once."""
    return torch.stack([dataset[video * dataset.views + view]["video"] for view in range(dataset.views)])


def checkpoint_class_names(run_cfg: DictConfig) -> dict[str, list[str]] | None:
    """Class names per head from the run's ``data.classes`` reader applied to its ``data.root``, or None
    (indices are printed instead) when the config has no reader or the root is gone."""
    data = run_cfg.data
    root = Path(str(data.root))
    if data.get("classes") is None or not root.exists():
        log.info("no class names (data.classes unset or %s missing): printing class indices", root)
        return None
    try:
        names = instantiate(data.classes)(root)
    except (OSError, ValueError) as error:
        log.warning("cannot read the class names under %s (%s): printing class indices", root, error)
        return None
    return {head: list(names[head]) for head in data.heads if head in names}


def top_k(probs: Tensor, names: Sequence[str] | None, k: int) -> list[tuple[str, float]]:
    values, indices = probs.topk(min(k, probs.numel()))
    label = (lambda i: names[i]) if names is not None and len(names) == probs.numel() else str
    return [(label(int(i)), float(v)) for v, i in zip(values, indices, strict=True)]


@torch.inference_mode()
def predict(
    model: VideoClassifier,
    paths: Sequence[str | Path],
    data: Mapping[str, Any],
    *,
    class_names: Mapping[str, Sequence[str]] | None = None,
    top_k_classes: int = 5,
    device: str | torch.device | None = None,
    skip_bad: bool = False,
    batch_size: int | None = None,
) -> list[dict[str, Any]]:
    """One dict per video: ``video`` (path), ``views`` (count), ``probs`` (head -> class probabilities, a CPU
    tensor) and ``top`` (head -> ``[(name, probability), ...]``, best first). The views are the test loader's
    (:func:`view_dataset`) and are averaged as testing averages them (``model.view_average``): ``probs`` is the
    softmax of the mean logits, or the mean softmax. With two heads (verb, noun), ``top["action"]`` ranks the
    pairs by the product of their probabilities, named ``"<verb> <noun>"``. Names come from ``class_names``
    (head -> names); without them, class indices.

    A video that cannot be decoded raises, naming it; with ``skip_bad`` it is logged and its dict holds
    ``error`` instead of predictions.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    names = dict(class_names or {})
    batch_size = batch_size or int(data.get("batch_size") or 8)
    dataset = view_dataset(paths, data, model.heads)
    results = []
    for video, path in enumerate(paths):
        try:
            views = video_views(dataset, video)
        except VideoDecodeError as error:
            if not skip_bad:
                raise
            log.warning("%s; skipped", error)
            results.append({"video": str(path), "error": str(error)})
            continue
        scores = torch.cat([model.view_scores(model(chunk.to(device))) for chunk in views.split(batch_size)])
        logits = model.video_logits(scores.mean(0))  # (K,) as testing scores the video
        probs = {head: value.softmax(-1).cpu() for head, value in model.split_logits(logits).items()}
        top = {head: top_k(p, names.get(head), top_k_classes) for head, p in probs.items()}
        if len(probs) == 2:
            (first, a), (second, b) = probs.items()
            action = (a[:, None] * b[None, :]).flatten()
            na, nb = names.get(first), names.get(second)
            pair_names = [f"{na[i] if na else i} {nb[j] if nb else j}" for i in range(len(a)) for j in range(len(b))]
            top["action"] = top_k(action, pair_names, top_k_classes)
        results.append({"video": str(path), "views": len(views), "probs": probs, "top": top})
    return results


def format_predictions(results: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for result in results:
        if "error" in result:
            lines.append(f"{result['video']}: skipped ({result['error']})")
            continue
        lines.append(f"{result['video']} ({result['views']} views)")
        for head, ranked in result["top"].items():
            lines.append(f"  {head}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked))
    return "\n".join(lines)


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    """src/predict.py: the model of ``cfg.ckpt_path`` (its config, with this run's ``data.*`` and ``model.*``
    overrides), or, without a checkpoint, Model 1 from the config with ``init=hf_vivit``; prints the top
    classes of each video of ``cfg.video`` (a file, or every video under a folder, bad ones skipped)."""
    from vivit.checkpoints import load_model

    if cfg.get("ckpt_path"):
        model, run_cfg = load_model(cfg.ckpt_path, cfg)  # with this command's data.* and model.* overrides
        data, names = run_cfg.data, checkpoint_class_names(run_cfg)
    elif str(cfg.get("init", {}).get("_target_", "")).endswith("HFViViTInit"):
        model = instantiate(OmegaConf.merge(cfg.model, {"compile": False}))
        init = instantiate(cfg.init)
        report = init(model.net)
        data = OmegaConf.merge(cfg.data, {"mean": list(report.mean), "std": list(report.std)})
        heads = dict(model.heads)
        labels, names, start = init.labels, {}, 0
        for head, count in heads.items():
            names[head], start = labels[start : start + count], start + count
    else:
        raise ValueError("give ckpt_path=<checkpoint>, or init=hf_vivit init.source=<transformers ViViT directory>")
    path = Path(str(cfg.video))
    results = predict(
        model,
        video_files(path),
        data,
        class_names=names,
        top_k_classes=cfg.top_k,
        device=cfg.get("device"),
        skip_bad=path.is_dir(),
    )
    print(format_predictions(results))
    return results
