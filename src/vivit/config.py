"""What a run's config needs before torch is imported: the resolvers that conf/ uses, and the checks that
fail a bad command line at once, naming the key or the combination.

Imports only Hydra, OmegaConf and ``vivit.rules``: the entry points in ``src/`` call :func:`check_config`
before they import the pipeline (torch, Lightning, timm: seconds), so a mistake costs no more than Hydra's
start, in one line. Keys that no config file has fail earlier still (:func:`check_command_line`, called before
Hydra composes), with the key that was meant.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sys
import zipfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vivit.rules import check_network, check_patches


def short_name(name: str, limit: int = 120) -> str:
    """``name`` as one directory name: unchanged if it is short and has no ``/``, else its start, with
    ``_`` for ``/``, plus a hash of the whole. A sweep's job directories are named by their overrides
    (conf/_sweep.yaml) and must stay stable and distinct across re-runs, one level deep (a path
    in a value must not nest them), and within the file system's 255-byte limit."""
    if len(name) <= limit and "/" not in name:
        return name
    return f"{name.replace('/', '_')[: limit - 13]}..{hashlib.sha1(name.encode()).hexdigest()[:11]}"


def project_root() -> str:
    """The directory holding ``conf/`` and ``src/`` (conf/paths/default.yaml's ``root_dir``), wherever the
    command is run from; the current directory when the package is installed away from the project."""
    root = Path(__file__).resolve().parents[2]
    return str(root) if (root / "conf").is_dir() else os.getcwd()


OmegaConf.register_new_resolver("short_name", short_name, replace=True)
# Resolvable before Hydra's runtime config exists (a sweep's directory is resolved then, so paths.* cannot
# use ${hydra:runtime.cwd}).
OmegaConf.register_new_resolver("project_root", project_root, replace=True)
# A few random characters that tell apart the run directories of runs started in the same second (two
# terminals, a job array); cached, so that every use in one config gives the same.
OmegaConf.register_new_resolver("unique", lambda: secrets.token_hex(3), use_cache=True, replace=True)
# A resumed run's .hydra/ keeps the run's own record: the resuming command's goes to a subdirectory.
OmegaConf.register_new_resolver(
    "record_dir", lambda resume, stamp: f".hydra/resumed/{stamp}" if resume else ".hydra", replace=True
)
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
            raise_type_error(key, value, *dict.fromkeys(found))
        if not found or numbers or any(v is UNRESOLVED for v in found):  # the files leave the type open
            undecided[key] = value
    if undecided:
        check_against_composed_defaults(undecided, hydra_cfg)


def is_number_or_bool(value: object) -> bool:
    return isinstance(value, (bool, int, float))


def raise_type_error(key: str, value: str, default: bool | int | float, *others: bool | int | float) -> None:
    """``others``: the key's values in other config files (src/eval.py's data.*: one per data config)."""
    kind = "true or false" if isinstance(default, bool) else "a number"
    if others:
        raise ValueError(f"{key}={value!r}: expected {kind}, like {', '.join(map(repr, (default, *others)))}")
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
    their defaults lists name; also every option of a group that the run does not choose (src/eval.py's
    data.* apply to a checkpoint's data config). Hydra's own packaged configs (``hydra.*``) are left out."""
    roots = [Path(source.path) for source in hydra_cfg.runtime.config_sources if source.schema == "file"]
    names = [hydra_cfg.job.config_name]
    names += [f"{group}/{option}" for group, option in hydra_cfg.runtime.choices.items() if option is not None]
    names += [f"{path.parent.name}/{path.stem}" for path in group_files(roots, set(hydra_cfg.runtime.choices))]
    return included_files(roots, names)


def included_files(roots: list[Path], names: list[str]) -> list[tuple[str, dict]]:
    """(package, content) of the configs ``names`` (``group/option``, or a primary config's name) found under
    ``roots``, and of the configs that their defaults lists name, each once."""
    todo: list[tuple[str, str | None]] = [(name, None) for name in names]  # (name, package: None for its own)
    files, seen = [], set()
    while todo:
        name, placed = todo.pop()
        name = name.lstrip("/")
        if name in seen:
            continue
        seen.add(name)
        path = next((root / f"{name}.yaml" for root in roots if (root / f"{name}.yaml").is_file()), None)
        if path is None:
            continue
        group = name.rpartition("/")[0]
        package, content = load_yaml(path, group)
        package = package if placed is None else placed
        files.append((package, content))
        for entry in content.get("defaults", []) if isinstance(content, dict) else []:
            if isinstance(entry, str) and entry != "_self_" and not entry.startswith("optional "):
                entry, _, at = entry.partition("@")  # /_classifier@_here_: in this file's package
                todo.append(
                    (entry if entry.startswith("/") else f"{group}/{entry}", package if at == "_here_" else None)
                )
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


def group_files(roots: list[Path], skip: set[str] = frozenset()) -> list[Path]:
    """The options of the config groups one level under ``roots``, except the groups in ``skip`` and Hydra's."""
    groups = [d for root in roots if root.is_dir() for d in root.iterdir() if d.is_dir()]
    return [f for d in groups if d.name not in skip and d.name != "hydra" for f in sorted(d.glob("*.yaml"))]


def load_yaml(path: Path, group: str) -> tuple[str, Any]:
    """A config file of ``group`` ("" for a primary config): its package (``# @package``, else the group's;
    "" for the global package) and its content."""
    import yaml

    text = path.read_text()
    content = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    header = re.search(r"^# *@package +(\S+)", text, re.MULTILINE)
    package = header.group(1) if header else "_group_"
    return ("" if package == "_global_" else package.replace("_group_", group.replace("/", "."))), content


CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"  # the project's conf/, beside src/


def known_keys(config_name: str, config_dir: Path = CONFIG_DIR) -> tuple[set[str], set[str]]:
    """The dotted keys that some config file of ``config_dir`` sets (every option of every group, the primary
    config ``config_name``, and what their defaults lists include), and those of them whose value is not a
    mapping (a deeper key under one of them is left to Hydra). Milliseconds: no composing."""
    names = [config_name, *(f"{path.parent.name}/{path.stem}" for path in group_files([config_dir]))]
    keys, leaves = set(), set()
    for package, content in included_files([config_dir], names):
        todo = [(package, content)]
        while todo:
            prefix, node = todo.pop()
            for key, value in node.items() if isinstance(node, dict) else ():
                if key == "defaults" and not prefix or key == "hydra":
                    continue
                dotted = f"{prefix}.{key}" if prefix else str(key)
                keys.add(dotted)
                (todo.append((dotted, value)) if isinstance(value, dict) else leaves.add(dotted))
    return keys, leaves


def near_keys(key: str, keys: set[str], cutoff: float = 0.6) -> list[str]:
    """Keys beside ``key`` with a close name: ``trainer.max_epoch`` -> ``trainer.max_epochs``."""
    import difflib

    parent, _, name = key.rpartition(".")
    siblings = {k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent}
    return [f"{parent}.{s}" if parent else s for s in difflib.get_close_matches(name, siblings, n=3, cutoff=cutoff)]


def suggest(key: str, keys: set[str]) -> list[str]:
    """Keys that ``key`` may have meant: longer keys that end with it (``optimizer.lr``: ``model.optimizer.lr``),
    else keys beside it with a close name, else close keys anywhere."""
    import difflib

    endings = sorted(k for k in keys if k.endswith("." + key))
    return endings or near_keys(key, keys) or difflib.get_close_matches(key, keys, n=3, cutoff=0.8)


def register_data_settings(config_dir: Path = CONFIG_DIR) -> None:
    """``data_settings``, src/eval.py's ``data`` node: every setting of the data configs (conf/data/*.yaml), null.
    A ``data.<key>=value`` of the command replaces the value in the checkpoint's run config (pipeline.evaluate),
    also for a key added to the data configs after the checkpoint was written."""
    from hydra.core.config_store import ConfigStore

    keys = {key for path in (config_dir / "data").glob("*.yaml") for key in load_yaml(path, "data")[1]}
    settings = dict.fromkeys(sorted(key for key in keys if not key.startswith("_") and key != "defaults"))
    ConfigStore.instance().store(name="data_settings", node=settings)


if (CONFIG_DIR / "data").is_dir():
    register_data_settings()


def check_command_line(config_name: str, argv: list[str] | None = None) -> None:
    """Before Hydra composes the config (and makes a run directory): fails with one line when a command-line
    key is in no config file (a typo, or a key under the wrong node), saying which key was meant, and when a key
    to add (``+trainer.max_epoch=3``) is a near miss of one beside it, which its target would refuse only once
    built (``++key=value`` adds it anyway). Group choices (``model=...``) are Hydra's: it lists the options."""
    argv = sys.argv[1:] if argv is None else argv
    other_configs = ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")  # Hydra decides
    if not CONFIG_DIR.is_dir() or any(
        a in ("-h", "--help", "--hydra-help") or a.startswith(other_configs) for a in argv
    ):
        return
    keys = leaves = None
    for arg in argv:
        key = arg.split("=", 1)[0]
        if arg.startswith(("-", "++")) or "=" not in arg or "/" in key or "@" in key:
            continue
        added, key = key.startswith("+"), key.lstrip("+~")
        if key.split(".")[0] == "hydra" or ("." not in key and (CONFIG_DIR / key).is_dir()):
            continue
        if keys is None:
            keys, leaves = known_keys(config_name)
        parts = key.split(".")
        if key in keys or any(".".join(parts[:n]) in leaves for n in range(1, len(parts))):
            continue
        if not added:
            near = suggest(key, keys)
            hint = f"did you mean {' or '.join(near)}?" if near else f"python {sys.argv[0]} --cfg job shows them"
            raise SystemExit(f"{key}: no such key in the config; {hint}")
        if near := near_keys(key, keys, cutoff=0.85):
            raise SystemExit(f"+{key}: did you mean {near[0]}? (++{key}=... adds {key} all the same)")


def check_missing_values(cfg: DictConfig) -> None:
    """Fails naming every key that the command must give (``???`` in the config: ``ckpt_path``, ``video``)."""
    if missing := sorted(OmegaConf.missing_keys(cfg)):
        raise ValueError(f"give {' '.join(f'{key}=<...>' for key in missing)}: no default")


def visible_cuda_devices() -> int | None:
    """How many CUDA GPUs this process may use, from NVIDIA's management library and ``CUDA_VISIBLE_DEVICES``
    (milliseconds, no torch; unlike CUDA's own count, it leaves no state that a forked process would inherit).
    None when it cannot tell: a ROCm machine (AMD GPUs), or a library without the functions."""
    import ctypes

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    if Path("/dev/kfd").exists():
        return None
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        init, get_count = nvml.nvmlInit_v2, nvml.nvmlDeviceGetCount_v2
    except OSError:  # no NVIDIA driver
        return 0
    except AttributeError:
        return None
    count = ctypes.c_uint(0)
    if init() != 0:
        return 0
    found = get_count(ctypes.byref(count)) == 0
    nvml.nvmlShutdown()
    if not found:
        return 0
    listed = len([d for d in visible.split(",") if d.strip()]) if visible else count.value
    return min(count.value, listed)


def check_accelerator(cfg: DictConfig) -> None:
    """``trainer.accelerator=gpu`` (``trainer=gpu``, ``trainer=ddp``) fails at once on a machine without a
    visible GPU, or with fewer than ``trainer.devices``, instead of in Lightning after the imports."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default=None)
    if accelerator not in ("gpu", "cuda") or sys.platform == "darwin":  # gpu on a Mac is MPS
        return
    count, devices = visible_cuda_devices(), OmegaConf.select(cfg, "trainer.devices", default=None)
    if count is None:
        return
    if count == 0:
        raise ValueError(f"trainer.accelerator={accelerator}: no GPU is visible on this machine; use trainer=cpu")
    if isinstance(devices, int) and devices > count:
        raise ValueError(f"trainer.devices={devices}: {count} GPU(s) visible; set trainer.devices={count} or fewer")


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


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with ``path`` as a checkpoint, found without torch (from its first bytes and its zip
    directory: milliseconds), or None when it looks whole. ``torch.load`` may still find damage inside."""
    if not path.is_file():
        return "is not a file"
    with path.open("rb") as file:
        head = file.read(64)
    if head[:1] == b"\x80":  # torch's legacy format: a pickle
        return None
    if not head.startswith(b"PK\x03\x04"):
        kind = "empty" if not head else "text" if head.isascii() else "neither a zip archive nor a pickle"
        return f"is not a checkpoint ({kind}; torch.save writes a zip archive)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return f"is damaged: a zip archive cut short or corrupted ({path.stat().st_size} bytes, no readable directory)"
    if not any(name.endswith("data.pkl") for name in names):
        return "is not a checkpoint (a zip archive without the data.pkl of torch.save)"
    return None


def check_checkpoint(path: Path, key: str = "ckpt_path") -> None:
    """Fails naming ``key=path`` and what is wrong with the file (:func:`checkpoint_problem`)."""
    problem = checkpoint_problem(path)
    if problem is not None:
        error = FileNotFoundError if problem == "is not a file" else ValueError
        raise error(f"{key}={str(path)!r} {problem}")


# What a resumed run may change in model.* and data.*: how it runs, not what the checkpoint was trained on.
RESUME_MAY_CHANGE = (
    *(f"data.{key}" for key in ("root", "num_workers", "decoder", "photometric_on", "max_bad_videos")),
    *(f"data.{key}" for key in ("skip_bad_eval_videos", "test_clips", "test_crops", "eval_split")),
    "model.compile",
)


def flat_items(cfg: DictConfig, prefix: str) -> dict[str, Any]:
    """The leaves of the node ``prefix`` of ``cfg`` by their dotted keys, resolved (None where they cannot be)."""

    def keys(node: Any, key: str) -> list[str]:
        if isinstance(node, dict) and node:
            return [k for name, child in node.items() for k in keys(child, f"{key}.{name}")]
        return [key]

    node = OmegaConf.select(cfg, prefix, default=None)
    tree = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    return {key: OmegaConf.select(cfg, key, throw_on_resolution_failure=False) for key in keys(tree, prefix)}


def check_resume_keeps_the_run(cfg: DictConfig, run_dir: Path) -> None:
    """Fails, naming the overrides, when ``resume=<run dir>`` would change the model or data that the run's
    ``.hydra/config.yaml`` records: its checkpoints belong to those. Trainer, callbacks and loggers may change
    (``trainer.max_epochs=<more>`` extends a run)."""
    record = run_dir / ".hydra"
    if not (record / "config.yaml").is_file():
        return
    saved = OmegaConf.load(record / "config.yaml")
    ours, theirs = ({}, {})
    for node in ("model", "data"):
        ours.update(flat_items(cfg, node))
        theirs.update(flat_items(saved, node))
    missing = "(absent)"
    changed = [
        key
        for key in sorted(ours.keys() | theirs.keys())
        if ours.get(key, missing) != theirs.get(key, missing) and not key.startswith(RESUME_MAY_CHANGE)
    ]
    if not changed:
        return
    choices = {}
    if (record / "hydra.yaml").is_file():
        choices = OmegaConf.select(OmegaConf.load(record / "hydra.yaml"), "hydra.runtime.choices", default={})
    from hydra.core.hydra_config import HydraConfig

    groups = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}

    def changes(key: str, value: str) -> bool:  # a group option, or a value that feeds model.* or data.*
        if key in groups:
            return choices.get(key) != value
        if any(c == key or c.startswith(f"{key}.") for c in changed):
            return True
        feeds = key.split(".")[0] not in ("model", "data", "trainer", "callbacks", "logger", "paths", "resume")
        get = {"default": None, "throw_on_resolution_failure": False}
        return feeds and OmegaConf.select(cfg, key, **get) != OmegaConf.select(saved, key, **get)

    named = [f"{key}={value}" for key, value in hydra_overrides().items() if changes(key, value)]
    first = changed[0]
    detail = f"{first}: {theirs.get(first, missing)!r} in the run, {ours.get(first, missing)!r} here"
    if len(changed) > 1:
        detail += f", and {len(changed) - 1} more"
    if named:
        raise ValueError(
            f"resume={cfg.resume}: {' '.join(named)} would change the run's model or data ({detail}); a resumed "
            "run keeps them: drop these overrides, or start a new run"
        )
    raise ValueError(
        f"resume={cfg.resume}: the model or data that this command composes differ from the run's "
        f"{record / 'config.yaml'} ({detail}; were the config files changed since?); a resumed run keeps them"
    )


def check_resume(cfg: DictConfig) -> None:
    """Fails when ``resume=<run dir>`` holds no whole checkpoint or would change the run's model or data, or when
    ``ckpt_path`` names no checkpoint file (``ckpt_path=last`` may find none: the run then starts from scratch).
    ``resume=<run dir> ckpt_path=<file>`` continues the run from that file."""
    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("resume"):
        run_dir = Path(cfg.resume)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"resume={cfg.resume}: no such run directory")
        newest = newest_checkpoint(run_dir)
        if newest is None:
            raise FileNotFoundError(f"resume={cfg.resume}: no checkpoints/last.ckpt or hpc_ckpt_*.ckpt in it")
        problem = checkpoint_problem(newest) if ckpt_path in (None, "last") else None
        if problem is not None:
            others = sorted(run_dir.glob("**/*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
            good = next((p for p in others if p != newest and checkpoint_problem(p) is None), None)
            offer = (
                f"; the previous good one is {good}: continue from it with resume={cfg.resume} ckpt_path={good}"
                if good
                else "; no other checkpoint in it is whole"
            )
            raise ValueError(f"resume={cfg.resume}: its newest checkpoint {newest} {problem}{offer}")
        check_resume_keeps_the_run(cfg, run_dir)
    if ckpt_path not in (None, "last", "best", "hpc"):
        check_checkpoint(Path(ckpt_path))


EXPORT_FORMATS = {"onnx": ".onnx", "torch_export": ".pt2"}  # src/export.py's format -> file suffix


def check_export(cfg: DictConfig) -> None:
    """src/export.py's ``format`` and ``batch_size`` (null: a dynamic batch dimension)."""
    if cfg.format not in EXPORT_FORMATS:
        raise ValueError(f"format={cfg.format!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    size = cfg.batch_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"batch_size={size!r}: expected a number of clips, or null for a dynamic batch dimension")


def check_prepare_data(cfg: DictConfig) -> None:
    """src/prepare_data.py's options (``vivit.data.prepare``: PyAV, no torch)."""
    from vivit.data.prepare import check_options

    check_options(cfg)


TASK_CHECKS = {"export": check_export, "prepare_data": check_prepare_data}  # task_name -> its own options


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no torch: the values the command must give, the network's rules, the checkpoint
    to resume, command-line types, the GPU that the trainer asks for, and the entry point's own options
    (:data:`TASK_CHECKS`). A mistake ends the command with its one-line message (exit status 1), no traceback."""
    checks = [check_network_config, check_resume, check_override_types, check_accelerator]
    if cfg.get("task_name") in TASK_CHECKS:
        checks.append(TASK_CHECKS[cfg.task_name])
    try:
        check_missing_values(cfg)
        for check in checks:
            check(cfg)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(str(error)) from None
