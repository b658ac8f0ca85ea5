"""VideoClassifier pieces: parameter groups, the LR schedule, and two-head (action) accuracy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import compose_config
from vivit.models import FactorisedEncoder, TubeletTokeniser
from vivit.training import VideoClassifier, cosine_with_warmup, param_groups


def test_no_weight_decay_on_norms_biases_and_embeddings() -> None:
    net = FactorisedEncoder(
        TubeletTokeniser(32, (4, 32, 32), (2, 8, 8)), 5, embed_dim=32, depth=1, num_heads=2, pool="cls"
    )
    optimizer = torch.optim.AdamW(param_groups(net), lr=1e-3, weight_decay=0.05)
    names = {id(p): n for n, p in net.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    undecayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed | undecayed == set(names.values())
    assert {
        "cls_token",
        "pos_embed",
        "temporal.pos_embed",
        "temporal.cls_token",
        "norm.weight",
        "head.bias",
    } <= undecayed
    assert {"blocks.0.attn.qkv.weight", "tokeniser.proj.weight", "head.weight"} <= decayed
    assert not any(n.endswith(("bias", "pos_embed", "cls_token")) or "norm" in n for n in decayed)


def test_cosine_with_warmup() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = cosine_with_warmup(optimizer, total_steps=100, steps_per_epoch=10, warmup_epochs=2.5)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.1 / 25)  # linear warm-up over 25 steps
    assert lrs[24] == pytest.approx(0.1)  # the peak
    assert all(a >= b for a, b in zip(lrs[24:], lrs[25:]))  # then cosine decay
    assert lrs[-1] < 1e-3 and lrs[62] == pytest.approx(0.05, rel=0.05)  # half-way through the decay


class FixedLogits(nn.Module):
    """A stand-in network that returns the logits it is given as the 'video'."""

    num_classes = 5

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return video


def test_action_accuracy_needs_every_head_right() -> None:
    module = VideoClassifier(FixedLogits(), optimizer=torch.optim.SGD, heads={"verb": 2, "noun": 3})
    logits = torch.tensor(
        [
            [5.0, 0, 5, 0, 0],  # verb 0 right, noun 0 right
            [5.0, 0, 0, 5, 0],  # verb 0 right, noun 1 wrong
            [0.0, 5, 0, 0, 5],  # verb 1 wrong, noun 2 right
            [0.0, 5, 0, 5, 0],  # verb 1 right, noun 1 right
        ]
    )
    labels = torch.tensor([[0, 0], [0, 0], [0, 2], [1, 1]])
    loss = module.step({"video": logits, "label": labels}, "val")
    metrics = {k: v.compute().item() for k, v in module.val_metrics.items()}
    assert metrics["verb_acc_top1"] == pytest.approx(3 / 4)
    assert metrics["noun_acc_top1"] == pytest.approx(3 / 4)
    assert metrics["acc_top1"] == pytest.approx(2 / 4)
    expected = (
        nn.functional.cross_entropy(logits[:, :2], labels[:, 0])
        + nn.functional.cross_entropy(logits[:, 2:], labels[:, 1])
    ) / 2
    torch.testing.assert_close(loss, expected)  # the unweighted mean of the heads' losses


def _test_epoch(module: VideoClassifier, views: list[tuple[int, int, list[float], int | list[int]]]) -> dict:
    """Runs the test stage's hooks on hand-made ``(video, view, logits, label)`` items; returns the metrics."""
    module.on_test_epoch_start()
    for video, view, logits, label in views:
        batch = {"video": torch.tensor([logits]), "label": torch.tensor([label]), "index": torch.tensor([video])}
        module.test_step({**batch, "view": torch.tensor([view])}, 0)
    module.on_test_epoch_end()
    return {"loss": module.test_loss.compute().item()} | {k: v.compute().item() for k, v in module.test_metrics.items()}


def test_test_videos_score_the_mean_of_their_views() -> None:
    right, wrong = [5.0, 0, 0, 0, 0], [-5.0, 1, 0, 0, 0]  # one view sure of class 0, one mildly for class 1
    views = [(0, 0, right, 0), (0, 1, wrong, 0), (1, 0, right, 0), (1, 1, right, 0), (2, 0, wrong, 1), (2, 1, wrong, 1)]
    mean = torch.tensor([[0.0, 0.5, 0, 0, 0], right, wrong])  # the per-video mean logits
    probs = (torch.tensor([right, wrong]).softmax(-1).mean(0), torch.tensor(right).softmax(-1))

    logits = _test_epoch(VideoClassifier(FixedLogits(), optimizer=torch.optim.SGD), views)
    assert logits["acc_top1"] == pytest.approx(2 / 3)  # video 0's mean logits say class 1 (per view: 5 of 6 right)
    assert logits["loss"] == pytest.approx(nn.functional.cross_entropy(mean, torch.tensor([0, 0, 1])).item())

    softmax = _test_epoch(VideoClassifier(FixedLogits(), optimizer=torch.optim.SGD, view_average="softmax"), views)
    assert softmax["acc_top1"] == pytest.approx(1.0)  # video 0: the mean probability says class 0
    expected = -(probs[0][0].log() + probs[1][0].log() + torch.tensor(wrong).log_softmax(-1)[1]) / 3
    assert softmax["loss"] == pytest.approx(expected.item(), rel=1e-5)

    with pytest.raises(RuntimeError, match="video 0 came twice with view 1"):
        _test_epoch(VideoClassifier(FixedLogits(), optimizer=torch.optim.SGD), views[:2] + views[1:2])
    with pytest.raises(ValueError, match="view_average"):
        VideoClassifier(FixedLogits(), optimizer=torch.optim.SGD, view_average="max")


def test_two_head_test_metrics_use_each_video_mean() -> None:
    module = VideoClassifier(FixedLogits(), optimizer=torch.optim.SGD, heads={"verb": 2, "noun": 3})
    views = [
        (0, 0, [3.0, 0, 0, 2, 0], [0, 1]),  # both heads right on this view, both wrong on the next:
        (0, 1, [0.0, 1, 0, 0, 4], [0, 1]),  # the mean (1.5, 0.5 | 0, 1, 2) has the verb right, the noun wrong
        (1, 0, [0.0, 2, 0, 3, 0], [1, 1]),  # both right
    ]
    metrics = _test_epoch(module, views)
    assert metrics["verb_acc_top1"] == pytest.approx(1.0)
    assert metrics["noun_acc_top1"] == pytest.approx(1 / 2)
    assert metrics["acc_top1"] == pytest.approx(1 / 2)  # the action: both heads right


@pytest.mark.parametrize("heads", [{"label": 5}, {"verb": 3, "noun": 4}])
def test_mixup_mixes_clips_and_every_heads_targets_with_one_lambda(heads: dict[str, int]) -> None:
    torch.manual_seed(0)
    k = sum(heads.values())
    net = FactorisedEncoder(TubeletTokeniser(32, (4, 16, 16), (2, 8, 8)), k, embed_dim=32, depth=1, num_heads=2)
    model = VideoClassifier(net, torch.optim.SGD, heads=heads, mixup_alpha=0.4)
    video = torch.randn(6, 3, 4, 16, 16)
    label = torch.stack([torch.randint(n, (6,)) for n in heads.values()], dim=1).squeeze(1)
    mixed, targets = model.mix_batch(video, label)
    partner = video.roll(1, 0)  # torchvision pairs each clip with the previous one
    lam = ((mixed - partner) / (video - partner)).flatten()[0]
    torch.testing.assert_close(mixed, lam * video + (1 - lam) * partner)
    labels = label.view(6, -1)
    for i, (head, n) in enumerate(heads.items()):
        one_hot = F.one_hot(labels[:, i], n).float()
        torch.testing.assert_close(targets[head], lam * one_hot + (1 - lam) * one_hot.roll(1, 0))


def test_cutmix_cuts_the_same_box_from_every_frame() -> None:
    net = FactorisedEncoder(TubeletTokeniser(32, (4, 16, 16), (2, 8, 8)), 5, embed_dim=32, depth=1, num_heads=2)
    model = VideoClassifier(net, torch.optim.SGD, cutmix_alpha=1.0)
    torch.manual_seed(1)
    video = torch.randn(4, 3, 4, 16, 16)
    for _ in range(10):  # a box can be empty (λ near 1): draw again
        mixed, targets = model.mix_batch(video, torch.arange(4))
        pasted = mixed != video  # (B, C, T, H, W)
        if pasted.any():
            break
    assert pasted.any()
    assert (pasted == pasted[:, :, :1]).all()  # the same pixels in every frame
    area = pasted[0, 0, 0].float().mean()
    torch.testing.assert_close(targets["label"][0, 0], 1 - area)  # λ is the area kept


def test_regularisation_knobs_compose_on_any_preset(tmp_path) -> None:
    cfg = compose_config("train", ["regularisation=stochastic_depth", "regularisation.mixup_alpha=0.3"], tmp_path)
    assert (cfg.model.net.drop_path_rate, cfg.model.mixup_alpha, cfg.model.label_smoothing) == (0.3, 0.3, 0.0)
    cfg = compose_config("train", ["regularisation=table4_6_mixup"], tmp_path)  # the cumulative ladder
    r = cfg.regularisation
    assert (r.drop_path_rate, r.randaugment_layers, r.randaugment_magnitude, r.label_smoothing, r.mixup_alpha) == (
        0.2,
        2,
        15,
        0.2,
        0.1,
    )
    assert (cfg.data.randaugment_layers, cfg.data.randaugment_magnitude) == (2, 15)
