"""Top classes of videos: python src/predict.py ckpt_path=<checkpoint> video=<file or folder>"""

import hydra
from omegaconf import DictConfig

from vivit.config import check_command_line, check_config  # no torch: fails a bad command at once


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    check_config(cfg)
    from vivit.predict import run  # torch

    run(cfg)


if __name__ == "__main__":
    check_command_line("predict")  # unknown keys, wrong types (vivit.schemas): one line, before the run
    main()
