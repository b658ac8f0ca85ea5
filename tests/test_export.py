"""Export: every variant's checkpoint round-trips through torch.export and ONNX (onnxruntime) with the
network's logits."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from helpers import compose_config, write_checkpoint
from vivit.export import FORMATS
from vivit.export import export as export_checkpoint

MODELS = ["spatiotemporal", "factorised_encoder", "factorised_self_attention", "factorised_dot_product"]
# torch.export for every variant; ONNX export takes a few seconds each, so each model once, with
# the two tokenisers alternating.
CASES = [(m, tok, "torch_export") for m in MODELS for tok in ("uniform_frame", "tubelet")]
CASES += [(m, ("tubelet", "uniform_frame")[i % 2], "onnx") for i, m in enumerate(MODELS)]


@pytest.mark.parametrize(("model", "tokeniser", "format"), CASES)
def test_every_variant_exports_and_reloads_with_the_same_logits(
    model: str, tokeniser: str, format: str, tiny_cfg, tmp_path: Path, capsys, caplog
) -> None:
    caplog.set_level(logging.INFO)
    torch.manual_seed(0)
    shallow = ["model.net.temporal_depth=1"] if model == "factorised_encoder" else []
    ckpt = write_checkpoint(tiny_cfg(f"model={model}", f"tokeniser={tokeniser}", *shallow), tmp_path / "tiny.ckpt")
    cfg = compose_config("export", [f"ckpt_path={ckpt}", f"format={format}"], tmp_path / "export")
    path = export_checkpoint(cfg)
    assert path == ckpt.with_suffix(FORMATS[format])  # next to the checkpoint by default
    # export() reloaded the file and compared the logits on 3 clips (the batch dimension is dynamic)
    out = capsys.readouterr().out
    assert "max abs diff of the logits" in out
    assert "[torch.onnx]" not in out  # nor the graph passes' INFO lines (onnx_ir, onnxscript): 129 of them
    assert [
        r.name for r in caplog.records if r.name.startswith(("onnx", "torch.onnx")) and r.levelno < logging.WARNING
    ] == []


def test_export_fails_when_the_reloaded_logits_differ(tiny_cfg, tmp_path: Path) -> None:
    ckpt = write_checkpoint(tiny_cfg("model=spatiotemporal"), tmp_path / "tiny.ckpt")
    out = tmp_path / "elsewhere" / "net.pt2"
    cfg = compose_config("export", [f"ckpt_path={ckpt}", "format=torch_export", f"output={out}", "atol=-1"])
    with pytest.raises(RuntimeError, match="differ"):
        export_checkpoint(cfg)
    assert out.is_file()
