"""Atomic writes: a file or folder appears complete at its final path or not at all.

Everything is written under a temporary name in the destination's folder (same file system), then
renamed into place with `os.replace` / `Path.rename`; on any failure the temporary is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` to produce the file, then move it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """`with atomic_directory(out) as tmp:` fill `tmp`; on success it becomes `out` (an existing
    `out` is replaced when `replace`, else it must be absent or empty)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if replace:
                shutil.rmtree(path)
            else:
                path.rmdir()  # raises unless empty
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
