"""Pre-train a small image ViT on single frames of the built-in dataset (the digit is the label).

It stands in for the ImageNet-21k ViT that the paper starts from, so that the initialisation
experiments (Table 1) run offline on a CPU:

    python -m vivit.image_pretraining data/moving_digits experiments/table1_input_encoding/image_vit.pth

The result is a timm ``VisionTransformer`` state dict with the sizes of ``backbone=micro``, ready
for ``init=image_vit init.source=<path>``.
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from vivit.data import decode_frames, read_epic_kitchens_100

log = logging.getLogger(__name__)


def frames_and_digits(root: Path, split: str, frames_per_clip: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 frames (N, 3, H, W) sampled from every clip of ``split``, with the clip's noun (digit) label."""
    rng = random.Random(seed)
    images, labels = [], []
    for record in read_epic_kitchens_100(root, split):
        indices = sorted(rng.sample(range(record.start, record.stop), frames_per_clip))
        images.append(torch.from_numpy(decode_frames(record.path, indices)).permute(0, 3, 1, 2))  # (n, 3, H, W)
        labels += [record.labels["noun"]] * frames_per_clip
    return torch.cat(images), torch.tensor(labels)


def normalise_crop(images: torch.Tensor, size: int, train: bool) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float in [-1, 1], random (train) or centre crop of ``size``."""
    h, w = images.shape[-2:]
    if train:
        top, left = int(torch.randint(h - size + 1, ())), int(torch.randint(w - size + 1, ()))
    else:
        top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size].float() / 127.5 - 1


def pretrain_image_vit(
    root: str | Path,
    out: str | Path,
    *,
    embed_dim: int = 96,
    depth: int = 4,
    num_heads: int = 4,
    patch_size: int = 8,
    img_size: int = 32,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    frames_per_clip: int = 4,
    seed: int = 0,
) -> float:
    """Train on the train split, save the state dict to ``out``; returns validation digit accuracy."""
    torch.manual_seed(seed)
    root = Path(root)
    train_x, train_y = frames_and_digits(root, "train", frames_per_clip, seed)
    val_x, val_y = frames_and_digits(root, "val", 1, seed)
    sizes = dict(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads)
    vit = VisionTransformer(**sizes, num_classes=int(train_y.max()) + 1)
    optimizer = torch.optim.AdamW(vit.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * (len(train_x) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    for epoch in range(epochs):
        vit.train()
        order = torch.randperm(len(train_x))
        for i in range(len(train_x) // batch_size):
            batch = order[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(vit(normalise_crop(train_x[batch], img_size, train=True)), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        vit.eval()
        with torch.no_grad():
            accuracy = (vit(normalise_crop(val_x, img_size, train=False)).argmax(-1) == val_y).float().mean().item()
        log.info("epoch %d: loss %.3f, val digit accuracy %.3f", epoch, loss.item(), accuracy)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(vit.state_dict(), out)
    return accuracy


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the built-in dataset, e.g. data/moving_digits (generate it with make train)")
    parser.add_argument("out", help="where to write the state dict (.pth)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"val digit accuracy: {pretrain_image_vit(args.root, args.out, epochs=args.epochs, seed=args.seed):.3f}")
