"""One LightningModule for every ViViT variant: loss, metrics, optimiser and schedule.

It receives the built network and optimiser/scheduler factories; it never reads Hydra config.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchvision import tv_tensors
from torchvision.transforms import v2

from vivit.models.layers import attention_priority
from vivit.training.bad_videos import BadVideos

__all__ = ["VideoClassifier", "fused_optimizer", "param_groups"]

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., Optimizer]
SchedulerFactory = Callable[..., LRScheduler]


def param_groups(net: nn.Module) -> list[dict]:
    """Two groups: weight matrices/kernels, which take the optimiser's weight decay, and norms,
    biases and embeddings (``net.no_weight_decay()``), which take none."""
    skip = net.no_weight_decay() if hasattr(net, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    return [
        {"params": decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


FUSED_DEVICES = ("cpu", "cuda")  # where torch's optimisers (AdamW, Adam, SGD, Adagrad) have fused kernels


def fused_optimizer(factory: OptimizerFactory, device: torch.device) -> OptimizerFactory:
    """The optimiser factory with ``fused=True`` (one kernel per step instead of one per tensor; measured in
    experiments/benchmark/README.md) when the device and the optimiser have a fused implementation and the
    factory chooses neither ``fused`` nor ``foreach``."""
    fusable = "fused" in inspect.signature(getattr(factory, "func", factory)).parameters
    chosen = {"fused", "foreach"} & set(getattr(factory, "keywords", {}))
    if device.type in FUSED_DEVICES and fusable and not chosen:
        return partial(factory, fused=True)
    return factory


@dataclass
class VideoViews:
    """The test views of one video seen so far."""

    label: Tensor  # () or (heads,)
    total: Tensor  # (K,) sum of the views' scores
    views: set[int] = field(default_factory=set)


class VideoClassifier(LightningModule):
    """Video classification with one or more label sets ("heads") on a single network.

    The network's K logits are split by ``heads`` (e.g. ``{"verb": 97, "noun": 300}``) in order.
    With one head the batch's ``label`` is (B,); with several it is (B, len(heads)) and the loss is
    the unweighted mean of the per-head cross-entropies (as in ViViT's EPIC-Kitchens model).
    Per-head metrics are prefixed (``verb_acc_top1``); ``acc_top1`` is then the action accuracy,
    which counts a clip as right only when every head is right.

    Testing scores videos, not views: each test batch item is one view (``index`` is its video, ``view``
    which view), and at the end of the epoch every video is scored on the mean of its views' logits
    (``view_average="logits"``, as ViViT) or of their per-head softmax probabilities (``"softmax"``; the
    loss is then the negative log of the mean probability). Under DDP each process must see whole videos,
    each view once, as ``VideoDataModule``'s test loader gives them; a repeated view is an error.
    ``test/videos`` and ``test/views`` count what was scored.

    Videos that fail to decode are counted, limited and logged (``<stage>/bad_videos``) by its
    :class:`~vivit.training.bad_videos.BadVideos` callback, which :meth:`configure_callbacks` adds to every trainer.

    Args:
        net: a ViViT variant, (B, C, T, H, W) -> (B, K).
        optimizer: ``optimizer(param_groups)`` -> Optimizer; its ``weight_decay`` applies to
            weight matrices only.
        scheduler: ``scheduler(optimizer, total_steps=..., steps_per_epoch=...)`` -> a per-step
            LR scheduler, or None for a constant rate.
        heads: label-set name -> class count; defaults to one head of ``net.num_classes``.
        label_smoothing: λ of ViViT Eq. 11, per head.
        mixup_alpha, cutmix_alpha: training batches are mixed (Eq. 12; CutMix cuts the same box from every
            frame) with one λ ~ Beta(α, α) per batch, by torchvision's MixUp/CutMix (one of them, at random,
            when both are on); 0 turns each off. The targets are mixed before label smoothing. With several
            heads the action (every head's label) is mixed, so all heads share the pairing and λ.
        compile: ``torch.compile`` the network in place (its state-dict keys do not change).
        activation_checkpointing: deprecated, read from the configs of earlier versions' checkpoints: the network's
            own ``activation_checkpointing`` (``model.net.activation_checkpointing``) is the key; true sets it.
        attention_backends: SDPA backends in priority order (cudnn, flash, efficient, math);
            None leaves the choice to torch.
        view_average: how a test video's views are combined, ``"logits"`` or ``"softmax"``.

    On CPU and CUDA, optimisers that have a fused implementation (AdamW, SGD) use it unless the
    optimiser factory sets ``fused`` or ``foreach`` itself.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        heads: Mapping[str, int] | None = None,
        label_smoothing: float = 0.0,
        compile: bool = False,
        activation_checkpointing: bool = False,
        attention_backends: Sequence[str] | None = None,
        view_average: str = "logits",
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
    ) -> None:
        super().__init__()
        if view_average not in ("logits", "softmax"):
            raise ValueError(f"model.view_average must be 'logits' or 'softmax', got {view_average!r}")
        self.view_average = view_average
        self.test_videos: dict[int, VideoViews] = {}  # video index -> its views so far, during a test epoch
        self.attention = attention_priority(attention_backends)
        if activation_checkpointing:
            log.warning("model.activation_checkpointing is deprecated: use model.net.activation_checkpointing")
            net.activation_checkpointing = True
        if compile:
            net.compile()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.heads = dict(heads) if heads else {"label": net.num_classes}
        if sum(self.heads.values()) != net.num_classes:
            raise ValueError(
                f"the heads {self.heads} need {sum(self.heads.values())} logits but the network has "
                f"num_classes={net.num_classes}; make model.net.num_classes equal data.num_classes"
            )
        self.label_smoothing = label_smoothing
        actions = math.prod(self.heads.values())
        with torch.device("cpu"):  # their Beta distributions, also when the model is built on the meta device
            mixers = [
                mix(alpha=alpha, num_classes=actions)
                for mix, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha))
                if alpha
            ]
        self.mix = v2.RandomChoice(mixers) if mixers else None
        # One metric set and one mean loss per stage ("train" itself is taken by nn.Module.train).
        self.train_metrics, self.val_metrics, self.test_metrics = (self.make_metrics() for _ in range(3))
        self.train_loss, self.val_loss, self.test_loss = (MeanMetric() for _ in range(3))
        self.bad_videos = BadVideos()  # one account for the run: fit, then test, on any trainer

    def make_metrics(self) -> MetricCollection:
        metrics: dict[str, nn.Module] = {}
        for head, k in self.heads.items():
            prefix = "" if len(self.heads) == 1 else f"{head}_"
            metrics[f"{prefix}acc_top1"] = MulticlassAccuracy(k, top_k=1, average="micro")
            if k > 5:
                metrics[f"{prefix}acc_top5"] = MulticlassAccuracy(k, top_k=5, average="micro")
        if len(self.heads) > 1:
            metrics["acc_top1"] = MeanMetric()  # the whole label (action): every head right
        return MetricCollection(metrics)

    def forward(self, video: Tensor) -> Tensor:
        with self.attention():
            return self.net(video)

    def split_logits(self, logits: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.heads, logits.split(list(self.heads.values()), dim=-1)))

    def step(self, batch: Mapping[str, Tensor], stage: str) -> Tensor | None:
        if not self.has_clips(batch):
            return None
        return self.score(self(batch["video"]), batch["label"], stage)

    @staticmethod
    def has_clips(batch: Mapping[str, Tensor]) -> bool:
        """False when every clip of the batch was left out (evaluation videos that failed to decode)."""
        return len(batch["label"]) > 0

    def mix_batch(self, video: Tensor, label: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Mixup/CutMix of a training batch: the mixed (B, C, T, H, W) clips and each head's (B, K_h) targets."""
        sizes = list(self.heads.values())
        labels = label.view(len(label), len(sizes))
        action = sum(labels[:, i] * math.prod(sizes[i + 1 :]) for i in range(len(sizes)))  # (B,) mixed radix
        clips, targets = self.mix(tv_tensors.Video(video.transpose(1, 2)), action)  # videos are (B, T, C, H, W)
        targets = targets.view(len(label), *sizes)  # (B, K_1, ..., K_h): the action's mixed one-hot
        per_head = {  # each head's marginal
            head: targets.sum(dim=[d + 1 for d in range(len(sizes)) if d != i]) if len(sizes) > 1 else targets
            for i, head in enumerate(self.heads)
        }
        return clips.as_subclass(Tensor).transpose(1, 2), per_head

    def score(self, logits: Tensor, label: Tensor, stage: str, targets: dict[str, Tensor] | None = None) -> Tensor:
        """Updates and logs the stage's loss and metrics for (B, K) logits and their labels; returns the loss.
        ``targets``: per-head (B, K_h) soft targets for the loss (mixup), else the labels'."""
        logits = self.split_logits(logits)
        labels = label.view(len(label), len(self.heads))  # (B, heads)
        losses = torch.stack(
            [
                F.cross_entropy(
                    logits[head],
                    labels[:, i] if targets is None else targets[head],
                    label_smoothing=self.label_smoothing,
                    reduction="none",
                )
                for i, head in enumerate(self.heads)
            ]
        ).mean(0)  # (B,)
        loss = losses.mean()
        # Metrics accumulate on the device; nothing here waits for the host.
        metrics, mean_loss = getattr(self, f"{stage}_metrics"), getattr(self, f"{stage}_loss")
        correct = []
        for i, head in enumerate(self.heads):
            prefix = "" if len(self.heads) == 1 else f"{head}_"
            for name, metric in metrics.items():
                if name.startswith(prefix + "acc_"):
                    metric.update(logits[head], labels[:, i])
            correct.append(logits[head].argmax(-1) == labels[:, i])
        if len(self.heads) > 1:
            metrics["acc_top1"].update(torch.stack(correct).all(0).float())
        mean_loss.update(losses.detach())
        on_step, batch_size = stage == "train", len(label)  # given: Lightning would guess it from the batch
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=not on_step, batch_size=batch_size)
        if on_step:
            self.log(
                "train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=batch_size
            )
        self.log_dict(
            {f"{stage}/{k}": m for k, m in metrics.items()},
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
            batch_size=batch_size,
        )
        return loss

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor | None:
        if self.mix is None:
            return self.step(batch, "train")
        if not self.has_clips(batch):
            return None
        video, targets = self.mix_batch(batch["video"], batch["label"])
        return self.score(self(video), batch["label"], "train", targets)  # accuracy: against the unmixed labels

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self.step(batch, "val")

    def view_scores(self, logits: Tensor) -> Tensor:
        """(V, K) logits of test views -> what a video's views average: the logits themselves, or each head's
        softmax probabilities (``view_average``)."""
        scores = logits.detach().float()
        if self.view_average == "softmax":
            scores = torch.cat([s.softmax(-1) for s in self.split_logits(scores).values()], dim=-1)
        return scores

    def video_logits(self, mean_scores: Tensor) -> Tensor:
        """(..., K) mean of a video's :meth:`view_scores` -> the logits that testing scores the video on
        (with ``view_average="softmax"``, the log of the mean probabilities)."""
        return mean_scores.log() if self.view_average == "softmax" else mean_scores

    def on_test_epoch_start(self) -> None:
        self.test_videos = {}

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        """Adds each view's scores to its video's; the metrics come at the end of the epoch."""
        if not self.has_clips(batch):
            return
        scores = self.view_scores(self(batch["video"]))  # (B, K)
        for video, view, score, label in zip(batch["index"].tolist(), batch["view"].tolist(), scores, batch["label"]):
            entry = self.test_videos.setdefault(video, VideoViews(label, torch.zeros_like(score)))
            if view in entry.views:
                raise RuntimeError(
                    f"test video {video} came twice with view {view}: under DDP, test with a sampler that "
                    "does not repeat items, as VideoDataModule's test loader does"
                )
            entry.views.add(view)
            entry.total += score

    def on_test_epoch_end(self) -> None:
        """Scores each video on the mean of its views (see the class docstring)."""
        videos = [self.test_videos.pop(index) for index in sorted(self.test_videos)]
        counts = torch.tensor([len(video.views) for video in videos], device=self.device)
        if videos:
            scores = torch.stack([video.total for video in videos]) / counts[:, None]  # (N, K)
            labels = torch.stack([video.label for video in videos])
        else:  # a process with no video (more processes than videos) still takes part in the metrics' sync
            scores = torch.zeros(0, self.net.num_classes, device=self.device)
            labels = torch.zeros(0, len(self.heads), dtype=torch.int64, device=self.device)
        fewer = int((counts < counts.max()).sum()) if videos else 0
        if fewer:  # e.g. trainer.limit_test_batches cut a video short
            log.warning("%d of %d test videos have fewer views than the others", fewer, len(videos))
        self.score(self.video_logits(scores), labels, "test")
        self.log("test/videos", float(len(videos)), reduce_fx="sum", sync_dist=True, batch_size=1)
        self.log("test/views", float(counts.sum()), reduce_fx="sum", sync_dist=True, batch_size=1)

    def configure_gradient_clipping(
        self, optimizer: Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Lightning's, except under bf16 autocast (``trainer=gpu``), where Lightning refuses to clip for a fused
        optimiser: it guards fp16's gradient scaler, but bf16 has none, so the gradients are clipped here as they
        are. (Found on an H200: ``src/train.py trainer=gpu`` failed at its first step.)"""
        plugin = self.trainer.precision_plugin
        if gradient_clip_val and isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            if gradient_clip_algorithm == "value":
                nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
            else:
                nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_callbacks(self) -> list[Callback]:
        return [self.bad_videos]

    def configure_optimizers(self):
        try:
            trainer = self.trainer
        except RuntimeError:  # built outside a fit (a notebook, a test)
            trainer = None
        factory = self.optimizer_factory
        if not (trainer and trainer.gradient_clip_val and getattr(trainer.precision_plugin, "scaler", None)):
            factory = fused_optimizer(factory, self.device)  # fp16's scaler and clipping need a per-tensor step
        optimizer = factory(param_groups(self.net))
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = total / max(self.trainer.max_epochs or 1, 1)
        scheduler = self.scheduler_factory(optimizer, total_steps=total, steps_per_epoch=steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
