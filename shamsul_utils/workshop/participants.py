"""Participant copies of the workshop notebooks: the exercises without their solutions.

``python -m shamsul_utils.workshop [--output workshop]`` (``make workshop``) writes the exercises
without the cells tagged ``solution``, and the explorer.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..config import REPOSITORY_ROOT

__all__ = ["SOLUTION_TAG", "strip_solutions", "write_participant_copies", "main"]

SOLUTION_TAG = "solution"


def strip_solutions(notebook):
    """A copy of a notebook without outputs, each cell tagged ``solution`` replaced by an answer stub.

    A code solution becomes a code cell ``# your answer here``; a markdown solution becomes
    ``*Your answer here.*``. Stubs are tagged ``answer``.
    """
    import copy

    import nbformat

    result = copy.deepcopy(notebook)
    cells = []
    for cell in result.cells:
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            if cell.cell_type == "code":
                stub = nbformat.v4.new_code_cell("# your answer here\n")
            else:
                stub = nbformat.v4.new_markdown_cell("*Your answer here.*")
            stub.metadata["tags"] = ["answer"]
            cells.append(stub)
            continue
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cells.append(cell)
    result.cells = cells
    result.metadata.pop("papermill", None)
    result.metadata.pop("widgets", None)
    return result


def write_participant_copies(output: str | Path) -> list[Path]:
    """Write the exercises (solutions removed) and the explorer to ``output``; returns the files."""
    import nbformat

    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    sources = REPOSITORY_ROOT / "notebooks"
    written = []
    for name in ("workshop_exercises.ipynb", "09_workshop_explorer.ipynb"):
        notebook = nbformat.read(sources / name, as_version=4)
        target = folder / name
        nbformat.write(strip_solutions(notebook), target)
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the participants' copies of the workshop notebooks "
                                                 "(solutions removed).")
    parser.add_argument("--output", default=str(REPOSITORY_ROOT / "workshop"),
                        help="folder to write to (default: workshop/, git-ignored)")
    arguments = parser.parse_args(argv)
    for path in write_participant_copies(arguments.output):
        print(f"[workshop] wrote {path}")
    return 0
