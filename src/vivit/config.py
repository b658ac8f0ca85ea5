"""What a run's config needs before torch is imported: the resolvers that conf/ uses, the schemas that type it
(:mod:`vivit.schemas`, registered on import), and the checks that fail a bad command line at once, naming the key
or the combination.

Imports only Hydra, OmegaConf and ``vivit.rules``: the entry points in ``src/`` call :func:`check_command_line`
before Hydra's run starts (a key that no config has, a value of the wrong type: what composing refuses, in one
line) and :func:`check_config` before they import the pipeline (torch, Lightning, timm: seconds), so a mistake
costs no more than Hydra's start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
import sys
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

import vivit.schemas  # noqa: F401  (registers the config schemas in Hydra's ConfigStore)
from vivit.resume import check_resume  # torch-free: the checkpoint to resume, checked at once
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


def record_dir(resume: str | None, stamp: str, output_dir: str | None) -> str:
    """Where Hydra writes a run's record (``hydra.output_subdir``): ``.hydra``, unless the run directory has one
    already (``resume=``, a sweep's job run again, ``hydra.run.dir`` of a finished run) or another run is using
    it (a multirun's job, whose record Hydra writes before the job can be refused): the record stays the run's
    own, and this command's goes to ``.hydra/resumed/<stamp>``."""
    from vivit.run_directory import in_use_by_another

    again = resume or (
        output_dir and ((Path(output_dir) / ".hydra" / "config.yaml").is_file() or in_use_by_another(output_dir))
    )
    return f".hydra/resumed/{stamp}" if again else ".hydra"


OmegaConf.register_new_resolver("record_dir", record_dir, replace=True)
# ${or_else:value,default}: the value unless it is null or empty. oc.select alone falls back only when a
# key is absent, and train.yaml's resume is present and null (conf/hydra/default.yaml's run directory).
OmegaConf.register_new_resolver(
    "or_else", lambda value, default: default if value in (None, "") else value, replace=True
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"  # the project's conf/, beside src/


def hydra_overrides() -> dict[str, str]:
    """This run's command-line overrides as key -> value (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    pairs = (o.split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o)
    return {k.lstrip("+~"): v for k, v in pairs}


def check_command_line(config_name: str, argv: list[str] | None = None) -> None:
    """Before Hydra's run starts (and makes a run directory): composes the config as Hydra will, so that what
    Hydra refuses is answered in one line: a key that no config has (``trainer.max_epoch=3``: "did you mean
    trainer.max_epochs?") and a value of the wrong type (``data.batch_size=sixteen``: the types are the schemas
    of :mod:`vivit.schemas`). A key to add (``+trainer.max_epoch=3``), which Hydra takes, fails when it is a near
    miss of one beside it (``++key=value`` adds it all the same). A misspelled option (``model=...``), a sweep's
    values and Hydra's flags are left to Hydra, which lists the options."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    argv = sys.argv[1:] if argv is None else argv
    if not CONFIG_DIR.is_dir() or any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return  # --help, --cfg job, another config directory or name: Hydra's
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except OverrideParseException:
        return
    overrides = [o.input_line for o in parsed if not o.is_sweep_override()]
    if all(o.key_or_group.startswith("hydra") or (CONFIG_DIR / o.key_or_group).is_dir() for o in parsed):
        return  # only options of groups (model=...) and Hydra's own keys: nothing of ours to type
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = compose(config_name, overrides)
        except MissingConfigException:
            return
        except ConfigCompositionException as error:
            raise SystemExit(composition_error(error, config_name, overrides)) from None
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith("+") and not key.startswith("++"):
            key = key[1:]
            siblings = {k for k in dotted_keys(cfg) if k != key}
            if near := near_keys(key, siblings, cutoff=0.85):
                raise SystemExit(f"+{key}: did you mean {near[0]}? (++{key}=... adds {key} all the same)")


def composition_error(error: Exception, config_name: str, overrides: list[str]) -> str:
    """One line for a config that Hydra could not compose (several lines from Hydra): the key, the value given
    and the type its schema expects, or what was meant by a key that no config has."""
    from hydra import compose
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigKeyError, ValidationError

    cause, override = error.__cause__, failed_override(error, overrides)
    key, _, value = (override or "").lstrip("+~").partition("=")
    if isinstance(cause, ValidationError) and key == cause.full_key:
        hints = typing.get_type_hints(cause.object_type) if dataclasses.is_dataclass(cause.object_type) else {}
        if cause.key in hints:
            return f"{key}={value!r}: expected {type_name(hints[cause.key])}"
    if isinstance(cause, (ConfigKeyError, AttributeError)) and override:  # a key that no config has
        keys, others = set(), [o for o in overrides if o != override]
        while not keys:  # the keys there are, composed without the overrides that fail
            try:
                keys = dotted_keys(compose(config_name, others))
            except ConfigCompositionException as other:
                if (failed := failed_override(other, others)) is None:
                    break
                others.remove(failed)
        near = suggest(key, keys)
        hint = f"did you mean {' or '.join(near)}?" if near else f"python {sys.argv[0]} --cfg job shows them"
        return f"{key}: no such key in the config; {hint}"
    lines = [" ".join(str(error).split()), *(str(cause).splitlines()[:1] if cause is not None else [])]
    return ": ".join(line.strip().rstrip(".") for line in lines if line.strip())


def failed_override(error: Exception, overrides: list[str]) -> str | None:
    """The override that Hydra's ``error`` is about: the one it names ("Error merging override ..."), else the
    last whose key the error names, or a key below it (``optimizer.lr=0.1``: no key ``optimizer``)."""
    named = str(error).removeprefix("Error merging override ")
    if named in overrides:
        return named
    failed = getattr(error.__cause__, "full_key", None)
    keys = {o: o.split("=", 1)[0].lstrip("+~") for o in reversed(overrides)}
    return next((o for o, k in keys.items() if failed and (k == failed or k.startswith(f"{failed}."))), None)


def type_name(hint: Any) -> str:
    """How a schema's type reads in a message: ``int | None`` -> "an integer, or null"."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if type(None) in typing.get_args(hint):
        return f"{type_name(args[0])}, or null"
    if typing.get_origin(hint) is list:
        return f"a list of {PLURALS.get(args[0], 'values') if args else 'values'}, in brackets: [x, y, ...]"
    if dataclasses.is_dataclass(hint):
        return f"a node of keys ({', '.join(f.name for f in dataclasses.fields(hint))})"
    return TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "text"}
PLURALS = {int: "integers", float: "numbers", bool: "booleans", str: "names"}


def dotted_keys(cfg: DictConfig) -> set[str]:
    """Every key of ``cfg``, dotted (``trainer.max_epochs``), its values left unresolved."""
    keys, todo = set(), [("", OmegaConf.to_container(cfg, resolve=False))]
    while todo:
        prefix, node = todo.pop()
        for key, value in node.items() if isinstance(node, dict) else ():
            keys.add(f"{prefix}{key}")
            todo.append((f"{prefix}{key}.", value))
    return keys


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


# Keys that take a boolean or a word, which a schema cannot type (OmegaConf 2.3 has no unions), or only a few
# values: key -> the values.
CHOICES = {
    "trainer.deterministic": [True, False, "warn"],  # Lightning takes any other text silently
    "data.split": [1, 2, 3],  # data=ucf101, hmdb51: the official splits (vivit.data.official_splits)
    "init.classifier": ["keep", "replace"],  # init=hf_vivit, scenic_vivit (vivit.models.init.common)
}


def check_choices(cfg: DictConfig) -> None:
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and (type(value), value) not in {(type(a), a) for a in allowed}:
            words = [OmegaConf.to_yaml({"v": a})[3:].strip() for a in allowed]  # as yaml writes them: true
            raise ValueError(f"{key}={value!r}: expected {', '.join(words[:-1])} or {words[-1]}")


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
    Values that a node leaves out take the constructor's defaults, which keep the rules; values of another type
    are left to the schemas (:mod:`vivit.schemas`) and the constructors."""
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


EXPORT_FORMATS = {"onnx": ".onnx", "torch_export": ".pt2"}  # src/export.py's format -> file suffix


def check_export(cfg: DictConfig) -> None:
    """src/export.py's ``format`` and ``batch_size`` (null: a dynamic batch dimension)."""
    if cfg.format not in EXPORT_FORMATS:
        raise ValueError(f"format={cfg.format!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    size = cfg.batch_size
    if size is not None and size < 1:  # an integer or null: vivit.schemas.ExportSchema
        raise ValueError(f"batch_size={size!r}: expected a number of clips, or null for a dynamic batch dimension")


def check_prepare_data(cfg: DictConfig) -> None:
    """src/prepare_data.py's options (``vivit.data.prepare``: PyAV, no torch)."""
    from vivit.data.prepare import check_options

    check_options(cfg)


def check_data_root(cfg: DictConfig) -> None:
    """A ``data.root`` that holds no dataset (absent, a file, an empty directory) fails as the data module would
    fail it after the imports (:func:`vivit.data.annotations.layout_error`: what was looked for, the layout
    expected, src/check_data.py). The annotation readers import no torch. A root with files in it is left to the
    data module, and so is a dataset made on first use (``data.generate``)."""
    data = cfg.get("data")
    if not isinstance(data, DictConfig) or data.get("generate") is not None or not data.get("annotations"):
        return
    root = Path(data.root)
    if root.is_dir() and any(root.iterdir()):
        return
    from hydra.utils import instantiate

    from vivit.data.annotations import layout_error

    reader = instantiate(data.annotations)
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise layout_error(f"data.root={root} {what}", reader, root)
    try:  # as the data module reads first: the class names, else the training split
        if data.get("classes"):
            instantiate(data.classes)(root)
        else:
            reader(root, "train")
    except FileNotFoundError as error:  # what was looked for
        raise layout_error(f"data.root={root} is empty: {error}", reader, root) from None


# task_name -> the checks of its own options
TASK_CHECKS = {
    "train": [check_data_root],
    "check_data": [check_data_root],
    "export": [check_export],
    "prepare_data": [check_prepare_data, check_data_root],
}


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no torch: the values the command must give, the network's rules, the checkpoint
    to resume, the values of :data:`CHOICES`, the GPU that the trainer asks for, and the entry point's own
    options (:data:`TASK_CHECKS`); the types are Hydra's (:mod:`vivit.schemas`). A mistake ends the command with
    its one-line message (exit status 1), no traceback."""
    checks = [check_network_config, check_resume, check_choices, check_accelerator]
    checks += TASK_CHECKS.get(cfg.get("task_name"), [])
    try:
        check_missing_values(cfg)
        for check in checks:
            check(cfg)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(str(error)) from None
