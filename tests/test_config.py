"""Profiles load, are validated, and reject unknown keys with one clear line."""

import pytest

from shamsul_utils.config import load_profile, profile_names
from shamsul_utils.errors import DataError


def test_shipped_profiles_load():
    assert {"smoke", "demo", "paper"} <= set(profile_names())
    for name in ("smoke", "demo"):
        profile = load_profile(name)
        assert profile.name == name
        assert profile.data.source == "phantom"
        assert set(profile.data.splits) == {"train", "valid", "test"}


def test_paper_profile_needs_a_data_dir(monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    with pytest.raises(DataError, match="DATA_DIR"):
        load_profile("paper")
    monkeypatch.setenv("DATA_DIR", "/data/chexpert")
    profile = load_profile("paper")
    assert str(profile.data_root) == "/data/chexpert"
    assert profile.model.architecture == "densenet121" and profile.model.input_size == 224


def test_unknown_key_is_an_error(tmp_path):
    text = (load_profile.__globals__["REPOSITORY_ROOT"] / "params" / "smoke.yaml").read_text()
    path = tmp_path / "typo.yaml"
    path.write_text(text.replace("learning_rate:", "learning_rte:"))
    with pytest.raises(DataError, match="unknown key.*learning_rte"):
        load_profile(path)


def test_wrong_type_is_an_error():
    with pytest.raises(DataError, match="expected int"):
        load_profile("smoke", {"training": {"epochs": "many"}})
    with pytest.raises(DataError, match="architecture"):
        load_profile("smoke", {"model": {"architecture": "resnet50"}})


@pytest.mark.parametrize("overrides, message", [
    ({"explain": {"lime_samples": -5}}, r"explain.lime_samples is -5; expected 2 to 1000000"),
    ({"training": {"epochs": -1}}, r"training.epochs is -1; expected 1 to 10000"),
    ({"training": {"epochs": 0}}, r"training.epochs is 0; expected 1 to 10000"),
    ({"explain": {"lime_samples": 1}}, r"explain.lime_samples is 1; expected 2 to"),
    ({"explain": {"n_images": 0}}, r"explain.n_images is 0; expected 1 to"),
    ({"training": {"batch_size": 0}}, r"training.batch_size is 0; expected 1 to"),
    ({"training": {"learning_rate": -0.001}}, r"training.learning_rate is -0.001; expected above 0"),
    ({"model": {"input_size": 0}}, r"model.input_size is 0; expected 32 to 4096"),
    ({"evaluation": {"bootstrap": 0}}, r"evaluation.bootstrap is 0; expected 1 to"),
    ({"explain": {"n_images": -1}}, r"explain.n_images is -1; expected 1 to"),
    ({"explain": {"lrp_rule": "zz"}}, r"explain.lrp_rule has 'zz'; expected one of z, epsilon"),
    ({"training": {"schedule": "linear"}}, r"training.schedule is 'linear'; expected one of plateau, step"),
    ({"training": {"schedule": "step", "step_epochs": []}}, r"training.step_epochs is \[\]; expected increasing epochs from 1"),
    ({"training": {"step_epochs": [0]}}, r"training.step_epochs is \[0\]; expected increasing"),
    ({"training": {"epochs": 5, "step_epochs": [3, 2]}}, r"training.step_epochs is \[3, 2\]; expected"),
    ({"explain": {"shap_fill": "purple"}}, r"explain.shap_fill is 'purple'; expected one of mean, black, paper"),
    ({"data": {"phantom": {"colour": 3}}}, r"data.phantom has unknown key\(s\) colour; allowed: "),
    ({"evaluation": {"medical_classes": ["Fracture"]}}, r"evaluation.medical_classes .* localised classes"),
    ({"explain": {"extra_methods": ["occlusion"]}}, r"extra_methods has 'occlusion'; expected methods outside "
                                                    r"the study's four: integrated_gradients"),
    ({"explain": {"extra_methods": ["lime"]}}, r"extra_methods has 'lime'; expected methods outside"),
    ({"explain": {"extra_methods": ["integrated_gradients"] * 2}}, r"extra_methods .* repeats a method"),
    # no upper bound let these load and then fail (or fill the disk) deep inside a notebook
    ({"explain": {"lime_samples": 10**12}}, r"explain.lime_samples is 1000000000000; expected 2 to 1000000"),
    ({"model": {"input_size": 10**6}}, r"model.input_size is 1000000; expected 32 to 4096"),
    ({"data": {"sizes": {"train": 10**12}}}, r"data.sizes.train is 1000000000000; expected 1 to"),
    ({"training": {"epochs": float("inf")}}, r"training.epochs: expected int, got inf"),
    # a run folder's name is a plain name: never the runs root, a parent, or a path outside it
    ({"name": ""}, r"name is ''; expected a plain folder name"),
    ({"name": "."}, r"name is '.'; expected a plain folder name"),
    ({"name": ".."}, r"name is '..'; expected a plain folder name"),
    ({"name": "../../.."}, r"name is '../../..'; expected a plain folder name"),
    ({"name": "/tmp/elsewhere"}, r"name is '/tmp/elsewhere'; expected a plain folder name"),
    ({"name": "a/b"}, r"name is 'a/b'; expected a plain folder name"),
])
def test_bad_values_are_refused_at_load_in_one_line(overrides, message):
    with pytest.raises(DataError, match=message):
        load_profile("smoke", overrides)


def test_a_yaml_list_at_the_top_level_is_one_line(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- seed: 0\n- data: {}\n")
    with pytest.raises(DataError, match=r"list.yaml: expected a mapping of sections .* got a list"):
        load_profile(path)
