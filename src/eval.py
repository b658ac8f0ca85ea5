"""Evaluate a checkpoint on its test split: python src/eval.py ckpt_path=<path/to/checkpoint.ckpt>"""

import hydra
from omegaconf import DictConfig

from vivit.config import check_command_line, check_config  # no torch: fails a bad command at once


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    check_config(cfg)
    from vivit.pipeline import evaluate  # torch

    evaluate(cfg)


if __name__ == "__main__":
    check_command_line("eval")  # unknown keys, wrong types (vivit.schemas): one line, before the run
    main()
