"""What a run's config needs before torch is imported: the resolvers that conf/ uses, and the checks that
fail a bad command line at once, naming the key or the combination.

Imports only Hydra, OmegaConf and ``vivit.rules``: the entry points in ``src/`` call :func:`check_config`
before they import the pipeline (torch, Lightning, timm: seconds), so a mistake costs no more than Hydra's
start. Unknown keys fail earlier still, when Hydra composes the config (struct mode).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from vivit.rules import check_network, check_patches


def short_name(name: str, limit: int = 120) -> str:
    """``name`` as one directory name: unchanged if it is short and has no ``/``, else its start, with
    ``_`` for ``/``, plus a hash of the whole. A sweep's job directories are named by their overrides
    (conf/sweep/_sweep.yaml) and must stay stable and distinct across re-runs, one level deep (a path
    in a value must not nest them), and within the file system's 255-byte limit."""
    if len(name) <= limit and "/" not in name:
        return name
    return f"{name.replace('/', '_')[: limit - 13]}..{hashlib.sha1(name.encode()).hexdigest()[:11]}"


OmegaConf.register_new_resolver("short_name", short_name, replace=True)
# The launch directory, resolvable before Hydra's runtime config exists (a sweep's directory is
# resolved then, so paths.* cannot use ${hydra:runtime.cwd}).
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)
# ${or_else:value,default}: the value unless it is null or empty. oc.select alone falls back only when a
# key is absent, and train.yaml's resume is present and null (conf/hydra/default.yaml's run directory).
OmegaConf.register_new_resolver(
    "or_else", lambda value, default: default if value in (None, "") else value, replace=True
)

# Numbers or booleans by default that also take some text: key -> the text allowed (None: any).
TEXT_ALLOWED: dict[str, set[str] | None] = {"trainer.devices": None, "trainer.deterministic": {"warn"}}


def hydra_overrides() -> dict[str, str]:
    """This run's command-line overrides as key -> value (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    pairs = (o.split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o)
    return {k.lstrip("+~"): v for k, v in pairs}


def check_override_types(cfg: DictConfig) -> None:
    """Fails, naming the key, when a command-line value is text where the config holds a number or a
    boolean (``data.batch_size=sixteen``), instead of deep inside a constructor or after data preparation.

    The value that a key had before the command line is read from the config files that this run composed
    (:func:`file_defaults`: milliseconds). Only when they leave it open (an interpolation, or a number in one
    file and text in another) are the defaults composed again, as Hydra would (a few tenths of a second).
    Outside Hydra nothing is checked.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    choices = hydra_cfg.runtime.choices
    texts = {}  # values given as text, except the text that a key takes
    for key in hydra_overrides():
        value, allowed = OmegaConf.select(cfg, key, default=None), TEXT_ALLOWED.get(key, set())
        if isinstance(value, str) and allowed is not None and value not in allowed and key not in choices:
            texts[key] = value
    files = config_files(hydra_cfg) if texts else []
    undecided = {}
    for key, value in texts.items():
        found = file_defaults(key, files)
        numbers = [v for v in found if is_number_or_bool(v)]
        if found and len(numbers) == len(found):
            raise_type_error(key, value, found[-1])
        if not found or numbers or any(v is UNRESOLVED for v in found):  # the files leave the type open
            undecided[key] = value
    if undecided:
        check_against_composed_defaults(undecided, hydra_cfg)


def is_number_or_bool(value: object) -> bool:
    return isinstance(value, (bool, int, float))


def raise_type_error(key: str, value: str, default: bool | int | float) -> None:
    kind = "true or false" if isinstance(default, bool) else "a number"
    raise ValueError(f"{key}={value!r}: expected {kind}, like its default {default!r}")


def check_against_composed_defaults(texts: dict[str, str], hydra_cfg: DictConfig) -> None:
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return
    choices = hydra_cfg.runtime.choices
    groups = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0].lstrip("+~") in choices]
    defaults = compose(hydra_cfg.job.config_name, overrides=groups)
    for key, value in texts.items():
        default = OmegaConf.select(defaults, key, default=None)
        if is_number_or_bool(default):
            raise_type_error(key, value, default)


UNRESOLVED = object()  # an interpolation that file_defaults does not follow
YAML_EXPONENT = re.compile(r"[-+]?(\.\d+|\d+(\.\d*)?)[eE][-+]?\d+")  # 1e-3: a number to OmegaConf, text to PyYAML
ABSOLUTE_INTERPOLATION = re.compile(r"\$\{([\w.]+)\}")


def config_files(hydra_cfg: DictConfig) -> list[tuple[str, dict]]:
    """The files of the run's config directories that its config was composed from, as (package, content)
    in no particular order: the primary config, the chosen option of every group, and the configs that
    their defaults lists name. Hydra's own packaged configs (``hydra.*``) are left out."""
    import yaml

    roots = [Path(source.path) for source in hydra_cfg.runtime.config_sources if source.schema == "file"]
    todo = [hydra_cfg.job.config_name]
    todo += [f"{group}/{option}" for group, option in hydra_cfg.runtime.choices.items() if option is not None]
    files, seen = [], set()
    while todo:
        name = todo.pop().lstrip("/")
        if name in seen:
            continue
        seen.add(name)
        path = next((root / f"{name}.yaml" for root in roots if (root / f"{name}.yaml").is_file()), None)
        if path is None:
            continue
        text = path.read_text()
        content = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        group = name.rpartition("/")[0]
        header = re.search(r"^# *@package +(\S+)", text, re.MULTILINE)
        package = header.group(1) if header else "_group_"
        package = "" if package == "_global_" else package.replace("_group_", group.replace("/", "."))
        files.append((package, content))
        for entry in content.get("defaults", []) if isinstance(content, dict) else []:
            if isinstance(entry, str) and entry != "_self_" and not entry.startswith("optional "):
                todo.append(entry if entry.startswith("/") else f"{group}/{entry}".lstrip("/"))
    return files


def file_defaults(key: str, files: list[tuple[str, dict]], depth: int = 0) -> list:
    """The values that ``files`` (:func:`config_files`) give the dotted ``key``, following interpolations
    of other keys (``${backbone.embed_dim}``); :data:`UNRESOLVED` for any other interpolation."""
    values = []
    for package, content in files:
        if package and not key.startswith(package + "."):
            continue
        node = content
        for part in key[len(package) + 1 if package else 0 :].split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is KeyError:
            continue
        if isinstance(node, str) and "${" in node:
            target = ABSOLUTE_INTERPOLATION.fullmatch(node)
            values += (file_defaults(target.group(1), files, depth + 1) if target and depth < 8 else []) or [UNRESOLVED]
        elif isinstance(node, str) and YAML_EXPONENT.fullmatch(node):
            values.append(float(node))
        else:
            values.append(node)
    return values


def check_network_config(cfg: DictConfig) -> None:
    """The rules of ``vivit.rules`` on ``model.net`` and its tokeniser, as their constructors will apply them.
    Values that a node leaves out take the constructor's defaults, which keep the rules; values of the wrong
    type are left to :func:`check_override_types`."""
    net = OmegaConf.select(cfg, "model.net", default=None)
    if not isinstance(net, DictConfig) or "_target_" not in net:
        return
    embed_dim, num_heads, pool = net.get("embed_dim"), net.get("num_heads"), net.get("pool")
    if isinstance(embed_dim, int) and isinstance(num_heads, int) and num_heads > 0:
        check_network(class_name(net), embed_dim, num_heads, pool if isinstance(pool, str) else None)
    tokeniser = net.get("tokeniser")
    if isinstance(tokeniser, DictConfig) and "_target_" in tokeniser:
        sizes = [tokeniser.get("video_size"), tokeniser.get("patch_size")]
        if all(isinstance(size, ListConfig) and all(isinstance(n, int) for n in size) for size in sizes):
            check_patches(class_name(tokeniser), *(list(size) for size in sizes))


def class_name(node: DictConfig) -> str:
    """The class that ``node`` instantiates, without its module: ``FactorisedEncoder``."""
    return node._target_.rsplit(".", 1)[-1]


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The run directory's newest resumable checkpoint: ``checkpoints/last.ckpt`` or a SLURM ``hpc_ckpt_<n>.ckpt``."""
    found = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def check_resume(cfg: DictConfig) -> None:
    """Fails when ``resume=<run dir>`` holds no checkpoint or ``ckpt_path`` names no file
    (``ckpt_path=last`` may find none: the run then starts from scratch)."""
    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("resume"):
        if newest_checkpoint(Path(cfg.resume)) is None:
            raise FileNotFoundError(f"resume={cfg.resume}: no checkpoints/last.ckpt or hpc_ckpt_*.ckpt in it")
    elif ckpt_path not in (None, "last", "best", "hpc") and not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path!r} is not a file")


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no torch: the network's rules, the checkpoint to resume, command-line types."""
    check_network_config(cfg)
    check_resume(cfg)
    check_override_types(cfg)
