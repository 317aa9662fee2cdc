"""Metrics on hand-made cases and against sklearn / scipy."""

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from shamsul_utils import metrics
from shamsul_utils.metrics import (
    auroc_auprc,
    bootstrap_ci,
    deletion_insertion_auc,
    iou,
    paired_bootstrap_difference,
    parameter_randomisation_similarity,
    pointing_game,
    randomise_model,
    select_iou,
    summarise_iou,
)


def _square(shape, rows, cols):
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


def test_iou_by_hand():
    pred = _square((4, 4), slice(0, 2), slice(0, 2))  # 4 pixels
    gt = _square((4, 4), slice(1, 3), slice(0, 3))  # 6 pixels, 2 shared -> union 8
    empty = np.zeros((4, 4), bool)
    values = iou(np.stack([[pred, pred], [empty, empty]]), np.stack([[gt, empty], [gt, empty]]))
    np.testing.assert_allclose(values, [[2 / 8, 0.0], [0.0, np.nan]])
    with pytest.raises(ValueError):
        iou(pred, gt[:3])


def test_iou_variants_and_summary():
    values = np.array([[0.5], [0.0], [0.0], [np.nan]])
    gt = np.array([[True], [True], [False], [False]])  # image 1: empty prediction, image 2: false positive
    pred = np.array([[True], [False], [True], [False]])
    assert np.nanmean(select_iou(values, gt, pred, variant="true_positive")) == 0.5
    assert np.nanmean(select_iou(values, gt, pred, variant="all")) == 0.25
    assert np.nanmean(select_iou(values, gt, pred, variant="union")) == pytest.approx(1 / 6)
    table = summarise_iou(values, gt, pred, variant="all", class_names=["Edema"], n_resamples=50)
    assert table.loc[0, "class"] == "Edema" and table.loc[0, "n_images"] == 2 and table.loc[0, "miou"] == 0.25
    with pytest.raises(ValueError, match="variant"):
        select_iou(values, gt, pred, variant="both")


def test_pointing_game_by_hand():
    heatmaps = np.zeros((1, 4, 4, 4))
    heatmaps[0, 0, 1, 1] = 1.0  # hit
    heatmaps[0, 1, 3, 3] = 1.0  # miss
    heatmaps[0, 2, 1, 1] = 1.0  # empty mask: undefined, never a hit
    heatmaps[0, 3] = 1.0  # constant map: points nowhere, a miss (as its empty segmentation)
    masks = np.zeros((1, 4, 4, 4), bool)
    masks[0, 0, 1, 1] = masks[0, 1, 0, 0] = True
    masks[0, 3, 2, 2] = True
    np.testing.assert_array_equal(pointing_game(heatmaps, masks), [[1.0, 0.0, np.nan, 0.0]])
    np.testing.assert_array_equal(pointing_game(heatmaps, masks, ties="any"), [[1.0, 0.0, np.nan, 0.0]])
    # tie-aware: the constant map is not a random pick among its 16 pixels (1/16) but a miss
    np.testing.assert_array_equal(pointing_game(heatmaps, masks, ties="fraction"), [[1.0, 0.0, np.nan, 0.0]])
    masks[0, 3, 0, 0] = True  # even when the mask covers the first pixel in raster order
    assert pointing_game(heatmaps, masks)[0, 3] == 0.0
    # a 2 x 2 map against 8 x 8 masks: resized bilinearly first, the maximum stays top-left
    small = np.array([[[[1.0, 0.0], [0.0, 0.0]]]])
    top_left = _square((8, 8), slice(0, 4), slice(0, 4))[None, None]
    assert pointing_game(small, top_left)[0, 0] == 1.0
    assert pointing_game(small, ~top_left)[0, 0] == 0.0
    nan_map = np.full((1, 1, 4, 4), np.nan)
    assert pointing_game(nan_map, np.ones((1, 1, 4, 4), bool))[0, 0] == 0.0  # points nowhere: a miss
    assert pointing_game(nan_map, np.ones((1, 1, 4, 4), bool), ties="fraction")[0, 0] == 0.0
    # one NaN or one infinite pixel: the map points nowhere (its segmentation is empty), never a hit
    for bad in (np.nan, np.inf):
        partly = np.zeros((1, 1, 4, 4))
        partly[0, 0, 1, 1] = bad
        partly[0, 0, 2, 2] = 1.0
        inside = np.zeros((1, 1, 4, 4), bool)
        inside[0, 0, 1:3, 1:3] = True
        for ties in ("first", "fraction", "any"):
            assert pointing_game(partly, inside, ties=ties)[0, 0] == 0.0, (bad, ties)


def test_tie_aware_hit_is_the_expected_hit_of_a_random_tie_break():
    # a piecewise-constant map (two 'segments' share the maximum): 6 maximal pixels, 2 in the mask
    segments = np.zeros((1, 1, 6, 6))
    segments[0, 0, 0, 0:3] = 5.0  # top-left segment: first in raster order, outside the mask
    segments[0, 0, 4, 3:6] = 5.0  # the other segment, partly in the mask
    mask = np.zeros((1, 1, 6, 6), bool)
    mask[0, 0, 4, 4:6] = True
    rng = np.random.default_rng(0)
    maximal = np.flatnonzero(segments[0, 0].ravel() == 5.0)
    draws = mask[0, 0].ravel()[rng.choice(maximal, size=20000)]
    assert pointing_game(segments, mask)[0, 0] == 0.0  # raster order picks the wrong segment
    assert pointing_game(segments, mask, ties="fraction")[0, 0] == 2 / 6
    assert abs(draws.mean() - 2 / 6) < 0.01  # the same number, by simulation


def test_bootstrap_ci_reproducible_and_contains_estimate():
    rng = np.random.default_rng(0)
    values = rng.random((80, 3))
    values[::4, 1] = np.nan
    first = bootstrap_ci(values, n_resamples=300, seed=7)
    second = bootstrap_ci(values, n_resamples=300, seed=7)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    estimate, low, high = first
    np.testing.assert_allclose(estimate, np.nanmean(values, axis=0))
    assert (low <= estimate).all() and (estimate <= high).all() and (low < high).all()
    other = bootstrap_ci(values, n_resamples=300, seed=8)
    assert not np.array_equal(other[1], low)
    # CheXlocalize's interval: sorted resample means, elements int(0.025 R) - 1 and int(0.975 R) - 1
    indices = np.random.default_rng(7).integers(0, 80, size=(300, 80))
    means = np.sort(np.nanmean(values[indices], axis=1), axis=0)
    _, low_c, high_c = bootstrap_ci(values, n_resamples=300, seed=7, interval="chexlocalize")
    np.testing.assert_allclose(low_c, means[int(0.025 * 300) - 1])
    np.testing.assert_allclose(high_c, means[int(0.975 * 300) - 1])
    scalar = bootstrap_ci(values[:, 0], n_resamples=100)
    assert np.ndim(scalar[0]) == 0


def test_paired_bootstrap_difference():
    rng = np.random.default_rng(1)
    a = rng.random((60, 2))
    same = paired_bootstrap_difference(a, a.copy(), n_resamples=200)
    np.testing.assert_array_equal(same.difference, 0.0)
    np.testing.assert_array_equal(same.low, 0.0)
    np.testing.assert_array_equal(same.high, 0.0)
    np.testing.assert_array_equal(same.fraction_a_greater, 0.0)
    better = paired_bootstrap_difference(a + 0.2, a, n_resamples=200)
    np.testing.assert_allclose(better.difference, 0.2)
    np.testing.assert_array_equal(better.fraction_a_greater, 1.0)
    b = a.copy()
    b[0, 0] = np.nan  # unpaired: dropped from both
    result = paired_bootstrap_difference(a, b, n_resamples=50)
    np.testing.assert_allclose(result.difference[0], 0.0, atol=1e-12)


def test_auroc_auprc_against_sklearn():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, (120, 5))
    labels[:, 2] = 0  # no positives
    labels[:, 4] = 0
    labels[:2, 4] = 1  # rare: many resamples lack a positive
    scores = np.round(rng.random((120, 5)) + 0.3 * labels, 2)  # rounded: ties
    table = auroc_auprc(labels, scores, class_names=list("ABCDE"), n_resamples=200, seed=0)
    assert list(table.columns[:8]) == [
        "class", "positives", "auroc", "auroc_low", "auroc_high", "auprc", "auprc_low", "auprc_high"
    ]  # fmt: skip
    kept = [0, 1, 3, 4]
    for c in kept:
        assert table.loc[c, "auroc"] == pytest.approx(roc_auc_score(labels[:, c], scores[:, c]))
        assert table.loc[c, "auprc"] == pytest.approx(average_precision_score(labels[:, c], scores[:, c]))
        assert table.loc[c, "auroc_low"] <= table.loc[c, "auroc"] <= table.loc[c, "auroc_high"]
    assert np.isnan(table.loc[2, "auroc"]) and table.loc[2, "excluded"] == "no positives"
    average = table.iloc[-1]
    assert average["class"] == "weighted average" and average["excluded"] == "C"
    assert average["auroc"] == pytest.approx(
        roc_auc_score(labels[:, kept], scores[:, kept], average="weighted")
    )
    assert average["auprc"] == pytest.approx(
        average_precision_score(labels[:, kept], scores[:, kept], average="weighted")
    )
    expected_skips = (labels[np.random.default_rng(0).integers(0, 120, (200, 120)), 4].sum(axis=1) == 0).sum()
    assert table.loc[4, "skipped_resamples"] == expected_skips > 0
    assert table.loc[0, "skipped_resamples"] == 0


def _quadrant_model(batch: torch.Tensor) -> torch.Tensor:
    """Probability rises with the brightness of the top-left quadrant of channel 0."""
    evidence = batch[:, 0, :8, :8].mean(dim=(1, 2))
    return torch.stack([torch.sigmoid(4 * evidence), torch.sigmoid(-4 * evidence)], dim=1)


def test_deletion_insertion_ranks_a_faithful_map_higher():
    images = torch.ones(2, 3, 16, 16)
    faithful = np.zeros((2, 1, 16, 16))
    faithful[:, :, :8, :8] = 1.0
    unfaithful = np.zeros((2, 1, 16, 16))
    unfaithful[:, :, 8:, 8:] = 1.0
    good = deletion_insertion_auc(_quadrant_model, images, faithful, [0], steps=8, insertion_baseline="zero")
    bad = deletion_insertion_auc(_quadrant_model, images, unfaithful, [0], steps=8, insertion_baseline="zero")
    assert good.deletion_curves.shape == (2, 1, 9)
    full = torch.sigmoid(torch.tensor(4.0)).item()
    assert good.deletion_curves[0, 0, 0] == pytest.approx(full) and good.deletion_curves[0, 0, -1] == 0.5
    assert good.insertion_curves[0, 0, 0] == 0.5 and good.insertion_curves[0, 0, -1] == pytest.approx(full)
    assert (good.deletion < bad.deletion).all() and (good.insertion > bad.insertion).all()
    blurred = deletion_insertion_auc(_quadrant_model, images, faithful, [0], steps=4)  # blur of ones = ones
    np.testing.assert_allclose(blurred.insertion_curves, full, rtol=1e-6)


def test_parameter_randomisation_similarity():
    rng = np.random.default_rng(3)
    a, b = rng.random((2, 2, 6, 6)), rng.random((2, 2, 6, 6))
    b[0, 0] = np.round(b[0, 0], 1)  # ties
    ours = parameter_randomisation_similarity(a, b)
    for n in range(2):
        for c in range(2):
            expected = stats.spearmanr(a[n, c].ravel(), b[n, c].ravel()).statistic
            assert ours[n, c] == pytest.approx(expected)
    np.testing.assert_allclose(parameter_randomisation_similarity(a, a), 1.0)
    np.testing.assert_allclose(parameter_randomisation_similarity(a, a, measure="ssim"), 1.0)
    assert np.isnan(parameter_randomisation_similarity(np.ones((1, 1, 4, 4)), a[:1, :1, :4, :4]))[0, 0]


def test_randomise_model_copies_and_is_seeded():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    original = {name: value.clone() for name, value in model.state_dict().items()}
    state = torch.random.get_rng_state()
    first, second = randomise_model(model, seed=1), randomise_model(model, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # global random state untouched
    for name, value in model.state_dict().items():
        assert torch.equal(value, original[name])  # the model itself is unchanged
    assert torch.equal(first[0].weight, second[0].weight) and not torch.equal(
        first[0].weight, model[0].weight
    )
    top = randomise_model(model, seed=2, top_modules=1)  # only the classifier (last module)
    assert torch.equal(top[0].weight, model[0].weight) and not torch.equal(top[2].weight, model[2].weight)


def test_mean_auroc_equals_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = (rng.random((50, 3)) < 0.4).astype(float)
    labels[:, 2] = 0  # a class without positives is left out
    scores = rng.random((50, 3)) + labels * 0.3
    expected = np.mean([roc_auc_score(labels[:, index], scores[:, index]) for index in range(2)])
    assert metrics.mean_auroc(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_a_plateau_a_rounding_step_lower_is_still_the_maximum():
    """Which pixels of an upsampled LIME/SHAP segment equal its maximum exactly depends on the CPU's
    interpolation kernels (1664 vs 1388 maximal pixels over 200 plateau maps, AVX-512 vs scalar): a
    pixel a few float32 steps below the maximum is a maximal pixel, so the pointing game is not."""
    from shamsul_utils.metrics import maximal_pixels

    one = np.float32(1.0)
    flat = np.array([[one, np.nextafter(one, np.float32(0)), one - np.float32(2.0**-22), np.float32(0.9)]])
    np.testing.assert_array_equal(maximal_pixels(flat), [[True, True, True, False]])
    plateau = np.zeros((1, 1, 8, 8), np.float32)
    plateau[0, 0, 4:, 2:6] = 0.5  # a segment, half of it inside the mask
    rounded = plateau.copy()
    rounded[0, 0, 4, 2] = np.nextafter(np.float32(0.5), np.float32(0))  # the first maximal pixel, a step lower
    mask = np.zeros((1, 1, 8, 8), bool)
    mask[0, 0, 4:, 2:4] = True
    for maps in (plateau, rounded):
        assert pointing_game(maps, mask)[0, 0] == 1.0
        assert pointing_game(maps, mask, ties="fraction")[0, 0] == 0.5
