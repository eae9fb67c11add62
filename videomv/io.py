"""Atomic writes: a file or folder appears complete at its final path or not at all.

Everything is written under a temporary name in the destination's folder (same file system), then
renamed into place with `os.replace` / `Path.rename`; on any failure the temporary is removed.
The temporaries that `tempfile` creates are private (0600 / 0700); before the rename they get the
permissions a plain `open` / `mkdir` would give (the umask's), so results are as readable as any
other file the user writes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def current_umask() -> int:
    """The process's umask (read by setting and restoring it: there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` to produce the file, then move it to `path`. The file gets the mode
    of the file it replaces, else 0666 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~current_umask()
        os.chmod(tmp, mode)
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
    `out` is replaced when `replace`, else it must be absent or empty). A symbolic link `out` to a
    folder is followed: the folder it points to is the one filled. The folder gets the umask's
    permissions."""
    path = Path(path)
    if path.is_symlink() and path.is_dir():
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # what it holds was created with the umask already
        if path.exists():
            if replace:
                shutil.rmtree(path)
            else:
                path.rmdir()  # raises unless empty
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
