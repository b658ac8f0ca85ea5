"""How the benchmark measures: :class:`Bench` builds each model on one device, times its training steps and
inference calls (several models taking turns), and keeps the results."""

from __future__ import annotations

import datetime
import gc
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vivit.benchmark.models import NUM_CLASSES, Setting
from vivit.benchmark.report import Result, ResultsFile, format_result
from vivit.models import count_macs, count_params
from vivit.models.layers import attention_priority


@dataclass
class Entry:
    """One model to measure: its builder, and how it runs (see ``Bench.measure``)."""

    name: str
    build: Callable[[], nn.Module]
    compile: bool = False
    attention: list[str] | None = None
    infer: bool = True
    train: bool = True
    notes: dict = field(default_factory=dict)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def warm_up(mode: Callable[[], object], call: Callable[[], object], calls: int) -> None:
    """Compilation, kernel choice, allocator caches: ``calls`` untimed calls in ``mode`` (train or eval)."""
    mode()
    for _ in range(calls):
        call()


def matmul_peak_flops(device: torch.device) -> float | None:
    """Measured bf16 matmul FLOP/s (8192³ products), the denominator of MFU; None on CPU."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    seconds = seconds_per_call(lambda: a @ b, steps=20, warmup=5, device=device)
    return 2 * 8192**3 / seconds


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return platform.processor() or "CPU"


class Bench:
    """Runs measurements on one device and keeps the results (JSON after each measurement)."""

    def __init__(self, device: torch.device, file: ResultsFile | None = None) -> None:
        self.device = device
        self.dtype = torch.bfloat16 if device.type == "cuda" else None  # autocast on GPU only
        self.name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
        self.peak = matmul_peak_flops(device)
        self.results: list[Result] = []
        self.file = file  # where the results are written after each measurement
        self.suite: str | None = None  # the suite being measured
        self.meta = {
            "device": self.name,
            "torch": torch.__version__,
            "matmul_peak_tflops": self.peak and round(self.peak / 1e12, 1),
            "threads": torch.get_num_threads(),
            "measured": {},  # suite: date and torch version
        }

    @contextmanager
    def measuring(self, suite: str) -> Iterator[None]:
        """Tags the results measured inside with ``suite``, dated."""
        self.suite = suite
        self.meta["measured"][suite] = f"{datetime.date.today().isoformat()}, torch {torch.__version__}"
        try:
            yield
        finally:
            self.suite = None

    def clip(self, s: Setting, batch: int, channels_first: bool = True) -> Tensor:
        shape = (batch, 3, s.frames, s.resolution, s.resolution)
        video = torch.randn(shape, device=self.device)
        return video if channels_first else video.transpose(1, 2).contiguous()  # (B, T, C, H, W)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def measure(
        self,
        name: str,
        build: Callable[[], nn.Module],
        s: Setting,
        compile: bool = False,
        infer: bool = True,
        train: bool = True,
        attention: list[str] | None = None,
        **notes,
    ) -> Result:
        """One model alone. ``attention``: SDPA backends in priority order (cudnn, flash, efficient, math),
        else torch's choice."""
        (result,) = self.side_by_side(s, [Entry(name, build, compile, attention, infer, train, notes)])
        return result

    def side_by_side(self, s: Setting, entries: list[Entry], rounds: int = 1) -> list[Result]:
        """Measures ``entries`` taking turns: each is built, compiled and warmed up, then in each of ``rounds``
        rounds each entry in turn runs ``s.steps`` timed training steps and inference calls. A figure is the
        median over rounds. Turns spread the slow spells of a shared machine (other tenants, clock changes)
        over all entries alike (experiments/benchmark/README.md). Peak memory is measured only for an entry
        that is alone on the device."""
        alone = len(entries) == 1
        if rounds == 1 and len(entries) > 1:  # no turns: one at a time, each alone on the device
            return [result for entry in entries for result in self.side_by_side(s, [entry])]
        if any(entry.compile for entry in entries):
            torch._dynamo.reset()  # a fresh cache: no recompile limit carried over from earlier models
        results, runs = [], []
        for entry in entries:
            notes = {"compile": entry.compile, "attention": entry.attention}
            result = Result(entry.name, s.frames, notes=notes, suite=self.suite)
            result.notes.update(entry.notes)
            results.append(result)
            with self.failures(result):
                runs.append((result, self.prepare(entry, s, result, alone), {}))  # {kind: seconds per call, by round}
        self.take_turns(runs, rounds, s)
        timings = [(result, taken) for result, _, taken in runs]
        # Free the models and their optimisers. No name may hold a run's calls: a loop over runs would keep the
        # last one's model alive through the next measurement.
        del runs
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        for result, taken in timings:
            for kind, batch in (("train", s.train_batch), ("infer", s.infer_batch)):
                if kind in taken and not result.error:
                    setattr(result, f"{kind}_clips_s", round(batch / statistics.median(taken[kind]), 2))
                    if rounds > 1:
                        result.notes[f"{kind} rounds"] = [round(batch / t, 2) for t in taken[kind]]
            if self.peak and result.gmacs and result.train_clips_s:  # training ≈ 3 forward passes, 2 FLOPs per MAC
                result.train_mfu = round(6 * result.gmacs * 1e9 * result.train_clips_s / self.peak, 3)
        for result in results:
            self.record(result, save=False)
        self.save()
        return results

    def record(self, result: Result, save: bool = True) -> None:
        """Keeps ``result``, prints it and (``save``) writes the results."""
        self.results.append(result)
        print(format_result(result), flush=True)
        if save:
            self.save()

    def take_turns(self, runs: list[tuple[Result, dict, dict]], rounds: int, s: Setting) -> None:
        """``rounds`` rounds in which each run in turn makes ``s.steps`` timed calls of each kind; the mean
        time of a call is appended to the run's ``{kind: [seconds, ...]}``."""
        for _ in range(rounds):
            for result, calls, taken in runs:
                for kind, (mode, call) in calls.items():
                    if result.error:
                        break
                    with self.failures(result):
                        mode()  # model.train() or model.eval()
                        taken.setdefault(kind, []).append(seconds_per_call(call, s.steps, 0, self.device))

    @contextmanager
    def failures(self, result: Result) -> Iterator[None]:
        """Records a model that does not fit (or cannot be built at this size) as the result's error."""
        try:
            yield
        except torch.OutOfMemoryError:
            result.error = "out of memory"
        except ValueError as error:  # e.g. Model 4 with an odd number of heads (ViViT-Ti)
            result.error = str(error).split(";")[0]

    def prepare(self, entry: Entry, s: Setting, result: Result, alone: bool) -> dict[str, tuple[Callable, Callable]]:
        """Counts the entry's parameters and MACs, builds it on the device and returns its warmed-up timed
        calls, by kind ("train", "infer"), each with the mode it runs in. On GPU, an entry ``alone`` on the
        device gets the peak memory of a training step, taken before the inference clip exists."""
        torch.manual_seed(0)
        with torch.device("meta"):
            meta = entry.build()
        channels_first = getattr(meta, "channels_first", True)
        result.params_m = round(count_params(meta) / 1e6, 2)
        # The FLOP counter runs on meta tensors: no memory, no time.
        clip = (1, 3, s.frames) if channels_first else (1, s.frames, 3)
        result.gmacs = round(count_macs(meta, (*clip, s.resolution, s.resolution)) / 1e9, 1)
        del meta
        with self.device:
            model = entry.build()
        if entry.compile:
            model.compile()
        attention = attention_priority(entry.attention)
        calls = {}
        if entry.train:
            calls["train"] = (model.train, self.train_step(model, s, channels_first, attention))
            warm_up(*calls["train"], s.warmup)
            if alone and self.device.type == "cuda":  # one more step, measured
                torch.cuda.reset_peak_memory_stats(self.device)
                calls["train"][1]()
                result.train_peak_gib = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        if entry.infer:
            calls["infer"] = (model.eval, self.infer_call(model, s, channels_first, attention))
            warm_up(*calls["infer"], s.warmup)
        return calls

    def train_step(self, model: nn.Module, s: Setting, channels_first: bool, attention) -> Callable[[], None]:
        """A full training step: forward (bf16 autocast on GPU), loss, backward, fused AdamW."""
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
        video = self.clip(s, s.train_batch, channels_first)
        labels = torch.randint(NUM_CLASSES, (s.train_batch,), device=self.device)

        def step() -> None:
            with self.autocast(), attention():
                logits = model(video)
            F.cross_entropy(logits.float(), labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    def infer_call(self, model: nn.Module, s: Setting, channels_first: bool, attention) -> Callable[[], None]:
        video = self.clip(s, s.infer_batch, channels_first)

        def forward() -> None:
            with torch.inference_mode(), self.autocast(), attention():
                model(video)

        return forward

    def save(self) -> None:
        """Writes the results so far to ``file`` (none: they are only kept)."""
        if self.file is not None:
            self.file.save(self.meta, self.results)
