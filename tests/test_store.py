"""The heatmap store: keyed by what made the maps, atomic, resumable, loud about corrupt files."""


import numpy as np
import pytest
import torch

from shamsul_utils.errors import DataError
from shamsul_utils.models import build_model
from shamsul_utils.store import HeatmapStore, input_digest, model_fingerprint


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
    # a result from an earlier, interrupted run
    store.save("image3", np.full((2, 2, 2), -1, np.float32), digest=input_digest(images[3]))
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
    with pytest.raises(DataError, match=r"empty.npz: corrupt heatmap file \(BadZipFile\)"):
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


def test_code_version_follows_the_code_each_method_imports(tmp_path, monkeypatch):
    """Editing lrp.py makes new LRP cache entries and leaves Grad-CAM's alone; editing a function
    outside explainers/ that LIME uses (models.denormalize) makes LIME's maps recompute too,
    though no hand-kept list names models.py."""
    import shutil

    from shamsul_utils import explainers

    copy = tmp_path / "shamsul_utils"
    shutil.copytree(explainers.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(explainers, "PACKAGE_ROOT", copy)

    def versions():
        explainers.code_version.cache_clear()
        explainers.source_closure.cache_clear()
        return {method: explainers.code_version(method) for method in ("lrp", "gradcam", "lime", "shap")}

    before = versions()
    assert copy / "models.py" in explainers.source_closure("lime")
    with open(copy / "explainers" / "lrp.py", "a") as handle:
        handle.write("\n# an edit\n")
    after_lrp = versions()
    assert after_lrp["lrp"] != before["lrp"]
    assert {key: after_lrp[key] for key in ("gradcam", "lime", "shap")} == {
        key: before[key] for key in ("gradcam", "lime", "shap")}
    source = (copy / "models.py").read_text()
    (copy / "models.py").write_text(source.replace("def denormalize(", "def denormalize(  # edited\n", 1))
    after_models = versions()
    assert after_models["lime"] != after_lrp["lime"] and after_models["shap"] != after_lrp["shap"]
    explainers.code_version.cache_clear()
    explainers.source_closure.cache_clear()


def test_an_edit_of_code_lime_imports_recomputes_its_maps_and_says_why(tmp_path, monkeypatch, capsys):
    from shamsul_utils import explainers, study
    from shamsul_utils.config import load_profile

    monkeypatch.setenv("SHAMSUL_RUNS", str(tmp_path))
    profile = load_profile("smoke")
    old = study.heatmap_store(profile, "lime", "model")
    old.save("a", np.zeros((1, 2, 2), np.float32), digest="d")
    monkeypatch.setattr(explainers, "code_version", lambda method: "edited models.py")
    new = study.heatmap_store(profile, "lime", "model")
    assert new.folder != old.folder and new.missing(["a"], ["d"]) == ["a"]
    assert "lime: the code that computes these maps changed" in new.superseded_because()


def test_study_cache_key_includes_the_code_version(monkeypatch):
    from shamsul_utils import explainers, study
    from shamsul_utils.config import load_profile

    profile = load_profile("smoke")
    first = study.heatmap_store(profile, "lrp", "model").folder
    monkeypatch.setattr(explainers, "code_version", lambda method: "edited")
    assert study.heatmap_store(profile, "lrp", "model").folder != first


def test_the_store_says_why_it_computes_again(tmp_path):
    old = HeatmapStore(tmp_path, "lrp-epsilon", {"rule": "epsilon"}, "model", code="v1")
    old.save("a", np.zeros((1, 2, 2), np.float32), digest="d")
    assert old.superseded_because() is None
    new = HeatmapStore(tmp_path, "lrp-epsilon", {"rule": "epsilon"}, "model", code="v2")
    assert new.missing(["a"]) == ["a"]  # maps of other code are not reused
    assert "lrp-epsilon: the code that computes these maps changed" in new.superseded_because()
    assert "computing them again" in new.superseded_because(["a", "b"])  # "a" was cached by the old code
    assert new.superseded_because(["b"]) is None  # a new image is computed, not computed again
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
        store.save("image", np.zeros((14, 4, 4)), digest="d")
    assert not store.has("image") and not store.path("image").exists()


def test_maps_of_a_replaced_image_are_computed_again_and_the_console_says_why(tmp_path, capsys):
    """The same id with other pixels (a file copied over another) is not served the old maps."""
    store = HeatmapStore(tmp_path, "fake", {}, "m")
    images = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 3, 2, 2).contiguous()
    ids = ["a", "b", "c"]
    calls = []

    def explain(batch):
        calls.append(batch[:, 0, 0, 0].tolist())
        return batch[:, :2].numpy() * 10

    store.compute(ids, images, explain, progress=False)
    replaced = images.clone()
    replaced[1] = 7.0  # image "b" replaced on disk
    maps = store.compute(ids, replaced, explain, progress=False)
    assert calls == [[0.0], [1.0], [2.0], [7.0]]
    assert np.allclose(maps[1], 70) and np.allclose(maps[2], 20)
    assert "fake: 1 image(s) differ from the ones their cached maps explain (e.g. b)" in capsys.readouterr().out
    assert store.missing(ids, [input_digest(image) for image in images]) == ["b"]
    with pytest.raises(DataError, match="computed for another version of that image"):
        store.load("b", input_digest(images[1]))


def test_maps_stored_without_an_input_digest_are_not_trusted(tmp_path):
    """Files of the earlier format (maps only) are recomputed once, not reused blindly."""
    store = HeatmapStore(tmp_path, "fake", {}, "m")
    np.savez_compressed(store.path("old"), heatmap=np.zeros((1, 2, 2), np.float32))
    image = torch.zeros(3, 2, 2)
    assert store.stored_digest("old") == "" and store.missing(["old"], [input_digest(image)]) == ["old"]
    assert store.changed(["old"], [input_digest(image)]) == ["old"]
    maps = store.compute(["old"], image[None], lambda batch: np.ones((1, 1, 2, 2), np.float32), progress=False)
    assert maps.min() == 1 and store.has("old", input_digest(image))
