"""Heatmap -> mask: Otsu against skimage, the whole pipeline against a step-by-step reference."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.filters import threshold_otsu

from shamsul_utils.metrics.tuning import tune_thresholds
from shamsul_utils.segmentation import heatmap_to_mask, normalise_heatmaps, otsu_thresholds


def _uint8_maps(rng):
    maps = [
        rng.integers(0, 256, (24, 20)),  # uniform
        np.concatenate([rng.normal(60, 12, 240), rng.normal(190, 15, 240)]).reshape(24, 20),  # bimodal
        rng.choice([3, 7, 250], size=(24, 20)),  # few values, wide empty gaps
        rng.choice([0, 255], size=(24, 20)),  # two values
        rng.integers(100, 104, (24, 20)),  # narrow range
        np.full((24, 20), 42),  # constant
    ]
    return np.stack([np.clip(m, 0, 255) for m in maps]).astype(np.uint8)


def test_otsu_equals_skimage_on_uint8_maps():
    rng = np.random.default_rng(0)
    maps = np.concatenate([_uint8_maps(rng), _uint8_maps(np.random.default_rng(1))])
    ours = otsu_thresholds(maps)
    expected = np.array([threshold_otsu(m) for m in maps])
    np.testing.assert_array_equal(ours, expected)
    assert int(otsu_thresholds(maps[1])) == threshold_otsu(maps[1])  # a single (h, w) map
    # the constant map: threshold equals its value, so "value > threshold" is empty
    assert not (maps[5] > ours[5]).any()


def _reference_mask(heatmap: np.ndarray, size) -> np.ndarray:
    """CheXlocalize step by step (torch resize and normalisation, skimage Otsu, scipy filling)."""
    resized = F.interpolate(
        torch.tensor(heatmap, dtype=torch.float32)[None, None],
        size=size,
        mode="bilinear",
        align_corners=False,
    )[0, 0]
    shifted = resized - resized.min()
    scaled = np.uint8((255 * shifted.div(shifted.max())).numpy())  # CheXlocalize: np.uint8(255 * mask)
    binary = scaled > threshold_otsu(scaled)  # cv2 THRESH_BINARY: value > threshold
    filled = ndimage.binary_fill_holes(binary)
    labels, _ = ndimage.label(filled, structure=np.ones((3, 3)))  # 8-connected, like cv2 contours
    sizes = np.bincount(labels.ravel())
    return filled & (sizes[labels] > 1)  # single-point contours are skipped by CheXlocalize


def test_heatmap_to_mask_equals_step_by_step_reference():
    rng = np.random.default_rng(3)
    heatmaps = ndimage.gaussian_filter(rng.random((2, 3, 12, 10)), sigma=(0, 0, 1.5, 1.5))
    # a ring: Otsu keeps the ring, the filling step must close the disk
    yy, xx = np.mgrid[:12, :10]
    radius = np.hypot(yy - 5.5, xx - 4.5)
    heatmaps[1, 2] = np.exp(-((radius - 3.5) ** 2))
    size = (37, 29)
    masks = heatmap_to_mask(heatmaps, output_size=size, signed="raw")
    assert masks.shape == (2, 3, *size) and masks.dtype == bool
    for n in range(2):
        for c in range(3):
            np.testing.assert_array_equal(masks[n, c], _reference_mask(heatmaps[n, c], size))
    centre = masks[1, 2, size[0] // 2, size[1] // 2]
    assert centre  # the hole in the ring is filled
    # a single (h, w) map, no resizing
    np.testing.assert_array_equal(heatmap_to_mask(heatmaps[0, 0]), _reference_mask(heatmaps[0, 0], (12, 10)))


def test_isolated_pixels_dropped_and_uint8_truncation():
    heatmap = np.zeros((9, 9))
    heatmap[1:4, 1:4] = 1.0
    heatmap[7, 7] = 1.0  # an isolated pixel: a one-point contour in CheXlocalize
    mask = heatmap_to_mask(heatmap)
    assert mask[1:4, 1:4].all() and not mask[7, 7] and mask.sum() == 9
    kept = heatmap_to_mask(heatmap, drop_isolated_pixels=False)
    assert kept[7, 7]
    # 255 * 0.999 = 254.7 truncates to 254 (np.uint8), it does not round to 255
    values = normalise_heatmaps(np.array([[0.0, 0.999, 1.0]]))
    assert np.uint8(np.float32(255) * values[0, 1]) == 254


def test_constant_nan_and_negative_maps_give_empty_masks():
    assert not heatmap_to_mask(np.full((6, 6), 3.0)).any()
    with pytest.warns(RuntimeWarning, match="1 heatmap"):
        assert not heatmap_to_mask(np.full((6, 6), np.nan)).any()
    partly = np.zeros((6, 6))
    partly[2:4, 2:4] = 1
    partly[0, 0] = np.nan
    with pytest.warns(RuntimeWarning):
        assert not heatmap_to_mask(partly).any()
    negative = -np.ones((6, 6))
    negative[2:4, 2:4] = -5.0
    assert not heatmap_to_mask(negative, signed="positive").any()  # no positive evidence
    absolute = heatmap_to_mask(negative, signed="absolute")
    assert absolute[2:4, 2:4].all() and absolute.sum() == 4
    raw = heatmap_to_mask(negative, signed="raw")  # CheXlocalize: min-max of the signed map
    assert raw.all()  # the -1 frame is foreground, and the -5 square is a hole inside it: filled
    assert not heatmap_to_mask(negative, signed="raw", fill_holes=False)[2:4, 2:4].any()


def test_probability_cutoff_and_fixed_thresholds():
    rng = np.random.default_rng(5)
    heatmaps = rng.random((3, 2, 8, 8))
    probabilities = np.array([[0.1, 0.5], [0.3, 0.9], [0.5, 0.05]])
    masks = heatmap_to_mask(heatmaps, probability=probabilities, probability_cutoff=np.array([0.3, 0.5]))
    reference = heatmap_to_mask(heatmaps)
    below = probabilities < np.array([0.3, 0.5])  # equal to the cutoff is kept (prob < cutoff)
    assert not masks[below].any()
    np.testing.assert_array_equal(masks[~below], reference[~below])
    # fixed threshold: x > t on the normalised float map, no filling (as CheXlocalize)
    normalised = normalise_heatmaps(heatmaps)
    np.testing.assert_array_equal(heatmap_to_mask(heatmaps, threshold=0.4), normalised > 0.4)
    per_class = heatmap_to_mask(heatmaps, threshold=np.array([0.2, np.nan]))  # NaN = Otsu
    np.testing.assert_array_equal(per_class[:, 0], normalised[:, 0] > 0.2)
    np.testing.assert_array_equal(per_class[:, 1], reference[:, 1])
    with pytest.raises(ValueError, match="threshold"):
        heatmap_to_mask(heatmaps, threshold="mean")


def test_tune_thresholds_finds_the_best_grid_value():
    yy, xx = np.mgrid[:16, :16]
    ramp = np.hypot(yy - 8, xx - 8)
    heatmap = 1.0 - ramp / ramp.max()  # normalised already: 1 at the centre, 0 in a corner
    heatmaps = np.broadcast_to(heatmap, (4, 2, 16, 16)).copy()
    gt = np.stack([heatmap > 0.6, heatmap > 0.3], axis=0)  # class 0 small, class 1 large
    gt = np.broadcast_to(gt, (4, 2, 16, 16))
    best, miou = tune_thresholds(heatmaps, gt, signed="raw")
    assert miou.shape == (7, 2)  # np.arange(0.2, .8, .1) has 7 values (0.8 by rounding)
    np.testing.assert_allclose(best, [0.6, 0.3])
    np.testing.assert_allclose(miou[np.argmax(miou, axis=0), [0, 1]], 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        best, _ = tune_thresholds(np.zeros((2, 1, 4, 4)), np.ones((2, 1, 4, 4), bool))
    assert np.isnan(best).all()  # constant maps never give a mask
