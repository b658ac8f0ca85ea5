"""The package's import rules (README, "Architecture"): each layer imports only what it may, so that a network can
be used without Lightning or Hydra, data without models, and a bad command fails before torch is imported."""

import json
import subprocess
import sys

import pytest

# package -> the modules that nothing in it may import (its submodules included)
FORBIDDEN = {
    "vivit.models": ["lightning", "hydra", "omegaconf", "vivit.data", "vivit.training", "vivit.pipeline"],
    "vivit.data": ["hydra", "omegaconf", "vivit.models", "vivit.training", "vivit.pipeline"],
    "vivit.training": ["hydra", "vivit.data", "vivit.pipeline"],
    "vivit.rules": ["torch"],
    "vivit.config": ["torch", "lightning"],
    "vivit.schemas": ["torch", "lightning"],
    "vivit.resume": ["torch", "lightning"],
    "vivit.run_directory": ["torch", "lightning"],
}

IMPORT_ALL = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for module in pkgutil.walk_packages(getattr(package, "__path__", []), sys.argv[1] + "."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("package", FORBIDDEN)
def test_each_layer_imports_only_what_it_may(package):
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL, package], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    found = [name for name in FORBIDDEN[package] if name in loaded or any(m.startswith(name + ".") for m in loaded)]
    assert not found, f"{package} (with its submodules) imports {found}"
