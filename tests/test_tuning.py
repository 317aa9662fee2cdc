"""Thresholds and probability cutoffs tuned on validation (CheXlocalize's Table 3): the tuners against
brute force on the plain route, the streamed scorer with tuned thresholds against the plain route, and
CheXlocalize's CSV layouts."""

import numpy as np
import pytest
from scipy import ndimage

from shamsul_utils import metrics
from shamsul_utils.errors import DataError
from shamsul_utils.metrics import tuning
from shamsul_utils.scoring import score_image
from shamsul_utils.segmentation import heatmap_to_mask


def _maps_and_truth(seed=3, count=8, classes=3):
    rng = np.random.default_rng(seed)
    maps = ndimage.gaussian_filter(rng.normal(size=(count, classes, 12, 12)), sigma=(0, 0, 1.5, 1.5)).astype(np.float32)
    truth = np.zeros((count, classes, 36, 36), bool)
    for n in range(count):
        for c in range(classes):
            if rng.random() < 0.7:
                top, left = rng.integers(0, 24, 2)
                truth[n, c, top:top + 12, left:left + 12] = True
    return maps, truth, rng


def test_streamed_scorer_with_tuned_thresholds_equals_the_plain_route():
    maps, truth, _ = _maps_and_truth()
    thresholds = np.array([0.3, np.nan, 0.65])  # NaN: Otsu for that class
    for n in range(len(maps)):
        for signed in ("raw", "positive"):
            ours = score_image(maps[n], truth[n], signed=signed, thresholds=thresholds, keep_segmentations=True)
            plain = heatmap_to_mask(maps[n], output_size=truth.shape[-2:], signed=signed, threshold=thresholds)
            np.testing.assert_array_equal(ours[-1], plain)
            np.testing.assert_array_equal(ours[0], metrics.iou(plain, truth[n]))


def test_thresholds_tuned_image_by_image_at_each_size_equal_brute_force():
    maps, truth, _ = _maps_and_truth(seed=7, count=6)
    sizes = [(36, 36), (30, 42), (36, 36), (25, 31), (36, 36), (40, 28)]  # images of different original sizes
    masks = [ndimage.zoom(truth[n], (1, size[0] / 36, size[1] / 36), order=0) for n, size in enumerate(sizes)]
    best, miou = tuning.tune_thresholds(maps, masks, signed="raw")
    grid = tuning.THRESHOLDS
    assert grid.tolist() == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    for t, value in enumerate(grid):
        values = []
        for n in range(6):
            segmentation = heatmap_to_mask(maps[n], output_size=sizes[n], threshold=value, signed="raw")
            values.append(metrics.select_iou(metrics.iou(segmentation, masks[n]), masks[n].any(axis=(-2, -1)),
                                             segmentation.any(axis=(-2, -1)), variant="true_positive"))
        np.testing.assert_allclose(miou[t], np.nanmean(values, axis=0), rtol=1e-12)
    assert best.tolist() == [grid[int(np.nanargmax(miou[:, c]))] for c in range(3)]
    with pytest.raises(ValueError, match="signed"):
        tuning.tune_thresholds(maps, masks, signed="clipped")


def test_probability_cutoffs_equal_brute_force_resegmentation():
    maps, truth, rng = _maps_and_truth(seed=5, count=12)
    probabilities = rng.random((12, 3))
    segmentations = heatmap_to_mask(maps, output_size=truth.shape[-2:], signed="raw")
    kept_iou = metrics.select_iou(metrics.iou(segmentations, truth), truth.any(axis=(-2, -1)),
                                  segmentations.any(axis=(-2, -1)), variant="union")
    best, miou = tuning.tune_probability_cutoffs(kept_iou, truth.any(axis=(-2, -1)), probabilities)
    for t, cutoff in enumerate(tuning.PROBABILITY_CUTOFFS):  # by brute force: segment again under the cutoff
        masks = heatmap_to_mask(maps, output_size=truth.shape[-2:], signed="raw", probability=probabilities,
                                probability_cutoff=cutoff)
        union = masks | truth
        values = np.where(union.any(axis=(-2, -1)), (masks & truth).sum(axis=(-2, -1)) /
                          np.maximum(union.sum(axis=(-2, -1)), 1), np.nan)
        np.testing.assert_allclose(miou[t], np.nanmean(values, axis=0), rtol=1e-12)
    assert best.tolist() == [tuning.PROBABILITY_CUTOFFS[int(np.argmax(miou[:, c]))] for c in range(3)]
    assert tuning.PROBABILITY_CUTOFFS.tolist() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


def test_chexlocalize_csv_layouts_round_trip_and_bad_files_fail_in_one_line(tmp_path):
    thresholds = tmp_path / "tuning_results.csv"  # CheXlocalize's tune_heatmap_threshold.py layout
    thresholds.write_text("threshold,task\n0.4,Airspace Opacity\n0.2,Cardiomegaly\n")
    assert tuning.read_thresholds(thresholds) == {"Lung Opacity": 0.4, "Cardiomegaly": 0.2}
    tuning.write_thresholds(tmp_path / "ours.csv", {"Lung Opacity": 0.4, "Cardiomegaly": 0.2, "Edema": np.nan})
    assert (tmp_path / "ours.csv").read_text() == thresholds.read_text()
    cutoffs = tmp_path / "probability_tuning_results.csv"  # tune_probability_threshold.py's layout
    cutoffs.write_text("prob_threshold,mIoU,task\n0.0,0.123,Airspace Opacity\n0.1,0.204,Airspace Opacity\n"
                       "0.2,0.204,Airspace Opacity\n0.0,0.191,Enlarged Cardiomediastinum\n"
                       "0.1,0.041,Enlarged Cardiomediastinum\n")
    assert tuning.read_probability_cutoffs(cutoffs) == {"Lung Opacity": 0.1, "Enlarged Cardiomediastinum": 0.0}
    miou = np.full((9, 10), 0.1)
    miou[3, 0] = 0.5
    tuning.write_probability_cutoffs(tmp_path / "written.csv", miou)
    assert tuning.read_probability_cutoffs(tmp_path / "written.csv")["Enlarged Cardiomediastinum"] == 0.3
    for text, message in (("threshold,pathology\n0.4,Edema\n", "missing column"),
                          ("threshold,task\n1.4,Edema\n", "line 2: threshold must be a number in \\[0, 1\\]"),
                          ("threshold,task\n0.4,Nodule\n", "unknown task"),
                          ("threshold,task\n0.4,Edema\n0.5,Edema\n", "listed twice")):
        thresholds.write_text(text)
        with pytest.raises(DataError, match=message):
            tuning.read_thresholds(thresholds)
    with pytest.raises(DataError, match="not found"):
        tuning.read_probability_cutoffs(tmp_path / "missing.csv")
