"""Prepare a dataset once for fast loading: python src/prepare_data.py data=<name> data.root=<raw> out=<prepared>

Re-encodes every video that the annotations reference (smaller, short keyframe intervals, the same frames) and
copies the annotation files, so that the same data config trains on data.root=<prepared>. A re-run skips what
is done. Exits with 1 when a video could not be prepared (the report lists it), 0 otherwise.
"""

import hydra
from omegaconf import DictConfig

from vivit.config import check_command_line, check_config  # no torch: fails a bad command at once


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare_data")
def main(cfg: DictConfig) -> None:
    check_config(cfg)
    from vivit.data.prepare import run  # torch, through the decoder

    if status := run(cfg):
        raise SystemExit(status)


if __name__ == "__main__":
    check_command_line("prepare_data")  # unknown keys, wrong types (vivit.schemas): one line, before the run
    main()
