"""Video data: the built-in moving-digits dataset, readers of real datasets' annotations, decoding and loaders.

Names are imported on first use, so that ``python -m vivit.data.moving_digits`` neither imports Lightning
nor finds its module already imported by this package (runpy warns about that).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vivit.data.clips import Batch, VideoClipDataset
    from vivit.data.datamodule import VideoDataModule
    from vivit.data.decoding import VideoDecodeError, decode_frames
    from vivit.data.epic_kitchens import read_epic_kitchens_100, read_epic_kitchens_class_names
    from vivit.data.hmdb51 import read_hmdb51, read_hmdb51_class_names
    from vivit.data.kinetics import read_kinetics, read_kinetics_class_names
    from vivit.data.moments_in_time import read_moments_class_names, read_moments_in_time
    from vivit.data.moving_digits import generate_moving_digits
    from vivit.data.moving_digits_hard import generate_moving_digits_hard
    from vivit.data.records import VideoRecord
    from vivit.data.split_datamodule import OfficialSplitsDataModule
    from vivit.data.ssv2 import read_ssv2, read_ssv2_class_names
    from vivit.data.ucf101 import read_ucf101, read_ucf101_class_names
    from vivit.data.video_csv import read_video_csv, read_video_csv_class_names

_EXPORTS = {
    "Batch": "clips",
    "VideoClipDataset": "clips",
    "VideoDataModule": "datamodule",
    "OfficialSplitsDataModule": "split_datamodule",
    "VideoRecord": "records",
    "VideoDecodeError": "decoding",
    "decode_frames": "decoding",
    "read_epic_kitchens_100": "epic_kitchens",
    "read_epic_kitchens_class_names": "epic_kitchens",
    "read_hmdb51": "hmdb51",
    "read_hmdb51_class_names": "hmdb51",
    "read_kinetics": "kinetics",
    "read_kinetics_class_names": "kinetics",
    "read_moments_class_names": "moments_in_time",
    "read_moments_in_time": "moments_in_time",
    "generate_moving_digits": "moving_digits",
    "generate_moving_digits_hard": "moving_digits_hard",
    "read_ssv2": "ssv2",
    "read_ssv2_class_names": "ssv2",
    "read_ucf101": "ucf101",
    "read_ucf101_class_names": "ucf101",
    "read_video_csv": "video_csv",
    "read_video_csv_class_names": "video_csv",
}
__all__ = [
    "Batch",
    "OfficialSplitsDataModule",
    "VideoClipDataset",
    "VideoDataModule",
    "VideoDecodeError",
    "VideoRecord",
    "decode_frames",
    "generate_moving_digits",
    "generate_moving_digits_hard",
    "read_epic_kitchens_100",
    "read_epic_kitchens_class_names",
    "read_hmdb51",
    "read_hmdb51_class_names",
    "read_kinetics",
    "read_kinetics_class_names",
    "read_moments_class_names",
    "read_moments_in_time",
    "read_ssv2",
    "read_ssv2_class_names",
    "read_ucf101",
    "read_ucf101_class_names",
    "read_video_csv",
    "read_video_csv_class_names",
]


RENAMED = {"read_class_names": "read_epic_kitchens_class_names"}  # old name -> new, as in earlier run configs


def __getattr__(name: str) -> Any:
    name = RENAMED.get(name, name)  # a checkpoint's stored config may name a reader by its old name
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"vivit.data.{_EXPORTS[name]}"), name)
