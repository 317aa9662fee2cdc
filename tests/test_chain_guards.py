"""The chain refuses what it cannot do well, at once and in one line (nothing is executed)."""

import pytest

from shamsul_utils.chain import ChainError, main, run_chain, run_lock
from shamsul_utils.config import load_profile


def test_only_with_no_matching_notebook_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHAMSUL_RUNS", str(tmp_path))
    with pytest.raises(ChainError, match=r"--only 99 matches no notebook of the chain \(01_data_preparation"):
        run_chain("smoke", only=["99"])
    assert main(["--profile", "smoke", "--only", "99"]) == 1
    assert "matches no notebook" in capsys.readouterr().err


def test_a_second_chain_on_the_same_run_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAMSUL_RUNS", str(tmp_path))
    folder = load_profile("smoke").paths.run
    (folder / "notebooks").mkdir(parents=True)
    (folder / "notebooks" / ".01_data_preparation.ipynb.abc.tmp").write_text("killed")
    with run_lock(folder):
        with pytest.raises(ChainError, match=r"another chain is running on this run folder \(pid \d+"):
            run_chain("smoke", only=["01"])
    assert (folder / "notebooks" / ".01_data_preparation.ipynb.abc.tmp").is_file()  # untouched while locked
    with run_lock(folder):  # released: it can be taken again
        pass


def test_make_clean_keeps_checkpoints_and_caches_and_honours_shamsul_runs(tmp_path):
    import shutil
    import subprocess

    from shamsul_utils.config import REPOSITORY_ROOT

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    run = tmp_path / "demo"
    for folder in ("tables", "figures", "notebooks", "checkpoints", "heatmaps/gradcam/abc", "data"):
        (run / folder).mkdir(parents=True)
        (run / folder / "file").write_text("x")
    (tmp_path / "other" / "tables").mkdir(parents=True)
    subprocess.run(["make", "-s", "clean", "PROFILE=demo", f"SHAMSUL_RUNS={tmp_path}"], cwd=REPOSITORY_ROOT,
                   check=True, capture_output=True)
    assert not (run / "tables").exists() and not (run / "figures").exists() and not (run / "notebooks").exists()
    for kept in ("checkpoints/file", "heatmaps/gradcam/abc/file", "data/file"):
        assert (run / kept).is_file(), kept
    assert (tmp_path / "other" / "tables").is_dir()  # another profile untouched
    subprocess.run(["make", "-s", "distclean", f"SHAMSUL_RUNS={tmp_path}"], cwd=REPOSITORY_ROOT, check=True,
                   capture_output=True)
    assert not tmp_path.exists()


def _one_notebook_chain(folder, source: str) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    folder.mkdir()
    notebook = new_notebook(cells=[new_code_cell('profile: str = "smoke"  # profile'), new_code_cell(source)])
    notebook.cells[0].metadata["tags"] = ["parameters"]
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(notebook, folder / "01_data_preparation.ipynb")


def test_a_chain_cleans_the_temporaries_of_the_runs_it_derives_and_no_others(tmp_path, monkeypatch):
    from shamsul_utils import chain

    _one_notebook_chain(tmp_path / "notebooks", "x = 1")
    monkeypatch.setattr(chain, "NOTEBOOK_FOLDER", tmp_path / "notebooks")
    runs = tmp_path / "runs"
    monkeypatch.setenv("SHAMSUL_RUNS", str(runs))
    for name in ("smoke", "smoke-seed1", "smoke-seed12", "smoke-shortcut", "smoke-shortcut-control", "smoke-other",
                 "smokey"):
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "checkpoints" / ".best.pt.x1.tmp").write_text("killed mid-write")
    assert [path.name for path in chain.run_folders(load_profile("smoke"))] == [
        "smoke", "smoke-seed1", "smoke-seed12", "smoke-shortcut", "smoke-shortcut-control"]
    run_chain("smoke")
    left = sorted(path.parent.parent.name for path in runs.rglob("*.tmp"))
    assert left == ["smoke-other", "smokey"]


def test_a_kernel_that_imports_another_copy_of_the_library_stops_in_one_line(tmp_path, monkeypatch):
    import shutil

    import shamsul_utils
    from shamsul_utils import chain

    other = tmp_path / "other" / "shamsul_utils"
    other.mkdir(parents=True)
    shutil.copy(shamsul_utils.__file__, other / "__init__.py")  # e.g. an editable install of another checkout
    _one_notebook_chain(tmp_path / "notebooks", "import shamsul_utils")
    monkeypatch.setattr(chain, "NOTEBOOK_FOLDER", tmp_path / "notebooks")
    monkeypatch.setenv("SHAMSUL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PYTHONPATH", str(other.parent))
    with pytest.raises(ChainError, match=r"ImportError: this kernel imports shamsul_utils from .*other/shamsul_utils, "
                                         r"but the chain runs the one in"):
        run_chain("smoke")
