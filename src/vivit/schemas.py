"""The types of the config keys whose values the user types most: Hydra structured configs (dataclasses in
Hydra's ConfigStore), so that Hydra refuses a wrong type (``data.batch_size=sixteen``) or an unknown key when it
composes the config, in every entry point, before torch is imported.

A schema holds types only: the values and their comments stay in the yaml files of conf/, which name their
schema first in their defaults list (``- /_data_schema@_here_``); ``Any`` where a key takes several types (a
number or ``auto``). A schema that adds keys for one option subclasses the group's (``trainer=ddp``,
``data=moving_digits``). Registered on import (vivit.config imports this module); imports no torch.
"""

from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DataSchema:
    """conf/_video.yaml and every data=... option (vivit.data.VideoDataModule's arguments)."""

    _target_: str = MISSING
    root: str = MISSING
    annotations: Any = MISSING
    classes: Any = MISSING
    heads: Any = MISSING  # head -> class count, or auto
    num_classes: Any = MISSING  # a number, or auto
    num_frames: int = MISSING
    stride: int = MISSING
    crop_size: int = MISSING
    min_resize: int | None = MISSING
    scale_jitter: list[float] | None = MISSING
    hflip_prob: float = MISSING
    colour_jitter_prob: float = MISSING
    colour_drop_prob: float = MISSING
    randaugment_layers: int = MISSING
    randaugment_magnitude: int = MISSING
    mean: list[float] = MISSING
    std: list[float] = MISSING
    test_clips: int = MISSING
    test_crops: int = MISSING
    batch_size: int = MISSING
    num_workers: int = MISSING
    max_bad_videos: float = MISSING
    skip_bad_eval_videos: bool = MISSING
    decoder: str = MISSING
    target_fps: float | None = MISSING
    photometric_on: str = MISSING
    eval_split: str = MISSING


@dataclass
class GenerateSchema:
    """data=moving_digits' ``generate`` (the arguments of vivit.data.generate_moving_digits and _hard)."""

    _target_: str = MISSING
    _partial_: bool = MISSING
    num_train: int = MISSING
    num_val: int = MISSING
    num_frames: int = MISSING
    size: int = MISSING
    fps: int = MISSING
    seed: int = MISSING


@dataclass
class MovingDigitsSchema(DataSchema):
    generate: GenerateSchema | None = MISSING  # null: the videos are there already


@dataclass
class OfficialSplitsSchema(DataSchema):
    """data=ucf101, data=hmdb51 (vivit.data.OfficialSplitsDataModule): datasets released with three splits."""

    split: int = MISSING  # the official split: 1, 2 or 3


# src/eval.py's data node: every data key, null (the checkpoint's value) unless the command sets it.
EvalDataSchema = make_dataclass(
    "EvalDataSchema",
    [
        (f.name, f.type | None, None)
        for f in {f.name: f for s in (MovingDigitsSchema, OfficialSplitsSchema) for f in fields(s)}.values()
        if not f.name.startswith("_")
    ],
)


@dataclass
class RegularisationSchema:
    drop_path_rate: float = MISSING
    label_smoothing: float = MISSING
    mixup_alpha: float = MISSING
    cutmix_alpha: float = MISSING
    randaugment_layers: int = MISSING
    randaugment_magnitude: int = MISSING


@dataclass
class BackboneSchema:
    embed_dim: int = MISSING
    depth: int = MISSING
    num_heads: int = MISSING
    mlp_ratio: float = MISSING
    patch_size: int = MISSING


@dataclass
class TokeniserSchema:
    """conf/tokeniser/*.yaml (``model.net.tokeniser``)."""

    _target_: str = MISSING
    embed_dim: int = MISSING
    video_size: list[int] = MISSING  # (T, H, W)
    patch_size: list[int] = MISSING  # (pt, ph, pw)


@dataclass
class NetSchema:
    """conf/_classifier.yaml's ``net``, the keys every variant has: Models 3 and 4 (vivit.models' arguments)."""

    _target_: str = MISSING
    num_classes: Any = MISSING  # data.num_classes: a number, or auto until the dataset is read
    embed_dim: int = MISSING
    depth: int = MISSING
    num_heads: int = MISSING
    mlp_ratio: float = MISSING
    drop_path_rate: float = MISSING
    activation_checkpointing: bool = MISSING
    pool: str = MISSING
    tokeniser: TokeniserSchema = MISSING


@dataclass
class SpatioTemporalNetSchema(NetSchema):
    gelu: str = MISSING


@dataclass
class FactorisedEncoderNetSchema(SpatioTemporalNetSchema):
    temporal_depth: int = MISSING
    temporal_pos_std: float = MISSING


@dataclass
class ClassifierSchema:
    """conf/_classifier.yaml and every model=... option (vivit.training.VideoClassifier's arguments); a variant
    with more ``net`` keys than Models 3 and 4 names its net schema too (``- /_factorised_encoder_schema@net``)."""

    _target_: str = MISSING
    heads: Any = MISSING  # data.heads
    compile: bool = MISSING
    attention_backends: list[str] | None = MISSING
    view_average: str = MISSING
    label_smoothing: float = MISSING
    mixup_alpha: float = MISSING
    cutmix_alpha: float = MISSING
    net: NetSchema = MISSING
    optimizer: Any = MISSING  # optimizer=... and scheduler=..., with their own schemas
    scheduler: Any = MISSING


@dataclass
class OptimizerSchema:
    _target_: str = MISSING
    _partial_: bool = MISSING
    lr: float = MISSING


@dataclass
class AdamWSchema(OptimizerSchema):
    betas: list[float] = MISSING
    weight_decay: float = MISSING


@dataclass
class SGDSchema(OptimizerSchema):
    momentum: float = MISSING
    weight_decay: float = MISSING


@dataclass
class SchedulerSchema:
    _target_: str = MISSING
    _partial_: bool = MISSING
    warmup_epochs: float = MISSING
    min_lr_ratio: float = MISSING


@dataclass
class TrainerSchema:
    """conf/trainer/cpu.yaml, which trainer=gpu and trainer=ddp extend (lightning.Trainer's arguments)."""

    _target_: str = MISSING
    default_root_dir: str | None = MISSING  # ${paths.output_dir}: null until Hydra's run has begun
    min_epochs: int | None = MISSING
    max_epochs: int | None = MISSING
    accelerator: str = MISSING
    devices: Any = MISSING  # a number, a list of GPUs, or auto
    precision: str = MISSING
    gradient_clip_val: float | None = MISSING
    check_val_every_n_epoch: int | None = MISSING
    log_every_n_steps: int = MISSING
    deterministic: Any = MISSING  # true, false or warn
    fast_dev_run: Any = MISSING  # true, false or a number of batches
    limit_train_batches: Any = MISSING  # null, a number of batches or a fraction
    limit_val_batches: Any = MISSING
    limit_test_batches: Any = MISSING
    plugins: list[Any] = MISSING


@dataclass
class DDPTrainerSchema(TrainerSchema):
    num_nodes: int = MISSING
    strategy: str = MISSING
    sync_batchnorm: bool = MISSING


@dataclass
class TrainSchema:
    """conf/train.yaml: its own keys typed, the nodes of its config groups left to their schemas."""

    task_name: str = MISSING
    tags: list[str] = MISSING
    seed: int = MISSING
    train: bool = MISSING
    test: bool = MISSING
    ckpt_path: str | None = MISSING
    resume: str | None = MISSING
    optimized_metric: str = MISSING
    data: Any = MISSING
    model: Any = MISSING
    backbone: Any = MISSING
    init: Any = MISSING
    regularisation: Any = MISSING
    trainer: Any = MISSING
    callbacks: Any = MISSING
    logger: Any = MISSING
    paths: Any = MISSING


@dataclass
class SweepSchema(TrainSchema):
    sweep_name: str = MISSING


@dataclass
class PredictSchema(TrainSchema):
    video: str = MISSING
    top_k: int = MISSING
    device: str | None = MISSING


@dataclass
class EvalModelSchema:
    view_average: str | None = None


@dataclass
class EvalSchema:
    task_name: str = MISSING
    tags: list[str] = MISSING
    seed: int = MISSING
    ckpt_path: str = MISSING
    model: EvalModelSchema = field(default_factory=EvalModelSchema)
    data: Any = field(default_factory=EvalDataSchema)
    trainer: Any = MISSING
    logger: Any = MISSING
    paths: Any = MISSING


@dataclass
class ExportSchema:
    task_name: str = MISSING
    seed: int = MISSING
    ckpt_path: str = MISSING
    format: str = MISSING
    output: str | None = MISSING
    batch_size: int | None = MISSING
    atol: float = MISSING
    paths: Any = MISSING


@dataclass
class CheckDataSchema:
    task_name: str = MISSING
    splits: list[str] = MISSING
    workers: int | None = MISSING
    out: str | None = MISSING
    data: Any = MISSING
    regularisation: Any = MISSING
    paths: Any = MISSING


@dataclass
class PrepareDataSchema:
    task_name: str = MISSING
    out: str = MISSING
    format: str = MISSING
    short_side: int = MISSING
    keyframe_interval: int = MISSING
    codec: str = MISSING
    crf: int = MISSING
    qscale: int = MISSING
    preset: str = MISSING
    tune: str | None = MISSING
    jpeg_quality: int = MISSING
    splits: list[str] = MISSING
    workers: int | None = MISSING
    speed_samples: int = MISSING
    report: str | None = MISSING
    data: Any = MISSING
    regularisation: Any = MISSING
    paths: Any = MISSING


# ConfigStore name -> schema. Stored outside any group, so that none is a choice of --help (like conf/_*.yaml).
SCHEMAS = {
    "_data_schema": DataSchema,
    "_moving_digits_schema": MovingDigitsSchema,
    "_official_splits_schema": OfficialSplitsSchema,
    "_regularisation_schema": RegularisationSchema,
    "_backbone_schema": BackboneSchema,
    "_classifier_schema": ClassifierSchema,
    "_spatiotemporal_schema": SpatioTemporalNetSchema,
    "_factorised_encoder_schema": FactorisedEncoderNetSchema,
    "_adamw_schema": AdamWSchema,
    "_sgd_schema": SGDSchema,
    "_scheduler_schema": SchedulerSchema,
    "_trainer_schema": TrainerSchema,
    "_ddp_trainer_schema": DDPTrainerSchema,
    "_train_schema": TrainSchema,
    "_sweep_schema": SweepSchema,
    "_predict_schema": PredictSchema,
    "_eval_schema": EvalSchema,
    "_export_schema": ExportSchema,
    "_check_data_schema": CheckDataSchema,
    "_prepare_data_schema": PrepareDataSchema,
}

for name, schema in SCHEMAS.items():
    ConfigStore.instance().store(name=name, node=schema)
