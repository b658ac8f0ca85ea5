"""Train a ViViT variant: python src/train.py model=factorised_encoder data=moving_digits [key=value ...]"""

import hydra
from omegaconf import DictConfig

from vivit.config import check_config  # no torch: a bad config fails before the seconds of imports below


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    check_config(cfg)
    from vivit.pipeline import train  # torch, Lightning, timm

    metrics = train(cfg)
    return metrics.get("val/acc_top1")  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
