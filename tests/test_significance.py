"""Notebook 08's rules: instances drawn by a stated rule, the rating sheet kept once filled, and the
generated conclusion (the plausibility scores themselves are checked on the smoke run in test_chain)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from shamsul_utils import claims, rating, significance
from shamsul_utils.labels import LOCALIZED_CLASSES


def _explanation(present_column, findings):
    present = np.zeros((len(findings), len(LOCALIZED_CLASSES)), bool)
    present[:, present_column] = [row in (1, 3, 4, 6, 7) for row in range(len(findings))]
    return SimpleNamespace(masks=SimpleNamespace(present=present), positive_findings=np.asarray(findings))


def test_instances_are_drawn_by_the_stated_rule():
    column = LOCALIZED_CLASSES.index("Cardiomegaly")
    explanation = _explanation(column, [1, 2, 1, 3, 1, 1, 2, 2])  # candidates 1, 3, 4, 6, 7; single-label: 4
    drawn = significance.random_instances(explanation, "Cardiomegaly", 3, seed=0)
    assert drawn[0] == (4, "single-label")  # the only single-label candidate comes first
    assert len(drawn) == 3 and len({row for row, _ in drawn}) == 3
    assert {row for row, _ in drawn} <= {1, 3, 4, 6, 7}
    assert all(kind == "multi-label" for _, kind in drawn[1:])
    assert drawn == significance.random_instances(explanation, "Cardiomegaly", 3, seed=0)  # seeded
    others = {tuple(significance.random_instances(explanation, "Cardiomegaly", 3, seed=seed)) for seed in range(8)}
    assert len(others) > 1  # the seed decides, not the scores
    assert len(significance.random_instances(explanation, "Cardiomegaly", 10, seed=0)) == 5  # all candidates
    assert significance.random_instances(explanation, "Edema", 3, seed=0) == []


def test_a_filled_rating_sheet_is_kept_and_read_back_an_untouched_one_rewritten(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((24, 24))
    segmentation = np.zeros((24, 24), bool)
    segmentation[4:12, 4:12] = True
    items = [rating.RatingItem(cxr_id=f"patient{i}", class_name="Edema", method=method, model="main", image=image,
                               segmentation=segmentation) for i in range(3) for method in ("Grad-CAM", "LIME")]
    folder = tmp_path / "sheet"
    ratings, summary = significance.sheet_and_ratings(folder, items, seed=1, n_resamples=50)
    assert len(ratings) == 0 and summary is None
    sheet = pd.read_csv(folder / rating.SHEET_FILE, dtype=str, keep_default_na=False)
    sheet.loc[:, "rating"] = ["5", "4", "3", "2", "1", ""]
    sheet.to_csv(folder / rating.SHEET_FILE, index=False)
    key = pd.read_csv(folder / rating.KEY_FILE).set_index("item")
    ratings, summary = significance.sheet_and_ratings(folder, items[:2], seed=99, n_resamples=50)
    assert len(ratings) == 5  # kept (not rewritten with the two new items) and read back
    expected = {}
    for item, value in zip(sheet["item"][:5], [5, 4, 3, 2, 1], strict=True):
        expected.setdefault(key.loc[item, "method"], []).append(value)
    by_method = summary.set_index("method")["mean_rating"]
    for method, values in expected.items():
        assert by_method[method] == pytest.approx(np.mean(values))


def test_the_conclusion_is_generated_from_the_tables():
    rng = np.random.default_rng(0)
    base = rng.random((2, 30, 3))
    values = {("Grad-CAM", "plausibility"): base, ("LIME", "plausibility"): np.clip(base + 0.3, 0, 1.3),
              ("SHAP", "plausibility"): base + 0.01 * rng.random((2, 30, 3))}
    summary = significance.values_table(values, n_resamples=200)
    table = claims.claims_table(values, metrics=("plausibility",), n_resamples=200)
    text = significance.significance_markdown(summary, table, None, images=30, models=2)
    assert "**LIME > Grad-CAM** by anatomical plausibility" in text and "**LIME > SHAP**" in text
    assert "on this proxy, confirmed (LIME > every other method)" in text
    assert "2 models x 30 images" in text and "Blinded ratings: none yet" in text
    lime = summary.set_index("method").loc["LIME"]
    assert lime["low"] < lime["mean"] < lime["high"]
    by_class = np.clip(base + 0.3, 0, 1.3).mean(axis=1).mean(axis=1).mean()
    assert lime["mean"] == pytest.approx(by_class)
