"""The one exception type for bad input, so callers and notebooks show a single clear line."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data: a missing or unreadable file, wrong CSV columns, a mask of the wrong size.

    The message is one line that names the file (or object) and the problem.
    """
