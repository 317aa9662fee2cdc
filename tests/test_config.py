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
