"""The known-shortcut experiment: mass shares with known answers, the derived data, and notebook 10 on smoke."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from shamsul_utils import shortcut
from shamsul_utils.config import load_profile
from shamsul_utils.errors import DataError
from shamsul_utils.labels import CLASSES


def _masks():
    drain = np.zeros((1, 8, 8), bool)
    drain[0, 0, :4] = True  # 4 pixels
    lesion = np.zeros((1, 8, 8), bool)
    lesion[0, 4:, 4:] = True  # 16 pixels
    return drain, lesion


def test_mass_shares_of_a_map_on_the_drain_only():
    drain, lesion = _masks()
    maps = np.where(drain, 2.0, 0.0)
    row = shortcut.attribution_shares(maps, drain, lesion).iloc[0]
    assert row["mass_confounder"] == pytest.approx(1.0)
    assert row["mass_lesion"] == 0.0 and row["mass_rest"] == 0.0
    assert row["area_confounder"] == pytest.approx(4 / 64)
    assert row["enrichment_confounder"] == pytest.approx(16.0)
    assert row["pointing_confounder"] == 1.0 and row["pointing_lesion"] == 0.0
    assert row["mass_overlap"] == 0.0 and np.isnan(row["enrichment_overlap"])  # empty overlap: no enrichment
    assert np.isnan(row["pointing_overlap"])


def test_uniform_map_has_enrichment_one_and_negative_values_do_not_count():
    drain, lesion = _masks()
    uniform = shortcut.attribution_shares(np.ones((1, 8, 8)), drain, lesion).iloc[0]
    for region in ("confounder", "lesion", "rest"):
        assert uniform[f"enrichment_{region}"] == pytest.approx(1.0)
    shares = [uniform[f"mass_{region}"] for region in shortcut.REGIONS]
    assert sum(shares) == pytest.approx(1.0)
    signed = np.full((1, 8, 8), -5.0)
    signed[lesion] = 1.0
    signed[drain] = 3.0
    row = shortcut.attribution_shares(signed, drain, lesion).iloc[0]
    assert row["mass_confounder"] == pytest.approx(12 / 28)
    assert row["mass_lesion"] == pytest.approx(16 / 28)
    assert row["mass_rest"] == 0.0
    assert np.isnan(shortcut.attribution_shares(-np.ones((1, 8, 8)), drain, lesion).iloc[0]["mass_lesion"])


def test_overlap_is_its_own_region_and_maps_are_resized_to_the_masks():
    drain = np.zeros((1, 8, 8), bool)
    drain[0, :, 0:2] = True
    lesion = np.zeros((1, 8, 8), bool)
    lesion[0, :, 1:4] = True
    coarse = np.zeros((1, 2, 2))
    coarse[0, :, 0] = 1.0
    # Bilinear x4 (align_corners=False): column weights 1, 1, 7/8, 5/8, 3/8, 1/8, 0, 0 (sum 4).
    row = shortcut.attribution_shares(coarse, drain, lesion).iloc[0]
    assert row["area_overlap"] == pytest.approx(8 / 64)
    assert sum(row[f"area_{region}"] for region in shortcut.REGIONS) == pytest.approx(1.0)
    assert row["mass_confounder"] == pytest.approx(1 / 4)
    assert row["mass_overlap"] == pytest.approx(1 / 4)
    assert row["mass_lesion"] == pytest.approx(1.5 / 4)
    assert row["mass_rest"] == pytest.approx(0.5 / 4)
    with pytest.raises(ValueError):
        shortcut.attribution_shares(np.ones((2, 8, 8)), drain, lesion)


def test_verdict_is_the_paired_difference_between_the_shortcut_and_the_control_model():
    """A method that lights the drain under both models shows a tube, not the shortcut: only the paired
    difference (shortcut minus control) decides, with Holm over the methods."""
    drain, lesion = _masks()
    count = 12
    drain, lesion = np.repeat(drain, count, 0), np.repeat(lesion, count, 0)
    rng = np.random.default_rng(0)
    noise = rng.random((count, 8, 8)) * 0.05
    on_drain = np.where(drain, 1.0, 0.01) + noise
    on_lesion = np.where(lesion, 1.0, 0.01) + noise
    maps = {("shows it", shortcut.SHORTCUT_MODEL): on_drain, ("shows it", shortcut.CONTROL_MODEL): on_lesion,
            ("bright tube", shortcut.SHORTCUT_MODEL): on_drain, ("bright tube", shortcut.CONTROL_MODEL): on_drain + 0.0,
            ("hides it", shortcut.SHORTCUT_MODEL): on_lesion, ("hides it", shortcut.CONTROL_MODEL): on_drain}
    shares = shortcut.shares_for_methods(maps, drain, lesion, [f"image{i}" for i in range(count)])
    verdicts = shortcut.verdict_table(shares, n_resamples=400)
    share = verdicts[verdicts["measure"] == "mass_confounder"].set_index("method")
    assert share.loc["shows it", "reveals"] and not share.loc["bright tube", "reveals"]
    assert not share.loc["hides it", "reveals"] and share.loc["hides it", "difference"] < 0
    assert share.loc["bright tube", "difference"] == 0 and share.loc["bright tube", "low"] == 0
    # the difference is the mean paired difference of the drain shares, computed here by hand
    wide = shares[shares["method"] == "shows it"].pivot(index="cxr_id", columns="model", values="mass_confounder")
    expected = (wide[shortcut.SHORTCUT_MODEL] - wide[shortcut.CONTROL_MODEL]).mean()
    assert share.loc["shows it", "difference"] == pytest.approx(expected, rel=1e-6)  # shares are float32
    assert share.loc["shows it", "low"] > 0
    # Holm over the three methods: the smallest p is multiplied by 3 (capped at 1)
    assert share["p_holm"].min() == pytest.approx(min(1.0, 3 * share["p"].min()))
    hits = verdicts[verdicts["measure"] == "pointing_confounder"].set_index("method")
    assert hits.loc["shows it", "shortcut"] == 1.0 and hits.loc["shows it", "control"] == 0.0
    assert not hits["reveals"].any()  # the hit rate is reported beside the share and decides nothing
    text = shortcut.verdict_text(_aurocs(), verdicts, "Pneumothorax", qualified=20, threshold=0.25)
    assert "**shows it** **reveals the shortcut**" in text and "**bright tube** does not reveal" in text
    assert f"Explained: {count} of the 20" in text and f"{count} images;" in text


def _aurocs():
    rng = np.random.default_rng(1)
    labels = (rng.random(200) < 0.3).astype(float)
    rows = []
    for model, gain in ((shortcut.SHORTCUT_MODEL, 2.0), (shortcut.CONTROL_MODEL, 0.2)):
        base = labels + rng.normal(0, 0.8, 200)
        for test, drain in (("confounded", 1), ("clean", 0)):
            rows.append(pd.DataFrame({"model": model, "test": test, "row": np.arange(200), "label": labels,
                                      "probability": base + drain * gain * labels}))
    return shortcut.auroc_table(pd.concat(rows, ignore_index=True), n_resamples=300)


def test_the_shortcut_effect_is_the_difference_of_the_drops_on_the_same_patients():
    from sklearn.metrics import roc_auc_score

    table = _aurocs().set_index(["model", "test"])
    effect = table.loc[(shortcut.EFFECT, "drop")]
    drop = {model: table.loc[(model, "drop"), "auroc"] for model in (shortcut.SHORTCUT_MODEL, shortcut.CONTROL_MODEL)}
    assert effect["auroc"] == pytest.approx(drop[shortcut.SHORTCUT_MODEL] - drop[shortcut.CONTROL_MODEL])
    assert effect["low"] < effect["auroc"] < effect["high"] and effect["low"] > 0
    # each AUROC against scikit-learn's
    rng = np.random.default_rng(1)
    labels = (rng.random(200) < 0.3).astype(float)
    base = labels + rng.normal(0, 0.8, 200)
    assert table.loc[(shortcut.SHORTCUT_MODEL, "clean"), "auroc"] == pytest.approx(roc_auc_score(labels, base))


def test_operating_threshold_maximises_youden_j_by_hand():
    # t = 0.6: sensitivity 2/3, specificity 1 -> J 2/3; t = 0.3: 1 and 2/3 -> J 2/3 too: the higher wins
    assert shortcut.youden_threshold([0, 0, 1, 1, 0, 1], [0.1, 0.2, 0.3, 0.6, 0.4, 0.7]) == 0.6
    assert shortcut.youden_threshold([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]) == 0.8


def test_derived_profile_has_its_own_run_and_the_base_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("SHAMSUL_RUNS", str(tmp_path))
    base = load_profile("smoke")
    derived = shortcut.shortcut_profile(base)
    assert derived.name == "smoke-shortcut" and derived.paths.run == tmp_path / "smoke-shortcut"
    assert derived.data_root == tmp_path / "smoke-shortcut" / "data"
    assert derived.model == base.model and derived.explain == base.explain and derived.seed == base.seed
    assert derived.training.epochs == base.shortcut.epochs and not derived.publish_figures
    assert derived.data.sizes == base.shortcut.sizes
    clean = shortcut.clean_profile(base)
    assert clean.data_root == tmp_path / "smoke-shortcut" / "data_clean"
    assert clean.data.phantom["shortcut"] == ("Pneumothorax", 0.0, 0.0)
    control = shortcut.control_profile(base, rate=0.125)
    assert control.name == "smoke-shortcut-control" and control.data_root == tmp_path / "smoke-shortcut-control" / "data"
    assert control.data.phantom["shortcut"] == ("Pneumothorax", 0.125, 0.125)
    assert control.training == derived.training and control.model == derived.model and control.seed == derived.seed
    assert control.data.sizes == {"train": derived.data.sizes["train"], "valid": derived.data.sizes["valid"]}


def test_profiles_reject_a_bad_shortcut(tmp_path):
    text = (load_profile.__globals__["REPOSITORY_ROOT"] / "params" / "smoke.yaml").read_text()
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("train_with: 0.9", "train_with: 1.5"))
    with pytest.raises(DataError, match="shortcut.train_with"):
        load_profile(path)
    path.write_text(text.replace("finding: Pneumothorax", "finding: Drain"))
    with pytest.raises(DataError, match="shortcut.finding"):
        load_profile(path)


def test_confounder_follows_the_requested_rates_and_is_absent_from_the_clean_test(monkeypatch, tmp_path):
    monkeypatch.setenv("SHAMSUL_RUNS", str(tmp_path))
    base = load_profile("smoke")
    settings = dataclasses.replace(base.shortcut, train_with=1.0, train_without=0.1,
                                   sizes={"train": 120, "valid": 8, "test": 40})
    base = dataclasses.replace(base, data=dataclasses.replace(base.data, phantom={"image_size": 64}),
                               shortcut=settings)
    summaries = shortcut.write_shortcut_data(base)
    assert not summaries["confounded"]["skipped"]
    assert shortcut.write_shortcut_data(base)["clean"]["skipped"]  # cached by the phantom's manifest
    splits = shortcut.read_shortcut_data(base)
    rates = shortcut.drain_rates(splits, "Pneumothorax").set_index("split")
    assert rates.loc["train", "positives"] > 0
    assert rates.loc["train", "drain_given_positive"] == 1.0
    assert 0.02 < rates.loc["train", "drain_given_negative"] < 0.25
    assert rates.loc["clean", "drain_given_positive"] == 0 and rates.loc["clean", "drain_given_negative"] == 0
    confounded, clean = splits["confounded"], splits["clean"]
    assert confounded.has_drain.any() and not clean.has_drain.any()
    # The same patients: identical labels, and the images differ only where the drain is.
    from shamsul_utils.datasets import load_image

    row = int(np.flatnonzero(confounded.has_drain)[0])
    with_drain = load_image(confounded.split.table["image_path"][row]).astype(int)
    without = load_image(clean.split.table["image_path"][row]).astype(int)
    drain = confounded.drain_masks([confounded.split.table["cxr_id"][row]])[0]
    from scipy import ndimage

    near = ndimage.binary_dilation(drain, iterations=3)
    assert np.array_equal(with_drain[~near], without[~near]) and not np.array_equal(with_drain, without)
    positive = confounded.split.labels[:, CLASSES.index("Pneumothorax")] == 1
    expected = np.flatnonzero(positive & confounded.has_drain)
    assert np.array_equal(shortcut.explanation_rows(confounded, "Pneumothorax", 100), expected)
    probabilities = np.linspace(0, 1, len(positive))
    chosen = shortcut.explanation_rows(confounded, "Pneumothorax", 100, probabilities, 0.5)
    assert np.array_equal(chosen, expected[probabilities[expected] >= 0.5])
    # The control's data: the same patients, drains at the confounded training split's overall rate, whatever the label
    rate = shortcut.control_rate(base)
    assert rate == round(float(splits["train"].has_drain.mean()), 4)
    assert np.array_equal(splits["control train"].split.labels, splits["train"].split.labels)
    control = splits["control train"]
    assert control.has_drain.any() and not np.array_equal(control.has_drain, splits["train"].has_drain)
    assert set(rates.index) == {"train", "valid", "control train", "control valid", "confounded", "clean"}


@pytest.mark.slow
def test_notebook_runs_on_smoke(monkeypatch, tmp_path):
    monkeypatch.setenv("SHAMSUL_RUNS", str(tmp_path))
    from shamsul_utils.chain import run_chain

    timings = run_chain("smoke", only=["01", "02", "10"])
    assert [name for name, _ in timings] == ["01_data_preparation", "02_training", "10_shortcut"]
    run = tmp_path / "smoke"
    for slug in ("shortcut_auroc", "shortcut_attribution_mass", "shortcut_examples"):
        assert (run / "figures" / f"10_{slug}.png").is_file()

    aurocs = pd.read_csv(run / "tables" / "shortcut_auroc.csv")
    assert set(aurocs["model"]) == {shortcut.SHORTCUT_MODEL, shortcut.CONTROL_MODEL, shortcut.EFFECT}
    assert set(aurocs["test"]) == {"confounded", "clean", "drop"}
    summary = pd.read_csv(run / "tables" / "shortcut_share_summary.csv")
    assert set(summary["label"]) == {"Grad-CAM", "LRP", "LIME", "SHAP", "Grad-CAM, control", "LRP, control",
                                     "LIME, control", "SHAP, control"}
    verdicts = pd.read_csv(run / "tables" / "shortcut_verdicts.csv")
    assert set(verdicts["measure"]) == set(shortcut.MEASURES) and len(verdicts) == 8
    for name in ("smoke-shortcut", "smoke-shortcut-control"):
        assert (tmp_path / name / "checkpoints" / "best.pt").is_file()
    assert (run / "tables" / "shortcut.md").read_text().startswith("**Known shortcut**")
