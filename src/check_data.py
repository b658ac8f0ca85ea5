"""Check a dataset before training: python src/check_data.py data=<name> data.root=<dir> [workers=N] [out=<dir>]

Exits with 1 when rows are dropped or videos do not decode (the report lists them), 0 when the data is clean.
"""

import hydra
from omegaconf import DictConfig

import vivit.config  # noqa: F401  the resolvers that conf/ uses (${cwd:})
from vivit.data.check import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="check_data")
def main(cfg: DictConfig) -> None:
    if status := run(cfg):
        raise SystemExit(status)


if __name__ == "__main__":
    main()
