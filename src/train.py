"""Train a ViViT variant: python src/train.py model=factorised_encoder data=moving_digits [key=value ...]"""

import sys

import hydra
from omegaconf import DictConfig

from vivit.config import check_command_line, check_config  # no torch: fails a bad command at once
from vivit.resume import with_run_overrides


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    check_config(cfg)
    from vivit.pipeline import train  # torch, Lightning, timm

    metrics = train(cfg)
    return metrics.get(cfg.optimized_metric)  # the value a Hydra sweeper optimises (hparams_search=)


if __name__ == "__main__":
    sys.argv[1:] = with_run_overrides(sys.argv[1:])  # resume=<run dir>: that run's overrides, then this command's
    check_command_line("train")  # unknown keys, wrong types (vivit.schemas): one line, before the run
    main()
