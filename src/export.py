"""Export a checkpoint's network: python src/export.py ckpt_path=<path/to/checkpoint.ckpt> format=onnx|torch_export"""

import hydra
from omegaconf import DictConfig

from vivit.export import export


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
