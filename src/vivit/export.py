"""Export a trained network for inference without this package: ONNX (run by onnxruntime) or a
torch.export program (``torch.export.save``, reloaded with ``torch.export.load``).

``export(cfg)`` is src/export.py: it rebuilds the network from a checkpoint's stored run config,
exports ``net`` in eval mode on CPU for input (B, C, T, H, W), with a dynamic batch dimension by
default, then reloads the file and checks its logits against the network's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from vivit.checkpoints import load_model
from vivit.config import EXPORT_FORMATS as FORMATS

__all__ = ["FORMATS", "export", "export_net", "load_exported", "max_abs_diff"]

ONNX_SINGLE_FILE_BYTES = 1_800_000_000  # protobuf's 2 GB limit: larger weights go to <file>.data


def export_net(net: nn.Module, video_shape: Sequence[int | None], path: str | Path, format: str) -> Path:
    """Write ``net`` (eval mode, CPU) exported for input ``video_shape`` = (B, C, T, H, W) to ``path``;
    B = None makes the batch dimension dynamic."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    dynamic = video_shape[0] is None
    video = torch.randn(2 if dynamic else video_shape[0], *video_shape[1:])  # a batch of 1 would specialise
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
    with torch.no_grad():
        if format == "onnx":
            for name in ("onnx_ir", "onnxscript"):  # a hundred INFO lines of graph passes otherwise
                logging.getLogger(name).setLevel(logging.WARNING)
            size = sum(p.numel() * p.element_size() for p in net.parameters())
            torch.onnx.export(
                net,
                (video,),
                str(path),
                input_names=["video"],
                output_names=["logits"],
                dynamic_shapes=dynamic_shapes,
                external_data=size > ONNX_SINGLE_FILE_BYTES,
                dynamo=True,
                verbose=False,  # its progress lines: export() prints what was written
            )
        else:
            torch.export.save(torch.export.export(net, (video,), dynamic_shapes=dynamic_shapes), path)
    return path


def load_exported(path: str | Path, format: str) -> Callable[[Tensor], Tensor]:
    """The exported network as a function video (B, C, T, H, W) -> logits (B, K), on CPU."""
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda video: torch.from_numpy(session.run(None, {name: video.numpy()})[0])
    return torch.export.load(path).module()


def max_abs_diff(net: nn.Module, exported: Callable[[Tensor], Tensor], video: Tensor) -> float:
    """Largest absolute difference between the logits of ``net`` and of its export on ``video``."""
    with torch.no_grad():
        return (net.eval()(video) - exported(video)).abs().max().item()


def export(cfg: DictConfig) -> Path:
    """src/export.py: export a checkpoint's network, reload it and check the logits (max abs diff <= atol)."""
    model, _ = load_model(cfg.ckpt_path)
    net, tokeniser = model.net, model.net.tokeniser
    ckpt = Path(cfg.ckpt_path)
    path = Path(cfg.output) if cfg.get("output") else ckpt.with_suffix(FORMATS[cfg.format])
    shape = (cfg.batch_size, tokeniser.in_chans, *tokeniser.video_size)  # (B, C, T, H, W), B None: dynamic
    export_net(net, shape, path, cfg.format)

    # The round trip, with a batch size other than the example's when the batch dimension is dynamic.
    batch = cfg.batch_size or 3
    video = torch.randn(batch, *shape[1:], generator=torch.Generator().manual_seed(cfg.seed))
    diff = max_abs_diff(net, load_exported(path, cfg.format), video)
    print(f"exported {ckpt} as {cfg.format} to {path}")
    print(f"  input (B, C, T, H, W) = ({cfg.batch_size or 'B'}, {', '.join(map(str, shape[1:]))})")
    print(f"  round trip on {batch} random clips: max abs diff of the logits {diff:.3g} (atol {cfg.atol})")
    if not diff <= cfg.atol:
        raise RuntimeError(f"the exported {cfg.format} model's logits differ from the network's by {diff:.3g} > atol")
    return path
