"""The paper profile's code path end to end, on a tiny directory in the exact published layout.

Only the size is untested: the same notebooks read CheXpert's CSVs and CheXlocalize's JSON from
DATA_DIR, train, explain and score. The model is shrunk and starts from random weights (no
ImageNet download in tests); everything else is params/paper.yaml.
"""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from chexpert_fixture import build_chexpert_fixture

from shamsul_utils.chain import run_chain
from shamsul_utils.chexlocalize import decode_mask
from shamsul_utils.config import REPOSITORY_ROOT, load_profile
from shamsul_utils.errors import DataError
from shamsul_utils.labels import LOCALIZED_CLASSES
from shamsul_utils.models import build_model
from shamsul_utils.training import train

pytestmark = pytest.mark.slow

SHRINK = {
    "model": {"architecture": "densenet_small", "growth_rate": 4, "block_config": [1, 1, 1], "input_size": 32,
              "pretrained": "none"},
    "training": {"epochs": 1, "batch_size": 8, "num_workers": 0},
    "explain": {"n_images": 4, "per_class": 1, "batch_size": 16, "lrp_rules": ["epsilon"], "lime_samples": 20,
                "shap_samples": 60},
    "evaluation": {"bootstrap": 20, "faithfulness_images": 2, "faithfulness_steps": 4},
    "device": "cpu",
}


def _paper_profile(tmp_path, *, checkpoint: str = ""):
    values = yaml.safe_load((REPOSITORY_ROOT / "params" / "paper.yaml").read_text())
    for section, overrides in SHRINK.items():
        values[section] = {**values[section], **overrides} if isinstance(overrides, dict) else overrides
    values["data"]["splits"]["valid"] = {"from_train_fraction": 0.25}
    values["model"]["checkpoint"] = checkpoint
    path = tmp_path / "paper-fixture.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


ORIGINAL_SIZES = [(60, 50), (56, 64)]  # (width, height) of the originals; the JPEGs are downscaled


def test_paper_chain_on_the_small_layout_scores_at_original_size(tmp_path, monkeypatch):
    """CheXpert-v1.0-small: JPEGs downscaled (short side 32 px here, 320 px there), CheXlocalize's
    masks at two different original sizes; every pair is scored at its own image's original size.
    The model is one the user already has (``model.checkpoint``, in a DataParallel layout):
    notebook 02 evaluates it instead of training, and the chain explains and scores it."""
    fixture = build_chexpert_fixture(tmp_path / "data", layout="small", sizes=ORIGINAL_SIZES)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SHAMSUL_RUNS", str(tmp_path / "runs"))
    torch.manual_seed(1)
    given = build_model("densenet_small", growth_rate=4, block_config=(1, 1, 1))
    torch.save({f"module.{key}": value for key, value in given.state_dict().items()}, tmp_path / "theirs.pt")
    path = _paper_profile(tmp_path, checkpoint=str(tmp_path / "theirs.pt"))
    profile = load_profile(path)
    assert profile.data.source == "chexpert" and profile.data_root == tmp_path / "data"
    timings = run_chain(str(path), only=["01", "02", "03", "04", "05", "06", "07", "08"])
    assert len(timings) == 8
    run = tmp_path / "runs" / "paper-fixture"
    assert not (run / "checkpoints" / "best.pt").exists()  # nothing trained
    assert (run / "tables" / "classification.csv").is_file()
    assert (run / "figures" / "07_iou_boxplot_gradcam.png").is_file()
    from shamsul_utils.study import explanation_set

    explanation = explanation_set(profile)
    originals = {(height, width) for width, height in ORIGINAL_SIZES}
    assert set(explanation.masks.sizes) == originals  # not the JPEGs' size, not the model's 32 px
    for row, cxr_id in enumerate(explanation.cxr_ids):
        assert explanation.masks[row].shape[-2:] == explanation.masks.sizes[row]
        expected = decode_mask(fixture["masks"][cxr_id]["Cardiomegaly"])
        np.testing.assert_array_equal(explanation.masks[row, LOCALIZED_CLASSES.index("Cardiomegaly")], expected)
    pairs = pd.read_csv(run / "tables" / "localisation_pairs.csv")
    assert set(zip(pairs["scored_height"], pairs["scored_width"], strict=True)) <= originals
    overall = pd.read_csv(run / "tables" / "localisation_overall.csv")
    assert overall["scored_at"].str.startswith("original size: 2 sizes").all()


def test_full_size_layout_and_a_differently_named_folder(tmp_path, monkeypatch):
    build_chexpert_fixture(tmp_path / "data", layout="full", sizes=ORIGINAL_SIZES)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    profile = load_profile(_paper_profile(tmp_path))
    from shamsul_utils.datasets import ExpertMasks, chexpert_folder, read_split

    assert chexpert_folder(profile) == "CheXpert-v1.0"
    monkeypatch.setenv("SHAMSUL_RUNS", str(tmp_path / "runs"))
    result = train(profile, progress=False)  # the paper's training path on this layout (tiny model, 1 epoch)
    assert result.trained and (tmp_path / "runs" / "paper-fixture" / "checkpoints" / "best.pt").is_file()
    test = read_split(profile, "test")
    masks = ExpertMasks(test, [cxr_id for cxr_id in test.table["cxr_id"] if cxr_id in test.segmentations])
    assert set(masks.sizes) == {(height, width) for width, height in ORIGINAL_SIZES}
    (tmp_path / "data" / "CheXpert-v1.0").rename(tmp_path / "data" / "chexpert-full")
    with pytest.raises(DataError, match=r"no CheXpert-v1.0-small or CheXpert-v1.0 folder; found 'chexpert-full' "
                                        r"holding valid.csv: set data.chexpert_folder: chexpert-full"):
        read_split(profile, "test")


def test_missing_chexlocalize_file_is_one_line(tmp_path, monkeypatch):
    build_chexpert_fixture(tmp_path / "data")
    (tmp_path / "data" / "CheXlocalize" / "gt_segmentations_val.json").unlink()
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    from shamsul_utils.datasets import read_split

    with pytest.raises(DataError, match=r"gt_segmentations_val.json: segmentation file not found"):
        read_split(load_profile(_paper_profile(tmp_path)), "test")
