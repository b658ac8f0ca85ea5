"""Which frames make a clip: the ViViT/DMVR convention of ``num_frames`` frames ``stride`` apart."""

from __future__ import annotations

import math
from typing import Literal

_EPS = 1e-6  # rate arithmetic: 30/25 * 5 must give frame 6, not 5.999...


def clip_span(num_frames: int, stride: int) -> int:
    """Frames spanned by ``num_frames`` frames ``stride`` apart; a shorter segment loops (:func:`clip_indices`)."""
    return (num_frames - 1) * stride + 1


def resampled_length(num_available: int, rate: float) -> int:
    """Frames of a segment of ``num_available`` native frames at the target rate (``rate``: as in :func:`clip_indices`):
    the target frames j with j * rate < num_available."""
    return num_available if rate == 1.0 else max(math.ceil(num_available / rate - _EPS), 1)


def clip_indices(
    num_available: int,
    num_frames: int,
    stride: int,
    *,
    offset: float | Literal["centre"] | tuple[int, int],
    rate: float = 1.0,
) -> list[int]:
    """0-based frame indices of one clip from a segment of ``num_available`` frames.

    The clip spans ``(num_frames - 1) * stride + 1`` frames. ``offset`` places it: a float in [0, 1]
    picks the start uniformly among the valid starts (training passes a random number), ``"centre"``
    centres it (validation). ``(k, K)`` is clip k of K evenly spaced ones, for multi-view testing: the
    starts are DMVR's ``linspace(0, max_start, K)``, truncated; ``(0, 1)`` is the centre clip. A segment
    shorter than the span loops from its first frame, as DMVR does.

    ``rate`` = native fps / target fps (``data.target_fps``; 1: the native frames, as ViViT and DMVR).
    Otherwise the clip is placed as above on the segment resampled to the target rate, ``stride`` counts
    target frames, and each target frame j (at time j / target fps) maps to the native frame showing
    then, ``floor(j * rate)``: SlowFast's ``TARGET_FPS``, so that a clip covers the same time at any
    native rate.
    """
    if num_available < 1 or num_frames < 1 or stride < 1 or not rate > 0:
        raise ValueError(
            f"need num_available, num_frames, stride >= 1 and rate > 0, got {num_available}, {num_frames}, "
            f"{stride}, {rate}"
        )
    if rate != 1.0:
        indices = clip_indices(resampled_length(num_available, rate), num_frames, stride, offset=offset)
        return [min(int(j * rate + _EPS), num_available - 1) for j in indices]
    span = clip_span(num_frames, stride)
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
