"""Export a checkpoint's network: python src/export.py ckpt_path=<path/to/checkpoint.ckpt> format=onnx|torch_export"""

import hydra
from omegaconf import DictConfig

from vivit.config import check_command_line, check_config  # no torch: fails a bad command at once


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    check_config(cfg)
    from vivit.export import export  # torch

    export(cfg)


if __name__ == "__main__":
    check_command_line("export")  # unknown keys, wrong types (vivit.schemas): one line, before the run
    main()
