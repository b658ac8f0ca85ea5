"""Which frames make a clip: the ViViT/DMVR convention of ``num_frames`` frames ``stride`` apart."""

from __future__ import annotations

from typing import Literal


def clip_indices(
    num_available: int, num_frames: int, stride: int, *, offset: float | Literal["centre"] | tuple[int, int]
) -> list[int]:
    """0-based frame indices of one clip from a segment of ``num_available`` frames.

    The clip spans ``(num_frames - 1) * stride + 1`` frames. ``offset`` places it: a float in [0, 1]
    picks the start uniformly among the valid starts (training passes a random number), ``"centre"``
    centres it (validation). ``(k, K)`` is clip k of K evenly spaced ones, for multi-view testing: the
    starts are DMVR's ``linspace(0, max_start, K)``, truncated; ``(0, 1)`` is the centre clip. A segment
    shorter than the span loops from its first frame, as DMVR does.
    """
    if num_available < 1 or num_frames < 1 or stride < 1:
        raise ValueError(f"need num_available, num_frames, stride >= 1, got {num_available}, {num_frames}, {stride}")
    span = (num_frames - 1) * stride + 1
    max_start = max(num_available - span, 0)
    if offset == "centre" or offset == (0, 1):
        start = max_start // 2
    elif isinstance(offset, tuple) and len(offset) == 2 and 0 <= offset[0] < offset[1]:
        start = offset[0] * max_start // (offset[1] - 1)
    elif isinstance(offset, (int, float)) and 0.0 <= offset <= 1.0:
        start = min(int(offset * (max_start + 1)), max_start)  # uniform over 0..max_start for offset ~ U[0, 1)
    else:
        raise ValueError(f"offset must be 'centre', a number in [0, 1] or (k, K) with 0 <= k < K, got {offset!r}")
    return [(start + i * stride) % num_available for i in range(num_frames)]
