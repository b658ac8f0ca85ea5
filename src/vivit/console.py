"""What a run prints: its config at the start (:func:`print_config`), its metrics and paths at the end
(:func:`summarise`), and not the log noise of the libraries below it, which needs no action."""

from __future__ import annotations

import io
import logging
import sys
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

from vivit.config import hydra_overrides
from vivit.run_directory import CONFIG_TREE

log = logging.getLogger(__name__)

# Lightning's top package gives its logger a console handler of its own at import, while its records also reach
# the root logger's (Hydra's console and <task>.log): every line twice. When the root logger is configured, it
# alone prints them, as Lightning's subpackages already arrange for themselves.
if logging.getLogger().hasHandlers():
    logging.getLogger("lightning").handlers.clear()
# Advertisements for Lightning's cloud services (litlogger, litmodels), logged at every run: nothing to act on.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: not r.getMessage().startswith("💡 Tip"))
# Lightning 2.6 builds torch's deprecated LeafSpec in its own code; nothing a user can change (a later Lightning).
warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.")
# On a machine with SLURM's srun (a cluster's login node), Lightning advises twice per run to prepend srun; it does so
# only outside a SLURM allocation, where the run is not a SLURM job (cluster=slurm and hydra/launcher=slurm run theirs
# under SLURM, README).
warnings.filterwarnings("ignore", r"The `srun` command is available on your system", module=r"lightning\.")


@rank_zero_only
def print_config(cfg: DictConfig, out: str | Path) -> None:
    """Logs the run's config as a tree (console and ``<task>.log``), folded: one line per config group with the
    option chosen and the keys that the command line sets under it, then the top-level values. The whole config,
    resolved, goes to ``<out>/config_tree.log`` as a tree, as lightning-hydra-template writes it."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    overrides = hydra_overrides()
    out = Path(out)
    tree = Tree(f"config (all of it: {out / '.hydra' / 'config.yaml'}; resolved: {out / CONFIG_TREE})")
    groups = [g for g, option in list(choices.items())[::-1] if option and not g.startswith("hydra")]  # defaults order
    for name in [*groups, *(k for k, node in cfg.items() if isinstance(node, DictConfig) and k not in groups)]:
        sets = [f"{k[len(name) + 1 :]}={v}" for k, v in overrides.items() if k.startswith(f"{name}.")]
        tree.add(" ".join([f"{name}: {choices[name]}" if name in groups else name, *sets]))
    tree.add(" ".join(f"{k}={v}" for k, v in cfg.items() if not isinstance(v, DictConfig)))
    log.info("%s", render(tree))

    full = Tree("config")
    leaves = {k: v for k, v in cfg.items() if not isinstance(v, DictConfig)}
    for key, node in [("", OmegaConf.create(leaves)), *((k, v) for k, v in cfg.items() if k not in leaves)]:
        full.add(key or "(top level)").add(Syntax(OmegaConf.to_yaml(node, resolve=True).rstrip(), "yaml"))
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_TREE).write_text(render(full) + "\n")


def render(tree: Tree) -> str:
    """``tree`` as plain text (no colours, no wrapping: the log file and the console read alike)."""
    console = Console(file=io.StringIO(), width=1000, color_system=None)  # a line per entry, unwrapped
    console.print(tree)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())


@rank_zero_only
def summarise(trainer: L.Trainer, metrics: dict[str, float], checkpoint: str) -> None:
    """Prints the run's metrics and paths, after ending its W&B run (if any) so that W&B's closing lines
    come first, and plain (at exit it prints them with colour codes), and a multirun's next job gets its own."""
    from hydra.core.hydra_config import HydraConfig

    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()

    out = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(trainer.default_root_dir)
    lines = ["", "Summary"]
    lines += [  # counts (test/videos, test/views, test/bad_videos) as whole numbers
        f"  {k:<28} {v:{'.0f' if k.endswith(('/videos', '/views', '/bad_videos')) else '.4f'}}"
        for k, v in sorted(metrics.items())
        if not k.endswith("_step") and not k.startswith("lr-")
    ]
    lines += [
        f"  checkpoint: {checkpoint or '(none saved)'}",
        f"  config:     {out / '.hydra' / 'config.yaml'}",
        f"  logs:       {out}",
    ]
    print("\n".join(lines))
