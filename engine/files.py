"""Files written whole or not at all: model files and state snapshots."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def write_npz_atomically(path: Path, arrays: dict[str, np.ndarray], *, mode: int) -> None:
    """Write `arrays` to `path` as .npz with permissions `mode`, so that a reader (or a crash)
    sees the old file or the new one, never part of one: a temp file in the same folder,
    fsync, rename, then fsync of the folder where the platform allows it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # mkstemp's own 0600 would decide for the caller
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is done and the file whole: a folder that cannot be synced (some filesystems
    # refuse) leaves only the rename's durability to the kernel, not a failed write.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
