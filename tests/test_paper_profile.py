"""The paper profile's code path end to end, on a tiny directory in the exact published layout.

Only the size is untested: the same notebooks read CheXpert's CSVs and CheXlocalize's JSON from
DATA_DIR, train, explain and score. The model is shrunk and starts from random weights (no
ImageNet download in tests); everything else is params/paper.yaml.
"""

import pytest
import yaml
from chexpert_fixture import build_chexpert_fixture

from shamsul_utils.chain import run_chain
from shamsul_utils.config import REPOSITORY_ROOT, load_profile
from shamsul_utils.errors import DataError

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


def _paper_profile(tmp_path):
    values = yaml.safe_load((REPOSITORY_ROOT / "params" / "paper.yaml").read_text())
    for section, overrides in SHRINK.items():
        values[section] = {**values[section], **overrides} if isinstance(overrides, dict) else overrides
    values["data"]["splits"]["valid"] = {"from_train_fraction": 0.25}
    path = tmp_path / "paper-fixture.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_paper_chain_on_the_published_layout(tmp_path, monkeypatch):
    build_chexpert_fixture(tmp_path / "data")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SHAMSUL_RUNS", str(tmp_path / "runs"))
    path = _paper_profile(tmp_path)
    profile = load_profile(path)
    assert profile.data.source == "chexpert" and profile.data_root == tmp_path / "data"
    timings = run_chain(str(path), only=["01", "02", "03", "04", "05", "06", "07", "08"])
    assert len(timings) == 8
    run = tmp_path / "runs" / "paper-fixture"
    assert (run / "tables" / "localisation_overall.csv").is_file()
    assert (run / "figures" / "07_iou_boxplot_gradcam.png").is_file()


def test_missing_chexlocalize_file_is_one_line(tmp_path, monkeypatch):
    build_chexpert_fixture(tmp_path / "data")
    (tmp_path / "data" / "CheXlocalize" / "gt_segmentations_val.json").unlink()
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    from shamsul_utils.datasets import read_split

    with pytest.raises(DataError, match=r"gt_segmentations_val.json: segmentation file not found"):
        read_split(load_profile(_paper_profile(tmp_path)), "test")
