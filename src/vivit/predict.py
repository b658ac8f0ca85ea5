"""Class predictions for video files: the test loader's multi-view clips, softmax averaged over the views.

``predict(model, paths, data)`` works on any trained :class:`~vivit.training.VideoClassifier` (every
variant, one head or several), e.g. from a notebook::

    model, run_cfg = load_model("last.ckpt")
    predict(model, ["a.mp4"], run_cfg.data, class_names=checkpoint_class_names(run_cfg))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from vivit.data.decoding import VideoDecodeError, count_frames, decode_frames
from vivit.data.sampling import clip_indices
from vivit.data.transforms import clip_transform

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v"}


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


def video_views(path: str | Path, data: Mapping[str, Any]) -> Tensor:
    """The test views of a whole video file, ``(test_clips * test_crops, C, T, H, W)``: clip-major, as
    the test loader orders them (evenly spaced clips, each through every spatial crop). ``data`` is a
    data config (``num_frames``, ``stride``, ``crop_size``, ``min_resize``, ``mean``, ``std``,
    ``test_clips``, ``test_crops``). Raises :class:`VideoDecodeError`, naming the file, when it cannot be read."""
    clips, crops = int(data.get("test_clips") or 1), int(data.get("test_crops") or 1)
    transforms = [
        clip_transform(
            False,
            crop_size=data["crop_size"],
            min_resize=data.get("min_resize"),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            crop=(crop, crops),
        )
        for crop in range(crops)
    ]
    available = count_frames(path)
    views = []
    for clip in range(clips):
        indices = clip_indices(available, data["num_frames"], data["stride"], offset=(clip, clips))
        frames = decode_frames(path, indices)
        views += [transform(frames) for transform in transforms]
    return torch.stack(views)


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
    model: torch.nn.Module,
    paths: Sequence[str | Path],
    data: Mapping[str, Any],
    *,
    class_names: Mapping[str, Sequence[str]] | None = None,
    top_k_classes: int = 5,
    device: str | torch.device | None = None,
    skip_bad: bool = False,
    batch_size: int | None = None,
) -> list[dict[str, Any]]:
    """One dict per video: ``video`` (path), ``views`` (count), ``probs`` (head -> mean softmax over the
    views, a CPU tensor) and ``top`` (head -> ``[(name, probability), ...]``, best first). With two heads
    (verb, noun), ``top["action"]`` ranks the pairs by the product of their mean probabilities, named
    ``"<verb> <noun>"``. Names come from ``class_names`` (head -> names); without them, class indices.

    A video that cannot be decoded raises, naming it; with ``skip_bad`` it is logged and its dict holds
    ``error`` instead of predictions.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    heads = dict(getattr(model, "heads", None) or {"label": model.net.num_classes})
    names = dict(class_names or {})
    batch_size = batch_size or int(data.get("batch_size") or 8)
    results = []
    for path in paths:
        try:
            views = video_views(path, data)
        except VideoDecodeError as error:
            if not skip_bad:
                raise
            log.warning("%s; skipped", error)
            results.append({"video": str(path), "error": str(error)})
            continue
        logits = torch.cat([model(chunk.to(device)).float() for chunk in views.split(batch_size)])
        per_head = dict(zip(heads, logits.split(list(heads.values()), dim=-1), strict=True))
        probs = {head: value.softmax(-1).mean(0).cpu() for head, value in per_head.items()}
        top = {head: top_k(p, names.get(head), top_k_classes) for head, p in probs.items()}
        if len(heads) == 2:
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
    """src/predict.py: the model of ``cfg.ckpt_path`` (its data config, with this run's ``data.*``
    overrides), or, without a checkpoint, Model 1 from the config with ``init=hf_vivit``; prints the top
    classes of each video of ``cfg.video`` (a file, or every video under a folder, bad ones skipped)."""
    from vivit.pipeline import hydra_overrides, load_model

    overrides = [k for k in hydra_overrides() if k.startswith("data.")]
    if cfg.get("ckpt_path"):
        model, run_cfg = load_model(cfg.ckpt_path)
        for key in overrides:  # e.g. data.test_clips=4, data.root=/elsewhere
            OmegaConf.update(run_cfg, key, OmegaConf.select(cfg, key), merge=True)
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
