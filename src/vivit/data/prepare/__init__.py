"""A dataset prepared once for fast loading: every video re-encoded small and easy to seek, the annotations copied.

``python src/prepare_data.py data=<name> data.root=<raw> out=<prepared>`` reads each split with the dataset's
own annotation reader and re-encodes every video that the records reference, in a pool of processes:

- ``format=video``: to ``out`` at the same relative path and name, with the short side scaled down to
  ``short_side`` (never up), a keyframe at least every ``keyframe_interval`` frames (a seek then decodes
  fewer than that many extra frames), ``codec`` (libx264 or mpeg4) in yuv420p (even sizes), and the same
  frames: every decoded frame, in order, with index-based timestamps at the source's average frame rate
  (constant), so EPIC-KITCHENS' frame numbers keep pointing at the same frames. Audio is dropped. The
  container follows the suffix (.mp4: MP4, .mov: QuickTime), else Matroska: a ``.webm`` (SSv2) holds H.264
  in Matroska, which WebM restricts to VP8/VP9/AV1 but FFmpeg reads whatever the name, so every reader
  finds the file where it was.
- ``format=jpeg``: a folder of JPEG frames numbered from 1 (``frame_0000000001.jpg``) per video, where only
  the EPIC-KITCHENS reader looks for one: ``<participant>/rgb_frames/<video>/`` (train with
  ``data.annotations.frames=rgb_frames``). The other readers find their videos as files by name.

A source that is itself a folder of frames stays one (its frames resized, at the same path). Every output
is written under a temporary name, verified (it opens, has the source's frame count, and its first and
last frames decode at the expected size) and renamed into place, so a re-run skips what is done and
verified and redoes the rest. Every other file of the root (annotations, class lists) is copied as it
is; videos and images that no record references are left out. A bad source is reported with its reason
and the rows that use it; the others are still prepared.

The package, top-down: ``command`` (``src/prepare_data.py``: the options, the run, the report's notes),
``dataset`` (the records of each split, the pool of processes, the other files copied, the copy's records
compared), ``video`` (one video encoded or written as frames, and verified) and ``report`` (``PreparedData``).

It imports only PyAV at the top: ``src/prepare_data.py`` calls :func:`check_options` before torch is imported;
the decoder (torch) is imported where it is used.
"""

from vivit.data.prepare.command import check_options, run
from vivit.data.prepare.dataset import prepare_data
from vivit.data.prepare.video import Encoding, reencode

__all__ = ["Encoding", "check_options", "prepare_data", "reencode", "run"]
