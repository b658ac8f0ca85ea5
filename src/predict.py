"""Top classes of videos: python src/predict.py ckpt_path=<checkpoint> video=<file or folder>"""

import hydra
from omegaconf import DictConfig

from vivit.config import check_config  # no torch: a bad config fails before the seconds of imports below


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    check_config(cfg)
    from vivit.predict import run  # torch

    run(cfg)


if __name__ == "__main__":
    main()
