"""Check a dataset before training: python src/check_data.py data=<name> data.root=<dir> [workers=N] [out=<dir>]

Exits with 1 when rows are dropped or videos do not decode (the report lists them), 0 when the data is clean.
"""

import hydra
from omegaconf import DictConfig

from vivit.config import check_command_line, check_config  # no torch: fails a bad command at once


@hydra.main(version_base="1.3", config_path="../conf", config_name="check_data")
def main(cfg: DictConfig) -> None:
    check_config(cfg)
    from vivit.data.check import run  # torch, through the decoder

    if status := run(cfg):
        raise SystemExit(status)


if __name__ == "__main__":
    check_command_line("check_data")  # unknown keys, wrong types (vivit.schemas): one line, before the run
    main()
