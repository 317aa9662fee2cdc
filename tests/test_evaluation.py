"""The study-level evaluation on a hand-made explanation set whose answers are known."""

import numpy as np
import pandas as pd
import pytest
import torch

from shamsul_utils import evaluation
from shamsul_utils.labels import CLASSES, LOCALIZED_CLASSES
from shamsul_utils.study import ExplanationSet


def _explanation(count=6, size=16):
    rng = np.random.default_rng(0)
    labels = np.zeros((count, len(CLASSES)), np.float32)
    masks = np.zeros((count, len(LOCALIZED_CLASSES), size, size), bool)
    heart = LOCALIZED_CLASSES.index("Cardiomegaly")
    for index in range(count):
        labels[index, CLASSES.index("Cardiomegaly")] = 1
        masks[index, heart, 4:12, 2 + index:10 + index] = True
        if index % 2:
            labels[index, CLASSES.index("Edema")] = 1
            masks[index, LOCALIZED_CLASSES.index("Edema"), 0:4, 0:16] = True
    table = pd.DataFrame({"cxr_id": [f"patient{index:05d}_study1_view1_frontal" for index in range(count)]})
    return ExplanationSet(table=table, images=torch.zeros(count, 3, size, size), gray=rng.random((count, size, size)),
                          labels=labels, probabilities=np.full((count, len(CLASSES)), 0.7, np.float32), masks=masks)


def test_a_map_equal_to_the_mask_scores_one():
    explanation = _explanation()
    maps = np.zeros((len(explanation), len(CLASSES), 16, 16), np.float32)
    for position, name in enumerate(LOCALIZED_CLASSES):
        maps[:, CLASSES.index(name)] = explanation.masks.stacked()[:, position]
    score = evaluation.score_method("perfect", explanation, maps)
    present = score.gt_present
    assert np.allclose(score.iou[present], 1.0)
    assert np.all(score.hits[present] == 1.0)
    assert np.isnan(score.hits[~present]).all(), "no expert mask: the hit is undefined, never 1"
    overall = evaluation.overall_table({"perfect": score}, n_resamples=50)
    assert overall.loc[0, "miou_tp"] == pytest.approx(1.0) and overall.loc[0, "hit_rate"] == pytest.approx(1.0)


def test_a_shifted_map_scores_its_hand_computed_iou_and_the_ranking_sees_it():
    explanation = _explanation()
    heart = CLASSES.index("Cardiomegaly")
    perfect = np.zeros((len(explanation), len(CLASSES), 16, 16), np.float32)
    perfect[:, heart] = explanation.masks.stacked()[:, LOCALIZED_CLASSES.index("Cardiomegaly")]
    shifted = np.roll(perfect, 4, axis=-1)  # an 8-wide box moved by 4: overlap 4 of 12 columns
    scores = {name: evaluation.score_method(name, explanation, maps)
              for name, maps in (("perfect", perfect), ("shifted", shifted))}
    column = LOCALIZED_CLASSES.index("Cardiomegaly")
    assert np.allclose(scores["shifted"].iou[:, column], 4 / 12)
    summary = evaluation.summary_table(scores, explanation, n_resamples=50)
    heart_rows = summary[summary["class"] == "Cardiomegaly"].set_index("method")
    assert heart_rows.loc["shifted", "miou_all"] == pytest.approx(1 / 3)
    assert heart_rows.loc["perfect", "chance_hit_rate"] == pytest.approx(64 / 256)
    ranking = evaluation.ranking_table(scores, n_resamples=50)
    row = ranking[ranking["metric"] == "miou_all"].iloc[0]
    # Edema has no map in either method (IoU 0 in the full set), so the class mean halves the gap.
    assert row["difference"] == pytest.approx((1 - 1 / 3) / 2)
    assert row["clear"]


def test_label_count_groups():
    explanation = _explanation()
    score = evaluation.score_method("zero", explanation, np.zeros((6, 14, 16, 16), np.float32))
    pairs = evaluation.per_pair_table({"zero": score}, explanation)
    counts = evaluation.by_label_count_table(pairs).set_index("findings")["pairs"]
    assert counts["1"] == 3 and counts["2"] == 6  # 3 single-label images, 3 images with 2 findings
    assert (pairs["iou"] == 0).all(), "a constant map segments nothing: IoU 0 in the full set"
