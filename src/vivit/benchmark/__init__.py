"""`make bench`: speed and size of every ViViT variant, side by side with its peers, in one process.

For each variant × tokeniser at one size it measures parameters, forward GMACs (the paper's unit),
training throughput (a full step: bf16 autocast on GPU, loss, backward, optimiser), inference
throughput, peak memory and, on GPU, the model-FLOPs utilisation of training against the device's
measured bf16 matmul peak. In the same run it measures transformers' ``VivitForVideoClassification``
and a Model 1 assembled from timm ViT blocks (compiled), and prints our ratios to them; on CPU the
peers take turns (``--rounds``), so that a slow spell of the machine does not fall on one of them. A frames
sweep (Models 1 and 2) and a long-clip run (ViViT-L, activation checkpointing) complete it.

Imports only torch, einops, timm and transformers, so it runs on a bare GPU image::

    PYTHONPATH=src python -m vivit.benchmark --out experiments/benchmark/results

Results go to ``<out>/<device>.json`` (written after every measurement) and ``<out>/<device>.md``;
``--plot`` also draws the frames sweep (needs matplotlib). At another setting than the device's default
(``--size``, ``--frames``), they go to ``<out>/<device>_<size>_<frames>f.*`` instead, so a quick run does not
replace the committed results; ``--name`` chooses the file. A run of some suites keeps the other suites' rows
from the file's earlier results at the same setting, each suite dated (``meta["measured"]``), so re-running
one suite, or a run cut off part way, loses nothing.

The package, top-down:

- ``cli``: the command line; runs the suites asked for and writes the results.
- ``suites``: what each suite measures (peers, variants, long, attention, loader, frames).
- ``bench``: :class:`Bench`, which builds, compiles, warms up and times the models on one device.
- ``models``: the networks measured (ours, timm blocks, transformers) and the :class:`Setting` they run at.
- ``report``: the results: JSON, markdown, the printed lines and the frames plot.
"""

from vivit.benchmark.bench import Bench, Entry, seconds_per_call
from vivit.benchmark.models import SIZES, Setting, build_vivit
from vivit.benchmark.report import Result

__all__ = ["SIZES", "Bench", "Entry", "Result", "Setting", "build_vivit", "seconds_per_call"]
