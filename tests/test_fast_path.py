"""The fast-path switches give the same numbers as the plain path; checked on CPU so that the GPU code
paths stay covered where CI runs (the speed itself is `make bench`'s business)."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from helpers import write_checkpoint
from vivit.models import (
    FactorisedDotProduct,
    FactorisedEncoder,
    FactorisedSelfAttention,
    SpatioTemporal,
    TubeletTokeniser,
)
from vivit.models.layers import Block, Blocks, attention_priority
from vivit.training import VideoClassifier
from vivit.training.video_classifier import fused_optimizer, param_groups


def tiny(cls=SpatioTemporal, **kwargs):
    torch.manual_seed(0)
    tokeniser = TubeletTokeniser(32, (4, 16, 16), (2, 8, 8))
    return cls(tokeniser, 5, embed_dim=32, depth=2, num_heads=2, **kwargs)


def grads(net, video):
    net.zero_grad()
    net(video).square().sum().backward()
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def block_runs(net: torch.nn.Module, video: torch.Tensor) -> tuple[dict, int]:
    """The gradients of one forward and backward pass, and how many times a block's forward started in it."""
    runs = []
    for block in (m for m in net.modules() if isinstance(m, Block)):
        block.register_forward_pre_hook(lambda *_: runs.append(1))
    return grads(net, video), len(runs)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(SpatioTemporal, {}), (FactorisedEncoder, {"temporal_depth": 1}), (FactorisedSelfAttention, {})],
)
def test_activation_checkpointing_runs_every_block_again_with_the_same_gradients(cls, kwargs) -> None:
    video = torch.randn(2, 3, 4, 16, 16)
    plain, runs = block_runs(tiny(cls, pool="mean", **kwargs), video)
    checkpointed, runs_again = block_runs(tiny(cls, pool="mean", activation_checkpointing=True, **kwargs), video)
    assert runs_again == 2 * runs  # each block once more in the backward pass, the temporal encoder's too
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def test_a_checkpoint_configured_with_the_earlier_model_activation_checkpointing_loads(tiny_cfg, tmp_path, caplog):
    from vivit.checkpoints import load_model

    cfg = OmegaConf.create(OmegaConf.to_container(tiny_cfg()))  # as stored: untyped
    with open_dict(cfg):  # the stored config of a run from before model.net.activation_checkpointing
        del cfg.model.net["activation_checkpointing"]
        cfg.model.activation_checkpointing = True
    model, _ = load_model(write_checkpoint(cfg, tmp_path / "old.ckpt"))
    assert model.net.activation_checkpointing
    assert all(m.checkpointing for m in model.net.modules() if isinstance(m, Blocks))
    assert "model.activation_checkpointing is deprecated: use model.net.activation_checkpointing" in caplog.text


def test_attention_backend_priority_keeps_the_logits() -> None:
    video = torch.randn(2, 3, 4, 16, 16)
    model = VideoClassifier(tiny(), torch.optim.SGD, attention_backends=["math"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(video), model.net(video))
    with pytest.raises(ValueError, match=r"attention_backends: unknown \['flashy'\]"):
        VideoClassifier(tiny(), torch.optim.SGD, attention_backends=["flashy", "flash"])


def test_compile_in_place_keeps_checkpoint_keys() -> None:
    net = tiny()
    keys = set(net.state_dict())
    model = VideoClassifier(net, torch.optim.SGD, compile=True)
    assert {k.removeprefix("net.") for k in model.state_dict() if k.startswith("net.")} == keys
    assert model.net._compiled_call_impl is not None  # nn.Module.compile: compiled, same module


def test_fused_optimiser_on_cpu_and_cuda_only_when_unset() -> None:
    adamw = partial(torch.optim.AdamW, lr=1e-3)
    for device in ("cpu", "cuda"):
        assert fused_optimizer(adamw, torch.device(device)).keywords == {"lr": 1e-3, "fused": True}
        assert fused_optimizer(torch.optim.Adagrad, torch.device(device)).keywords == {"fused": True}
        for chosen in (partial(torch.optim.AdamW, fused=False), partial(torch.optim.AdamW, foreach=True)):
            assert fused_optimizer(chosen, torch.device(device)) is chosen
    assert fused_optimizer(adamw, torch.device("meta")) is adamw
    assert fused_optimizer(torch.optim.LBFGS, torch.device("cpu")) is torch.optim.LBFGS  # no fused kernel


def fit_one_step(**trainer_options):
    """A tiny VideoClassifier (AdamW) after one CPU training step under ``trainer_options``, and its trainer."""
    import lightning as L

    model = VideoClassifier(tiny(pool="mean"), partial(torch.optim.AdamW, lr=1e-3))
    batches = [{"video": torch.randn(2, 3, 4, 16, 16), "label": torch.tensor([0, 3])}]
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, **quiet, **trainer_options)
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return model, trainer


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_bf16_autocast_clips_the_gradients_of_the_fused_optimiser(algorithm: str) -> None:
    """trainer=gpu's bf16-mixed with gradient_clip_val and the fused AdamW: Lightning refuses to clip for a fused
    optimiser under autocast (guarding fp16's gradient scaler, which bf16 does not use); the model clips them."""
    clip = 1e-4  # far below the gradients' norm and largest value: clipping shows
    model, trainer = fit_one_step(precision="bf16-mixed", gradient_clip_val=clip, gradient_clip_algorithm=algorithm)
    assert trainer.optimizers[0].defaults["fused"]
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    if algorithm == "norm":
        assert torch.linalg.vector_norm(torch.stack([g.norm() for g in gradients])) <= clip * 1.01
    else:
        assert max(g.abs().max() for g in gradients) <= clip


def test_fp16_with_gradient_clipping_takes_the_per_tensor_optimiser() -> None:
    """fp16 autocast has a gradient scaler, which must unscale before clipping: the optimiser is not fused there
    (a fused one unscales inside its step, after the clip), and training runs."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    fp16 = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))  # on CUDA, Lightning's own choice
    _, trainer = fit_one_step(plugins=[fp16], gradient_clip_val=1.0)
    assert not trainer.optimizers[0].defaults["fused"]
    assert trainer.global_step == 1


def test_fused_cpu_step_matches_the_per_tensor_step() -> None:
    """The module's optimiser on CPU is fused, and its update is AdamW's per-tensor update (up to rounding)."""
    torch.manual_seed(0)
    video = torch.randn(2, 3, 4, 16, 16)
    nets = [tiny(), tiny()]
    nets[1].load_state_dict(nets[0].state_dict())
    fused = VideoClassifier(nets[0], partial(torch.optim.AdamW, lr=1e-2)).configure_optimizers()
    per_tensor = torch.optim.AdamW(param_groups(nets[1]), lr=1e-2, foreach=False)
    assert fused.defaults["fused"] and not per_tensor.defaults["fused"]
    for net, optimizer in zip(nets, (fused, per_tensor)):  # one step: the same gradients in both
        net(video).square().mean().backward()
        optimizer.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(nets[0].head.weight, tiny().head.weight)  # it did train


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [SpatioTemporal, FactorisedEncoder, FactorisedSelfAttention, FactorisedDotProduct])
def test_bf16_fast_attention_matches_fp32_on_gpu(cls) -> None:
    video = torch.randn(2, 3, 4, 16, 16, device="cuda")
    net = tiny(cls, pool="mean").cuda().eval()
    with torch.no_grad(), attention_priority(["math"])():
        reference = net(video)
    model = VideoClassifier(net, torch.optim.AdamW, attention_backends=["cudnn", "flash", "efficient"]).eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(video).float()
    assert (logits - reference).norm() / reference.norm() < 3e-2


@pytest.mark.gpu
def test_compiled_fused_training_step_on_gpu() -> None:
    torch.manual_seed(0)
    video = torch.randn(2, 3, 4, 16, 16, device="cuda")
    net = tiny().cuda()
    with torch.no_grad():
        reference = net(video)
    model = VideoClassifier(net, partial(torch.optim.AdamW, lr=1e-3), compile=True).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(video).float()
    assert (logits - reference).norm() / reference.norm() < 3e-2
    optimizer = model.configure_optimizers()
    assert optimizer.defaults["fused"]
    logits.sum().backward()
    before = net.head.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, net.head.weight)
