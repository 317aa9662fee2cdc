"""Run the notebook chain of a profile with papermill, in order, stopping at the first failure.

Usage::

    python -m shamsul_utils.chain --profile demo            # the whole chain
    python -m shamsul_utils.chain --profile smoke --from 03  # resume from a notebook

Executed notebooks go to ``runs/<profile>/notebooks/``. For a profile with
``publish_figures`` (the default run) they are also copied to ``notebooks/executed/``, where a
reader of the repository sees them with their outputs. Wall time per notebook is written to
``runs/<profile>/chain_timings.csv``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .config import REPOSITORY_ROOT, load_profile
from .errors import DataError
from .files import atomic_write_text

__all__ = ["CHAIN", "available_notebooks", "run_chain", "main"]

# The study's notebooks in execution order; each reads what the earlier ones wrote.
CHAIN: tuple[str, ...] = (
    "01_data_preparation",
    "02_training",
    "03_explain_gradcam",
    "04_explain_lrp",
    "05_explain_lime",
    "06_explain_shap",
    "07_evaluation",
    "08_medical_significance",
    "10_shortcut",
)

NOTEBOOK_FOLDER = REPOSITORY_ROOT / "notebooks"


def available_notebooks() -> list[str]:
    """The chain's notebooks that exist in ``notebooks/`` (the chain grows with the project)."""
    return [name for name in CHAIN if (NOTEBOOK_FOLDER / f"{name}.ipynb").is_file()]


class ChainError(RuntimeError):
    """A notebook of the chain failed; the message names it and the failing cell."""


def run_chain(profile_name: str, *, start: str | None = None, only: Sequence[str] | None = None,
              log_output: bool = False) -> list[tuple[str, float]]:
    """Execute the chain for a profile; returns ``[(notebook, seconds)]``.

    Raises
    ------
    ChainError
        With the notebook's name, the failing cell's number and the error line.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    profile = load_profile(profile_name)
    names = available_notebooks()
    if start is not None:
        matches = [index for index, name in enumerate(names) if name.startswith(start)]
        if not matches:
            raise ChainError(f"--from {start!r} matches no notebook of the chain ({', '.join(names)})")
        names = names[matches[0]:]
    if only:
        names = [name for name in names if any(name.startswith(prefix) for prefix in only)]
    output_folder = profile.paths.notebooks
    output_folder.mkdir(parents=True, exist_ok=True)
    timings: list[tuple[str, float]] = []
    environment = {"MPLBACKEND": "agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                   "TQDM_MININTERVAL": "30"}  # few progress-bar updates in the executed notebooks
    os.environ.update(environment)
    for name in names:
        started = time.perf_counter()
        output = output_folder / f"{name}.ipynb"
        print(f"[chain] {profile.name}: {name} ...", flush=True)
        try:
            papermill.execute_notebook(
                str(NOTEBOOK_FOLDER / f"{name}.ipynb"), str(output), parameters={"profile": str(profile_name)},
                kernel_name="python3", cwd=str(NOTEBOOK_FOLDER), progress_bar=False, log_output=log_output,
            )
        except PapermillExecutionError as error:
            first_line = str(error.evalue).splitlines()[0] if error.evalue else ""
            shown = output.relative_to(REPOSITORY_ROOT) if output.is_relative_to(REPOSITORY_ROOT) else output
            raise ChainError(f"notebook {name} failed in cell {error.exec_count}: {error.ename}: {first_line} "
                             f"(executed copy: {shown})") from None
        seconds = time.perf_counter() - started
        timings.append((name, seconds))
        print(f"[chain] {profile.name}: {name} done in {seconds:.0f} s", flush=True)
        if profile.publish_figures:
            publish_notebook(output, NOTEBOOK_FOLDER / "executed" / f"{name}.ipynb")
    _record_timings(profile.paths.run / "chain_timings.csv", timings)
    return timings


def publish_notebook(executed: Path, published: Path) -> None:
    """Copy an executed notebook for readers, with this machine's repository path made relative."""
    text = executed.read_text(encoding="utf-8").replace(str(REPOSITORY_ROOT) + "/", "")
    atomic_write_text(published, text)


def _record_timings(path: Path, timings: list[tuple[str, float]]) -> None:
    """Update the per-notebook wall times in ``path``, keeping those of notebooks not run this time."""
    known: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines()[1:]:
            name, _, seconds = line.partition(",")
            known[name] = seconds
    known.update({name: f"{seconds:.1f}" for name, seconds in timings})
    ordered = [name for name in CHAIN if name in known] + sorted(set(known) - set(CHAIN))
    atomic_write_text(path, "notebook,seconds\n" + "".join(f"{name},{known[name]}\n" for name in ordered))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the SHAMSUL notebook chain with papermill.")
    parser.add_argument("--profile", default="demo", help="a profile in params/ (default: demo)")
    parser.add_argument("--from", dest="start", help="start at the notebook whose name begins with this")
    parser.add_argument("--only", nargs="*", help="run only notebooks whose names begin with these")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    arguments = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        timings = run_chain(arguments.profile, start=arguments.start, only=arguments.only,
                            log_output=arguments.log_output)
    except (ChainError, DataError) as error:
        print(f"[chain] stopped: {error}", file=sys.stderr)
        return 1
    print(f"[chain] {arguments.profile}: {len(timings)} notebooks in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
