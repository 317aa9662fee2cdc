"""The heatmap store: keyed by what made the maps, atomic, resumable, loud about corrupt files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from shamsul_utils.errors import DataError
from shamsul_utils.models import build_model
from shamsul_utils.store import HeatmapStore, model_fingerprint


def test_key_depends_on_method_options_and_model(tmp_path):
    first = HeatmapStore(tmp_path, "lime", {"num_samples": 1000}, "model-a")
    assert HeatmapStore(tmp_path, "lime", {"num_samples": 1000}, "model-a").folder == first.folder
    assert HeatmapStore(tmp_path, "lime", {"num_samples": 100}, "model-a").folder != first.folder
    assert HeatmapStore(tmp_path, "lime", {"num_samples": 1000}, "model-b").folder != first.folder


def test_model_fingerprint_follows_the_weights():
    torch.manual_seed(0)
    model = build_model("densenet_small", block_config=(1, 1, 1), growth_rate=4)
    fingerprint = model_fingerprint(model)
    assert model_fingerprint(model.to(memory_format=torch.channels_last)) == fingerprint
    with torch.no_grad():
        model.classifier.bias[0] += 1e-3
    assert model_fingerprint(model) != fingerprint


def test_compute_only_what_is_missing(tmp_path):
    store = HeatmapStore(tmp_path, "fake", {}, "m")
    images = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    calls = []

    def explain(batch):
        calls.append(len(batch))
        return batch[:, :2].numpy() * 10

    ids = [f"image{index}" for index in range(5)]
    store.save("image3", np.full((2, 2, 2), -1, np.float32))  # a result from an earlier, interrupted run
    maps = store.compute(ids, images, explain, chunk=2, progress=False)
    assert calls == [2, 2]
    assert maps.shape == (5, 2, 2, 2)
    assert maps[3].min() == -1, "a stored map is reused, not recomputed"
    assert np.allclose(maps[4], 40)
    assert store.compute(ids, images, explain, progress=False).shape == (5, 2, 2, 2)
    assert calls == [2, 2], "a rerun computes nothing"


def test_corrupt_or_missing_file_is_one_clear_line(tmp_path):
    store = HeatmapStore(tmp_path, "fake", {}, "m")
    store.path("broken").write_bytes(b"half a zip file")
    with pytest.raises(DataError, match="corrupt heatmap file"):
        store.load("broken")
    with pytest.raises(DataError, match="no stored heatmap"):
        store.load("absent")
    store.path("empty").write_bytes(b"")  # a zero-byte file (power loss before the fsync existed)
    with pytest.raises(DataError, match=r"empty.npz: corrupt heatmap file \(EOFError\)"):
        store.load("empty")


def test_written_files_are_readable_by_others_and_stale_temporaries_are_removed(tmp_path):
    import os
    import stat

    from shamsul_utils.files import atomic_write_text, remove_stale_temporaries

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "table.csv", "a\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "table.csv").stat().st_mode) == 0o644  # not mkstemp's 0600
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".figure.png.x1y2.png.tmp").write_bytes(b"half")  # a killed write
    assert remove_stale_temporaries(tmp_path) == 1
    assert not list(tmp_path.rglob("*.tmp")) and (tmp_path / "table.csv").is_file()


def test_key_depends_on_the_code(tmp_path):
    assert HeatmapStore(tmp_path, "lrp", {}, "m", code="a").folder != HeatmapStore(tmp_path, "lrp", {}, "m", code="b").folder


def test_code_version_follows_the_source_of_that_method_only(tmp_path, monkeypatch):
    """Editing lrp.py makes new LRP cache entries (recomputed maps) and leaves Grad-CAM's alone."""
    import shutil

    from shamsul_utils import explainers

    source = Path(explainers.__file__).parent
    copy = tmp_path / "explainers"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(explainers, "__file__", str(copy / "__init__.py"))
    explainers.code_version.cache_clear()
    before = {method: explainers.code_version(method) for method in ("lrp", "gradcam")}
    with open(copy / "lrp.py", "a") as handle:
        handle.write("\n# an edit\n")
    explainers.code_version.cache_clear()
    assert explainers.code_version("lrp") != before["lrp"]
    assert explainers.code_version("gradcam") == before["gradcam"]
    explainers.code_version.cache_clear()


def test_study_cache_key_includes_the_code_version(monkeypatch):
    from shamsul_utils import explainers, study
    from shamsul_utils.config import load_profile

    profile = load_profile("smoke")
    first = study.heatmap_store(profile, "lrp", "model").folder
    monkeypatch.setattr(explainers, "code_version", lambda method: "edited")
    assert study.heatmap_store(profile, "lrp", "model").folder != first


def test_the_store_says_why_it_computes_again(tmp_path):
    old = HeatmapStore(tmp_path, "lrp-epsilon", {"rule": "epsilon"}, "model", code="v1")
    old.save("a", np.zeros((1, 2, 2), np.float32))
    assert old.superseded_because() is None
    new = HeatmapStore(tmp_path, "lrp-epsilon", {"rule": "epsilon"}, "model", code="v2")
    assert new.missing(["a"]) == ["a"]  # maps of other code are not reused
    assert "lrp-epsilon: the code that computes these maps changed" in new.superseded_because()
    assert HeatmapStore(tmp_path, "lrp-epsilon", {"rule": "epsilon"}, "other model", code="v3").superseded_because() is None


def test_a_write_killed_midway_leaves_no_heatmap_behind(tmp_path, monkeypatch):
    """The map goes to a temporary file first: a crash while writing never leaves a truncated .npz
    under its final name (which a resumed run would then trust)."""
    store = HeatmapStore(tmp_path, "gradcam", {}, "weights")

    def crash(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save("image", np.zeros((14, 4, 4)))
    assert not store.has("image") and not store.path("image").exists()
