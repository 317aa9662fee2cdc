"""The notebook chain end to end on the smoke profile: complete, deterministic, resumable after a kill."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shamsul_utils.chain import available_notebooks, run_chain
from shamsul_utils.config import REPOSITORY_ROOT
from shamsul_utils.labels import LOCALIZED_CLASSES

pytestmark = pytest.mark.slow

TABLES = ("classification.csv", "localisation_by_class.csv", "localisation_overall.csv", "localisation_pairs.csv",
          "ranking.csv", "by_label_count.csv", "faithfulness.csv", "sanity.csv", "lrp_variants.csv",
          "seed_models.csv", "seeds_localisation.csv", "claims.csv", "claims_secondary.csv", "strata.csv",
          "paper_vs_reproduction.csv", "significance_values.csv", "significance_claims.csv")


def _run(runs: Path, monkeypatch, *, only=None) -> Path:
    monkeypatch.setenv("SHAMSUL_RUNS", str(runs))
    run_chain("smoke", only=only)
    return runs / "smoke"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _run(tmp_path_factory.mktemp("first"), monkeypatch)


def test_chain_runs_every_notebook_and_writes_every_figure(first_run, monkeypatch):
    executed = sorted(path.stem for path in (first_run / "notebooks").glob("*.ipynb"))
    assert executed == sorted(available_notebooks())
    figures = {path.name for path in (first_run / "figures").glob("*.png")}
    for prefix in ("01_gallery", "02_performance", "03_gradcam_instances", "04_lrp_rules", "05_lime_instances",
                   "06_shap_instances", "07_iou_boxplot_gradcam", "07_ranking", "07_faithfulness", "07_seeds"):
        assert f"{prefix}.png" in figures
    for table in TABLES:
        assert (first_run / "tables" / table).is_file(), table
    timings = pd.read_csv(first_run / "chain_timings.csv")
    assert list(timings["notebook"]) == available_notebooks()
    models = pd.read_csv(first_run / "tables" / "seed_models.csv")
    assert list(models["seed"]) == [0, 1] and (first_run.parent / "smoke-seed1" / "checkpoints" / "best.pt").is_file()
    claims = pd.read_csv(first_run / "tables" / "claims.csv")
    assert len(claims) == 18 and set(claims["models"]) == {2}  # the declared family, over both models
    assert (claims["p_holm"] >= claims["p"]).all()
    assert (first_run / "tables" / "claims.md").read_text().split("\n", 1)[0].startswith("**Primary")
    assert (first_run / "tables" / "significance.md").read_text().startswith("**Medical significance, by a proxy**")
    secondary = pd.read_csv(first_run / "tables" / "claims_secondary.csv")
    assert list(dict.fromkeys(secondary["family"])) == [
        "maps clipped at zero", "LRP epsilon_plus_flat", "thresholds tuned on validation",
        "probability cutoffs tuned on validation"]
    from shamsul_utils.metrics import tuning

    tuned = pd.read_csv(first_run / "tables" / "tuned_on_validation.csv")
    for method, group in tuned.groupby("method"):  # CheXlocalize's layouts, read back as the score CLI does
        key = {"Grad-CAM": "gradcam", "LRP": "lrp", "LIME": "lime", "SHAP": "shap"}[method]
        thresholds = tuning.read_thresholds(first_run / "tables" / "tuning" / f"{key}_thresholds.csv")
        expected = group.dropna(subset=["threshold"]).set_index("class")["threshold"].to_dict()
        assert thresholds == expected
        cutoffs = tuning.read_probability_cutoffs(first_run / "tables" / "tuning" / f"{key}_probability_cutoffs.csv")
        assert cutoffs == group.dropna(subset=["probability_cutoff"]).set_index("class")["probability_cutoff"].to_dict()
    from shamsul_utils import annotations
    from shamsul_utils.config import load_profile

    monkeypatch.setenv("SHAMSUL_RUNS", str(first_run.parent))  # notebook 01 wrote the masks as raw annotations
    written = annotations.write_split_annotations(load_profile("smoke"), "test")
    assert not written["written"] and written["identical"] == written["masks"] > 0
    sheet = pd.read_csv(first_run / "rating_sheet" / "rating_sheet.csv")  # notebook 08's blinded sheet
    assert len(sheet) > 0 and sheet["rating"].isna().all()


def test_plausibility_of_the_expert_masks_is_one_and_of_the_whole_image_its_region_share(first_run, monkeypatch):
    """Notebook 08's glue on the smoke run: segmentations that are the expert masks lie wholly in their
    regions (the anatomy is exact); the whole image scores its region's share; an empty one is undefined."""
    from types import SimpleNamespace

    from shamsul_utils import anatomy, significance, study
    from shamsul_utils.config import load_profile

    monkeypatch.setenv("SHAMSUL_RUNS", str(first_run.parent))
    profile = load_profile("smoke")
    explanation = study.explanation_set(profile)
    present = explanation.masks.present
    rows = np.arange(len(explanation))

    def fake(segment):
        return SimpleNamespace(gt_present=present, segmentation=segment)

    full = {"expert": fake(lambda row, column: explanation.masks[row][column]),
            "everything": fake(lambda row, column: np.ones(explanation.masks[row].shape[-2:], bool)),
            "nothing": fake(lambda row, column: np.zeros(explanation.masks[row].shape[-2:], bool))}
    values = significance.plausibility_scores(profile, {0: {name: (rows, score) for name, score in full.items()}})
    expert = values[("expert", "plausibility")]
    assert np.isfinite(expert[0][present]).all() and np.nanmin(expert) >= 0.95 and np.nanmean(expert) > 0.99
    assert np.isnan(expert[0][~present]).all()
    assert np.isnan(values[("nothing", "plausibility")][0][present]).all()
    everything = values[("everything", "plausibility")]
    np.testing.assert_array_equal(everything, values[(significance.WHOLE_IMAGE, "plausibility")])
    row, column = map(int, np.argwhere(present)[0])
    regions = anatomy.PhantomRegions(profile).regions("test", explanation.cxr_ids[row])  # by hand
    device = explanation.masks[row][LOCALIZED_CLASSES.index("Support Devices")]
    region = anatomy.plausible_regions(regions, device)[column]
    assert everything[0, row, column] == pytest.approx(region.mean())


def test_same_seed_gives_identical_metric_tables(first_run, tmp_path, monkeypatch):
    # notebook 10 (the shortcut experiment) writes none of the compared tables: left out to save time
    second = _run(tmp_path, monkeypatch, only=[name for name in available_notebooks() if not name.startswith("10")])
    for table in TABLES:
        assert (first_run / "tables" / table).read_bytes() == (second / "tables" / table).read_bytes(), table
    import torch

    weights = [torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"] for run in (first_run, second)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])  # the weights, bit for bit


def test_killed_explainer_resumes_without_recomputing(first_run, tmp_path):
    lime_stores = list((first_run / "heatmaps" / "lime").iterdir())
    reference_store = max(lime_stores, key=lambda path: len(list(path.glob("*.npz"))))
    runs = tmp_path / "runs"
    runs.mkdir()
    for folder in first_run.parent.iterdir():  # the main run and the extra seeds' runs
        subprocess.run(["cp", "-r", str(folder), str(runs / folder.name)], check=True)
    store = runs / "smoke" / reference_store.relative_to(first_run)
    for path in store.glob("*.npz"):
        path.unlink()
    environment = {**os.environ, "SHAMSUL_RUNS": str(runs)}
    command = [sys.executable, "-m", "shamsul_utils.chain", "--profile", "smoke", "--only", "05"]
    process = subprocess.Popen(command, cwd=REPOSITORY_ROOT, env=environment, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(list(store.glob("*.npz"))) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = {path.name: path.stat().st_mtime_ns for path in store.glob("*.npz")}
    # the store also holds notebook 07's validation maps (tuning); notebook 05 makes the test images' maps
    from shamsul_utils.chexlocalize import cxr_id_from_path

    test_csv = runs / "smoke" / "data" / "CheXpert-v1.0-phantom" / "test.csv"
    test_ids = {cxr_id_from_path(path) for path in pd.read_csv(test_csv)["Path"]}
    expected = {path.name for path in reference_store.glob("*.npz") if path.stem in test_ids}
    total = len(expected)
    assert 2 <= len(finished) < total, "the kill should land in the middle of the notebook"
    for path in store.glob("*.npz"):
        with np.load(path) as content:  # every file there is complete
            assert content["heatmap"].ndim == 3

    subprocess.run(command, cwd=REPOSITORY_ROOT, env=environment, check=True, capture_output=True)
    after = {path.name: path.stat().st_mtime_ns for path in store.glob("*.npz")}
    assert set(after) == expected
    assert all(after[name] == mtime for name, mtime in finished.items()), "finished heatmaps were recomputed"
    assert not list(store.glob("*.tmp"))
    for path in store.glob("*.npz"):
        with np.load(path) as resumed, np.load(reference_store / path.name) as reference:
            assert np.array_equal(resumed["heatmap"], reference["heatmap"])


def test_an_image_replaced_on_disk_gets_new_maps_and_never_old_ones(first_run, tmp_path, monkeypatch, capsys):
    """Copy another patient's image over an explained test image: Grad-CAM recomputes that image
    only, saying so on the console, and the evaluation refuses the other methods' stale maps in
    one line instead of mixing new predictions with old maps."""
    import shutil

    from shamsul_utils import datasets
    from shamsul_utils.chain import ChainError
    from shamsul_utils.config import load_profile

    runs = tmp_path / "runs"
    shutil.copytree(first_run.parent, runs, symlinks=True)
    monkeypatch.setenv("SHAMSUL_RUNS", str(runs))
    config = load_profile("smoke")
    store = max((runs / "smoke" / "heatmaps" / "gradcam").iterdir(), key=lambda path: len(list(path.glob("*.npz"))))
    table = datasets.read_split(config, "test").table.set_index("cxr_id")
    explained = sorted(path.stem for path in store.glob("*.npz") if path.stem in table.index)  # not 07's validation maps
    victim, donor = explained[0], next(cxr_id for cxr_id in table.index if cxr_id not in explained)
    shutil.copyfile(table.loc[donor, "image_path"], table.loc[victim, "image_path"])
    before = {path.name: path.read_bytes() for path in store.glob("*.npz")}
    capsys.readouterr()

    run_chain("smoke", only=["03"])
    console = capsys.readouterr().out
    assert f"1 image(s) differ from the ones their cached maps explain (e.g. {victim})" in console
    after = {path.name: path.read_bytes() for path in store.glob("*.npz")}
    assert [name for name in before if after[name] != before[name]] == [f"{victim}.npz"]
    with pytest.raises(ChainError, match=r"heatmaps are missing or made for another version of the image"):
        run_chain("smoke", only=["07"])


def test_a_failing_notebook_stops_the_chain_with_its_name_and_cell(tmp_path, monkeypatch):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from shamsul_utils import chain

    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name, source in (("01_data_preparation", "x = 1"), ("02_training", "raise ValueError('bad input.csv')")):
        notebook = new_notebook(cells=[new_code_cell('profile: str = "smoke"  # profile'), new_code_cell(source)])
        notebook.cells[0].metadata["tags"] = ["parameters"]
        notebook.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
        nbformat.write(notebook, folder / f"{name}.ipynb")
    monkeypatch.setattr(chain, "NOTEBOOK_FOLDER", folder)
    monkeypatch.setenv("SHAMSUL_RUNS", str(tmp_path / "runs"))
    assert chain.main(["--profile", "smoke"]) == 1
    with pytest.raises(chain.ChainError, match=r"notebook 02_training failed in cell \d+: ValueError: bad input.csv"):
        chain.run_chain("smoke")


def _executed_notebook(*outputs):
    import nbformat

    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                                  "name": "python3"}})
    notebook.cells = [nbformat.v4.new_code_cell("plots.save_figure(...)", outputs=list(outputs))]
    return notebook


def test_published_notebooks_carry_no_machine_path_no_progress_blocks_and_lab_metadata(tmp_path):
    import nbformat

    from shamsul_utils.chain import KERNEL_DISPLAY_NAME, publish_notebook

    stream = nbformat.v4.new_output
    notebook = _executed_notebook(
        stream("stream", name="stderr", text="\rtraining:   0%|          | 0/8 [00:00<?, ?epoch/s]"
                                             "\rtraining:  50%|#####     | 4/8 [00:04<00:04, 1.0epoch/s]"),
        stream("stream", name="stderr", text="\rtraining: 100%|##########| 8/8 [00:08<00:00, 1.0epoch/s]\n"),
        stream("stream", name="stderr", text="\n"),  # what tqdm writes when it closes
        stream("stream", name="stderr", text="UserWarning: something a reader should see\n"),
        stream("execute_result", data={"text/plain": f"saved {REPOSITORY_ROOT}/runs/demo/figures/01_gallery.png"},
               execution_count=1))
    executed = tmp_path / "executed.ipynb"
    executed.write_text(nbformat.writes(notebook))  # no trailing newline, as papermill leaves it
    published = tmp_path / "published.ipynb"
    publish_notebook(executed, published)
    text = published.read_text()
    assert str(REPOSITORY_ROOT) not in text and "saved runs/demo/figures/01_gallery.png" in text
    result = nbformat.reads(text, as_version=4)
    outputs = result.cells[0].outputs
    assert [output.get("name") for output in outputs] == ["stdout", "stderr", None]
    assert outputs[0]["text"] == "training: 100%|##########| 8/8 [00:08<00:00, 1.0epoch/s]\n"  # its last state
    assert outputs[1]["text"].startswith("UserWarning")  # a real message stays where it was
    assert result.metadata.kernelspec.display_name == KERNEL_DISPLAY_NAME
    with open(tmp_path / "as_lab_saves_it.ipynb", "w") as handle:  # JupyterLab saves through nbformat.write
        nbformat.write(result, handle)
    assert (tmp_path / "as_lab_saves_it.ipynb").read_text() == text
    publish_notebook(published, tmp_path / "again.ipynb")
    assert (tmp_path / "again.ipynb").read_text() == text
