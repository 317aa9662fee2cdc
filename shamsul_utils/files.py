"""Atomic file writes: write to a temporary file beside the target, then rename.

A reader never sees a half-written file. The temporary file is flushed to disk (fsync) before
the rename, and the folder after it, so a power loss leaves the old file or the new one, never an
empty one. A run killed mid-write leaves at most a ``.<name>.<random>.tmp`` file, which
:func:`remove_stale_temporaries` deletes when the next chain starts. Files get the usual
permissions of a new file (``0666`` less the umask, e.g. ``0644``), not ``mkstemp``'s ``0600``,
so published figures and tables are readable by others.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "write_table", "remove_stale_temporaries",
           "TEMPORARY_PATTERN"]

TEMPORARY_PATTERN = ".*.tmp"  # the names atomic_path gives its temporary files


def _file_mode() -> int:
    """``0666`` less the process's umask: the mode ``open()`` would give a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync(path: Path, *, directory: bool = False) -> None:
    descriptor = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse to fsync a directory; the file itself was synced
        if not directory:
            raise
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    Parameters
    ----------
    path : path-like
        The final file. Its folder is created if needed.
    suffix : str, optional
        Suffix of the temporary name, for writers that choose a format by extension
        (e.g. ``".png"``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as temporary:
    ...     _ = temporary.write_text("done")
    >>> (folder / "a.txt").read_text()
    'done'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix + ".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        _fsync(temporary)
        os.chmod(temporary, _file_mode())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync(target.parent, directory=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_table(table, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame as CSV atomically (folder created); returns the path."""
    atomic_write_text(path, table.to_csv(index=False))
    return Path(path)


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files that killed writes left under ``folder``; returns how many.

    Only safe while no other process writes there: the chain calls it holding the run folder's
    lock (:func:`shamsul_utils.chain.run_lock`).
    """
    removed = 0
    for path in Path(folder).rglob(TEMPORARY_PATTERN):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
