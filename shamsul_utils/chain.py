"""Run the notebook chain of a profile with papermill, in order, stopping at the first failure.

Usage::

    python -m shamsul_utils.chain --profile demo            # the whole chain
    python -m shamsul_utils.chain --profile smoke --from 03  # resume from a notebook

Executed notebooks go to ``runs/<profile>/notebooks/``. For a profile with
``publish_figures`` (the default run) they are also copied to ``notebooks/executed/``, where a
reader of the repository sees them with their outputs. Wall time per notebook is written to
``runs/<profile>/chain_timings.csv``.

The console shows one progress line per notebook (cells done of total, elapsed time) and, while
notebook 02 trains, each finished epoch; the kernels' own messages go to
``runs/<profile>/notebooks/<notebook>.kernel.log``; a notebook's notices of cached work done
again (:mod:`shamsul_utils.notices`: code, data or an image changed) are repeated on the console
when it ends. A chain holds its run folder's lock, so a
second chain on the same folder stops at once, and it starts by removing the temporary files of
writes that a killed run left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import PACKAGE_VARIABLE
from .config import REPOSITORY_ROOT, load_profile
from .errors import DataError
from .files import atomic_write_text, remove_stale_temporaries
from .notices import notices_in

__all__ = ["CHAIN", "available_notebooks", "run_chain", "run_folders", "run_lock", "main"]

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
        if not names:
            raise ChainError(f"--only {' '.join(only)} matches no notebook of the chain ({', '.join(available_notebooks())})")
    output_folder = profile.paths.notebooks
    output_folder.mkdir(parents=True, exist_ok=True)
    timings: list[tuple[str, float]] = []
    environment = {"MPLBACKEND": "agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                   "TQDM_MININTERVAL": "30",  # few progress-bar updates in the executed notebooks
                   PACKAGE_VARIABLE: str(Path(__file__).resolve().parent)}  # kernels import this very package
    os.environ.update(environment)
    with run_lock(profile.paths.run):
        removed = sum(remove_stale_temporaries(folder) for folder in run_folders(profile))
        if removed:
            print(f"[chain] {profile.name}: removed {removed} temporary file(s) left by a killed run", flush=True)
        for name in names:
            started = time.perf_counter()
            output = output_folder / f"{name}.ipynb"
            kernel_log = output_folder / f"{name}.kernel.log"
            kernel_log.unlink(missing_ok=True)
            shown = output.relative_to(REPOSITORY_ROOT) if output.is_relative_to(REPOSITORY_ROOT) else output
            try:
                with _kernel_messages_to(kernel_log), _training_progress(profile, name):
                    papermill.execute_notebook(
                        str(NOTEBOOK_FOLDER / f"{name}.ipynb"), str(output),
                        parameters={"profile": str(profile_name)}, kernel_name="python3", cwd=str(NOTEBOOK_FOLDER),
                        progress_bar=_progress_bar(profile.name, name), log_output=log_output,
                    )
            except PapermillExecutionError as error:
                first_line = str(error.evalue).splitlines()[0] if error.evalue else ""
                raise ChainError(f"notebook {name} failed in cell {error.exec_count}: {error.ename}: {first_line} "
                                 f"(executed copy: {shown})") from None
            except Exception as error:  # the kernel died, or papermill itself failed
                raise ChainError(f"notebook {name} could not run ({type(error).__name__}: {error}; "
                                 f"kernel messages: {kernel_log})") from None
            seconds = time.perf_counter() - started
            timings.append((name, seconds))
            for line in notices_in(output):
                print(f"[chain] {profile.name}: {name}: {line}", flush=True)
            print(f"[chain] {profile.name}: {name} done in {seconds:.0f} s", flush=True)
            if profile.publish_figures:
                publish_notebook(output, NOTEBOOK_FOLDER / "executed" / f"{name}.ipynb")
        _record_timings(profile.paths.run / "chain_timings.csv", timings)
    return timings


def run_folders(profile) -> list[Path]:
    """The run folder of a profile and those of the runs its chain derives from it: the extra
    training seeds' ``<name>-seed<k>`` and the shortcut experiment's ``<name>-shortcut`` and
    ``<name>-shortcut-control`` (written
    only by this profile's chain, under its lock)."""
    main = profile.paths.run
    pattern = re.compile(rf"{re.escape(profile.name)}-(?:seed\d+|shortcut|shortcut-control)")
    derived = sorted(path for path in main.parent.glob(f"{profile.name}-*")
                     if path.is_dir() and pattern.fullmatch(path.name))
    return [main, *derived]


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the run folder's lock (``<folder>/.chain.lock``) or refuse with one line.

    Two chains on one run folder would both do all the work and overwrite each other's files;
    the second one stops at once instead, naming the process that holds the lock. The lock is
    released when the chain ends, however it ends (the operating system drops it when the
    process dies).
    """
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".chain.lock", "a+")  # noqa: SIM115 - held for the duration of the chain
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ChainError(f"{folder}: another chain is running on this run folder ({holder}); wait for it, or "
                         "set SHAMSUL_RUNS to run elsewhere") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def _kernel_messages_to(path: Path) -> Iterator[None]:
    """Send what the kernel process writes to stderr (its startup warnings, its log lines) to
    ``path`` instead of the console; the notebook's own outputs are in the executed notebook."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    if path.is_file() and path.stat().st_size == 0:
        path.unlink()


def _progress_bar(profile_name: str, notebook: str) -> dict:
    """papermill's cell progress on stdout: cells done of total and the time so far."""
    return {"desc": f"[chain] {profile_name}: {notebook}", "file": sys.stdout, "mininterval": 10.0,
            "bar_format": "{desc}: {n_fmt}/{total_fmt} cells, {elapsed}", "ascii": True}


@contextlib.contextmanager
def _training_progress(profile, notebook: str) -> Iterator[None]:
    """While notebook 02 runs, print each finished epoch of every model it trains (from their
    ``history.csv``), so that minutes of training are not minutes of silence."""
    if not notebook.startswith("02"):
        yield
        return
    import threading

    from tqdm import tqdm

    from .seeds import seed_profiles

    histories = [variant.paths.checkpoints / "history.csv" for variant in seed_profiles(profile)]
    seen = {path: path.stat().st_mtime if path.is_file() else 0.0 for path in histories}
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(5.0):
            for path in histories:
                try:
                    modified = path.stat().st_mtime
                except OSError:
                    continue
                if modified != seen[path]:
                    seen[path] = modified
                    try:
                        lines = path.read_text().splitlines()
                        row = dict(zip(lines[0].split(","), lines[-1].split(","), strict=False))
                        message = (f"epoch {int(float(row['epoch']))} of {profile.training.epochs} done, validation "
                                   f"loss {float(row['valid_loss']):.4f}, mean AUROC {float(row['valid_mean_auroc']):.3f}")
                    except (OSError, IndexError, KeyError, ValueError):
                        continue  # not written yet, or another layout: say nothing rather than something wrong
                    tqdm.write(f"[chain] {path.parent.parent.name}: {message}", file=sys.stdout)  # above the bar

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# The kernel's display name as JupyterLab writes it into a notebook it runs (ipykernel's kernelspec).
KERNEL_DISPLAY_NAME = "Python 3 (ipykernel)"
_PROGRESS_LINE = re.compile(r"^[^\n]*\d+%\|[^\n]*\|[^\n]*$")  # a tqdm bar: "desc: 42%|####  | 3/8 [...]"


def _final_progress(text: str) -> str | None:
    """The last state of each progress bar (one line per description) in a stream's text, or
    None if the text holds anything else."""
    lines = [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
    kept = [line for line in lines if line.strip()]
    if not kept or not all(_PROGRESS_LINE.match(line) for line in kept):
        return None
    last = {line.split("%|", 1)[0].rsplit(":", 1)[0]: line for line in kept}  # by description, in order
    return "\n".join(last.values()) + "\n"


def publish_notebook(executed: Path, published: Path) -> None:
    """Copy an executed notebook for readers.

    This machine's repository path is made relative; progress bars (tqdm writes them to stderr,
    which JupyterLab shows as red blocks) become their final line on stdout, consecutive ones
    joined, and blank stderr output is dropped; other stderr output (a warning) is kept as it is. The notebook is written as
    JupyterLab would save it (nbformat, ``kernelspec.display_name`` of the kernel that ran it,
    trailing newline), so that opening it does not make autosave rewrite it.
    """
    import nbformat

    text = executed.read_text(encoding="utf-8").replace(str(REPOSITORY_ROOT) + "/", "")
    notebook = nbformat.reads(text, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.outputs:
            if output.get("name") == "stderr" and not output.get("text", "").strip():
                continue  # what a progress bar writes when it closes: nothing to read
            final = _final_progress(output.get("text", "")) if output.get("name") == "stderr" else None
            if final is not None:
                if outputs and outputs[-1].get("name") == "stdout" and outputs[-1].get("progress"):
                    final = _final_progress(outputs.pop()["text"] + final)
                output = nbformat.v4.new_output("stream", name="stdout", text=final)
                output["progress"] = True  # (removed below) merge only progress lines
            outputs.append(output)
        for output in outputs:
            output.pop("progress", None)
        cell.outputs = outputs
    notebook.metadata.setdefault("kernelspec", {})["display_name"] = KERNEL_DISPLAY_NAME
    atomic_write_text(published, nbformat.writes(notebook) + "\n")


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
