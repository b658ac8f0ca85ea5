"""The fast-path switches give the same numbers as the plain path; checked on CPU so that the GPU code
paths stay covered where CI runs (the speed itself is `make bench`'s business)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from vivit.models import (
    FactorisedDotProduct,
    FactorisedEncoder,
    FactorisedSelfAttention,
    SpatioTemporal,
    TubeletTokeniser,
)
from vivit.models.layers import attention_priority
from vivit.training import VideoClassifier
from vivit.training.video_classifier import fused_on_cuda


def tiny(cls=SpatioTemporal, **kwargs):
    torch.manual_seed(0)
    tokeniser = TubeletTokeniser(32, (4, 16, 16), (2, 8, 8))
    return cls(tokeniser, 5, embed_dim=32, depth=2, num_heads=2, **kwargs)


def grads(net, video):
    net.zero_grad()
    net(video).square().sum().backward()
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("cls", [SpatioTemporal, FactorisedEncoder, FactorisedSelfAttention])
def test_activation_checkpointing_gives_the_same_gradients(cls) -> None:
    video = torch.randn(2, 3, 4, 16, 16)
    net = tiny(cls, pool="mean")
    plain = grads(net, video)
    VideoClassifier(net, torch.optim.SGD, activation_checkpointing=True)
    assert net.activation_checkpointing
    checkpointed = grads(net, video)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


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


def test_fused_optimiser_only_on_cuda_and_only_when_unset() -> None:
    adamw = partial(torch.optim.AdamW, lr=1e-3)
    assert fused_on_cuda(adamw, torch.device("cpu")) is adamw
    assert fused_on_cuda(adamw, torch.device("cuda")).keywords == {"lr": 1e-3, "fused": True}
    chosen = partial(torch.optim.AdamW, fused=False)
    assert fused_on_cuda(chosen, torch.device("cuda")) is chosen
    assert fused_on_cuda(torch.optim.Adagrad, torch.device("cuda")).keywords == {"fused": True}


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (run by the device script)")


@needs_gpu
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


@needs_gpu
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
