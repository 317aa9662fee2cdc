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
