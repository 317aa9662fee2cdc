"""Why cached work is done again, said where the person running the chain looks.

The library prints a notice when a cache is not reused (the code, the data or an image changed
since). Inside a notebook that line lands in the executed notebook; the chain also echoes every
notice of a notebook to its own console once the notebook is done
(:func:`shamsul_utils.chain.run_chain`), so that a recomputation is never silent.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["PREFIX", "notice", "notices_in"]

PREFIX = "[recompute] "


def notice(message: str) -> None:
    """Print one notice line (prefixed with :data:`PREFIX`) on standard output.

    Examples
    --------
    >>> notice("gradcam: 1 image changed")
    [recompute] gradcam: 1 image changed
    """
    print(PREFIX + message, flush=True)


def notices_in(notebook: str | Path) -> list[str]:
    """The notice lines (prefix removed) in the stdout outputs of an executed notebook, in order."""
    try:
        content = json.loads(Path(notebook).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    found = []
    for cell in content.get("cells", []):
        for output in cell.get("outputs", []):
            if output.get("name") != "stdout":
                continue
            text = output.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            found += [line[len(PREFIX):] for line in text.splitlines() if line.startswith(PREFIX)]
    return found
