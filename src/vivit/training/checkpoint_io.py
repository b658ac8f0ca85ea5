"""Checkpoint files that are whole or absent, never truncated; and read with an answer that names the file."""

from __future__ import annotations

import errno
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from fsspec.utils import get_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vivit.resume import check_checkpoint

__all__ = ["AtomicCheckpointIO", "read_checkpoint"]

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk full, quota exceeded, file size limit (ulimit -f)


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A checkpoint file's content on CPU, tensors only (``weights_only``: no code runs), memory-mapped. A file
    that is not a whole checkpoint fails in one line naming ``key=path`` and what is wrong with it."""
    path = Path(path)
    check_checkpoint(path, key)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:  # not torch's advice (weights_only=False): it would run the file's code
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
        if found:
            raise ValueError(f"{key}={str(path)!r} holds {found.group(1)}: only tensors and values load") from None
        reason = str(error).partition("WeightsUnpickler error:")[2].strip().split("\n")[0] or "unreadable"
        raise ValueError(f"{key}={str(path)!r} is damaged: its pickled data cannot be read ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{key}={str(path)!r} is damaged: {reason}") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a local checkpoint to a temporary file in its own directory, flushes it to disk and renames it
    over the target. A kill at any moment leaves the previous file or the new one, both complete.

    Lightning's own writer stages the file in the system's temporary directory: when that is another file
    system (a tmpfs, a node-local disk), the final move is a copy, which a kill can leave half-written, and
    nothing is flushed to disk. Remote paths (``s3://``, ...) go to Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None or get_protocol(str(path)) != "file":
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, Path(path))


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)``, atomically: temporary file in the same directory, fsync, ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed while writing
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    file = os.fdopen(fd, "wb")
    writer = RecordingWriter(file)  # torch's zip writer reports a failed write as "unexpected pos": keep the cause
    try:
        with file:
            torch.save(obj, writer)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file (mkstemp's is private)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        cause = writer.error or error
        if isinstance(cause, OSError) and cause.errno in NO_SPACE:
            raise OSError(cause.errno, f"no space left writing {path} ({cause.strerror})") from None
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


class RecordingWriter:
    """A binary file for ``torch.save`` that keeps the ``OSError`` of a failed write (torch's zip writer replaces
    it with a message that names neither the file nor the cause)."""

    def __init__(self, file: Any) -> None:
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()
