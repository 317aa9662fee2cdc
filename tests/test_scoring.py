"""The streamed, original-size scorer against the plain route (heatmap_to_mask + metrics)."""

import warnings

import numpy as np
import pytest
from scipy import ndimage

from shamsul_utils import metrics
from shamsul_utils.datasets import ExpertMasks
from shamsul_utils.scoring import score_image, score_images
from shamsul_utils.segmentation import drop_isolated_pixels, fill_holes, heatmap_to_mask

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def test_fill_holes_and_isolated_pixels_equal_scipy_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(400):
        height, width = (int(value) for value in rng.integers(1, 25, 2))
        mask = rng.random((height, width)) < rng.random()
        if rng.random() < 0.5:
            mask = ndimage.binary_opening(mask)  # blobs with holes, not only salt and pepper
        expected = ndimage.binary_fill_holes(mask, structure=FOUR_CONNECTED)
        np.testing.assert_array_equal(fill_holes(mask.copy()), expected)
        labels, _ = ndimage.label(expected, structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())
        np.testing.assert_array_equal(drop_isolated_pixels(expected.copy()), expected & (sizes[labels] > 1))


def _plain(maps, truth, signed, probabilities=None, cutoff=None):
    segmentation = heatmap_to_mask(maps, output_size=truth.shape[-2:], signed=signed,
                                   probability=probabilities, probability_cutoff=cutoff)
    return (metrics.iou(segmentation, truth), truth.any(axis=(-2, -1)), segmentation.any(axis=(-2, -1)),
            metrics.pointing_game(maps[None], truth[None])[0],
            metrics.pointing_game(maps[None], truth[None], ties="fraction")[0], segmentation)


@pytest.mark.parametrize("signed", ["positive", "absolute", "raw"])
def test_score_image_equals_the_plain_route(signed):
    rng = np.random.default_rng(1)
    maps = ndimage.gaussian_filter(rng.normal(size=(6, 14, 12)), sigma=(0, 1.5, 1.5)).astype(np.float32)
    maps[1] = np.round(maps[1] * 3)  # piecewise constant: ties at the maximum (LIME, SHAP)
    maps[2] = 0.0  # constant: empty segmentation, every pixel maximal
    maps[3, 4, 5] = 7.0  # one peak
    truth = np.zeros((6, 61, 53), bool)
    truth[0, 10:30, 5:40] = True
    truth[1, 30:, :] = True
    truth[3, 15:25, 20:30] = True  # truth[2], truth[4], truth[5] empty
    truth[5, :5, :5] = True
    probabilities = np.array([0.9, 0.2, 0.9, 0.9, 0.1, 0.5])  # the last equals the cutoff: kept (prob < cutoff empties)
    for kwargs in ({}, {"probabilities": probabilities, "probability_cutoff": 0.5}):
        ours = score_image(maps, truth, signed=signed, keep_segmentations=True, **kwargs)
        plain = _plain(maps, truth, signed, kwargs.get("probabilities"), kwargs.get("probability_cutoff"))
        np.testing.assert_array_equal(ours[5], plain[5])
        for got, expected in zip(ours[:5], plain[:5], strict=True):
            np.testing.assert_array_equal(got, expected)
        if kwargs:  # CheXlocalize: an empty mask only strictly below the cutoff
            assert not ours[5][1].any() and not ours[5][4].any() and ours[5][5].any()


def test_maps_that_point_nowhere_score_as_on_the_plain_route():
    maps = np.ones((2, 8, 8), np.float32)
    maps[0, 2, 3] = np.nan
    maps[1, 4:, :] = 3.0
    truth = np.zeros((2, 16, 16), bool)
    truth[:, 8:, :] = True
    huge = np.random.default_rng(3).random((2, 8, 8)) * 1e39  # finite in float64, inf in float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for case in (maps, huge):
            ours = score_image(case, truth, signed="positive")
            plain = _plain(case, truth, "positive")
            for got, expected in zip(ours, plain[:5], strict=True):
                np.testing.assert_array_equal(got, expected)


def test_images_of_different_sizes_are_scored_each_at_its_own():
    rng = np.random.default_rng(2)
    truth = [np.zeros((3, 40, 50), bool), np.zeros((3, 64, 31), bool)]
    truth[0][0, 5:20, 5:30] = truth[1][1, 30:60, 2:20] = truth[1][2, :10, :10] = True
    maps = ndimage.gaussian_filter(rng.normal(size=(2, 3, 16, 16)), sigma=(0, 0, 2, 2)).astype(np.float32)
    masks = ExpertMasks.from_arrays(truth, classes=("a", "b", "c"))
    assert masks.sizes == [(40, 50), (64, 31)] and masks.common_size is None
    assert masks.describe_size() == "2 sizes, 64x31 to 40x50"
    scores = score_images(maps, masks)
    for row in range(2):
        plain = _plain(maps[row], truth[row], "positive")
        np.testing.assert_array_equal(scores.iou[row], plain[0])
        np.testing.assert_array_equal(scores.hits[row], plain[3])
    with pytest.raises(Exception, match="differ in size"):
        masks.stacked()
