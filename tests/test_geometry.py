"""CheXlocalize's pathology features (area, instances, elongation, irrectangularity) on hand-computed
masks and on OpenCV's values, and the geometry regression on synthetic data with known coefficients."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from skimage.draw import polygon

from shamsul_utils import plots
from shamsul_utils.datasets import ExpertMasks
from shamsul_utils.geometry import FEATURES, features_table, geometry_regression, mask_features


def _mask(shape, *blocks):
    mask = np.zeros(shape, bool)
    for block in blocks:
        mask[block] = True
    return mask


def _polygon(shape, *vertex_lists, holes=()):
    mask = np.zeros(shape, bool)
    for vertices, value in [(v, True) for v in vertex_lists] + [(v, False) for v in holes]:
        vertices = np.asarray(vertices)
        rows, columns = polygon(vertices[:, 0], vertices[:, 1], shape)
        mask[rows, columns] = value
    return mask


def test_a_square_has_elongation_one_and_fills_its_rectangle():
    features = mask_features(_mask((10, 10), np.s_[2:7, 2:7]))
    assert features == {"area": 0.25, "n_instances": 1, "elongation": 1.0, "irrectangularity": 0.0}


def test_a_rectangle_is_measured_between_pixel_centres():
    # 4 x 16 pixels: the border polygon joins pixel centres, a 3 x 15 rectangle (OpenCV's convention)
    features = mask_features(_mask((20, 20), np.s_[2:6, 2:18]))
    assert features["area"] == pytest.approx(64 / 400)
    assert features["elongation"] == pytest.approx(15 / 3)
    assert features["irrectangularity"] == pytest.approx(0.0)
    # 1 x 4: the rectangle has a zero side (CheXlocalize's script divides by zero): NaN shape features
    line = mask_features(_mask((10, 10), np.s_[2:3, 2:6]))
    assert line["area"] == pytest.approx(0.04) and line["n_instances"] == 1
    assert np.isnan(line["elongation"]) and np.isnan(line["irrectangularity"])
    assert np.isnan(mask_features(_mask((5, 5), np.s_[2:3, 2:3]))["elongation"])  # a single pixel


def test_an_l_shape_by_hand():
    # arms 6 x 2 (rows 2-7, columns 2-3) and 2 x 6 (rows 6-7, columns 2-7). Border through pixel
    # centres (x = column, y = row): (2,2) (3,2) (3,5) (4,6) (7,6) (7,7) (2,7); pixel (6, 3) is
    # interior, so the inner corner is cut by the diagonal (3,5)-(4,6). Its area: the 5 x 5 box
    # minus the 4 x 4 notch plus the half-pixel triangle = 25 - 16 + 0.5 = 9.5; the minimum-area
    # rectangle is the 5 x 5 box.
    features = mask_features(_mask((12, 12), np.s_[2:8, 2:4], np.s_[6:8, 2:8]))
    assert features["area"] == pytest.approx(20 / 144)
    assert features["elongation"] == pytest.approx(1.0)
    assert features["irrectangularity"] == pytest.approx(1 - 9.5 / 25)


def test_a_ring_is_measured_by_its_outer_border_and_components_by_8_connectivity():
    ring = _mask((12, 12), np.s_[2:9, 2:9])
    ring[4:7, 4:7] = False  # the outer border (24 points) is longer than the hole's (12): hole ignored
    features = mask_features(ring)
    assert features["area"] == pytest.approx(40 / 144) and features["n_instances"] == 1
    assert features["elongation"] == pytest.approx(1.0) and features["irrectangularity"] == pytest.approx(0.0)
    # two components: area counts both, the shape features the longest border (the 10 x 4 block:
    # 9 x 3 between pixel centres), diagonal neighbours are one component
    two = mask_features(_mask((20, 20), np.s_[1:4, 1:4], np.s_[8:18, 8:12]))
    assert two["area"] == pytest.approx((9 + 40) / 400) and two["n_instances"] == 2
    assert two["elongation"] == pytest.approx(3.0) and two["irrectangularity"] == pytest.approx(0.0)
    assert mask_features(_mask((6, 6), np.s_[1:2, 1:2], np.s_[2:3, 2:3]))["n_instances"] == 1
    edge = mask_features(_mask((6, 6), np.s_[0:6, 0:3]))  # touching the image border
    assert edge["elongation"] == pytest.approx(2.5)


def test_an_empty_mask_is_a_negative():
    features = mask_features(np.zeros((8, 8), bool))
    assert features["area"] == 0.0 and features["n_instances"] == 0
    assert np.isnan(features["elongation"]) and np.isnan(features["irrectangularity"])
    with pytest.raises(ValueError, match="2-D"):
        mask_features(np.zeros((2, 8, 8), bool))


# OpenCV 4.14's values (cv2.findContours(mask, 1, 1), the longest contour, cv2.minAreaRect and
# cv2.contourArea: CheXlocalize's get_geometric_features) for polygons with integer vertices.
OPENCV = {
    "rotated_bar": ([(5, 10), (12, 3), (58, 49), (51, 56)], (), (64, 64), 6.571428, 0.0),
    "star": ([(2, 32), (24, 38), (30, 62), (36, 40), (60, 44), (40, 30), (46, 6), (30, 22), (10, 8), (22, 28)],
             (), (64, 64), 1.096176, 0.732473),
    "crescent": ([(5, 10), (10, 50), (55, 45), (50, 5)], [[(0, 20), (15, 45), (45, 40), (40, 12), (0, 0)]],
                 (60, 60), 1.126027, 0.693077),
    # several minimum-area rectangles tie (OpenCV's pick among them follows float32 rounding):
    # irrectangularity agrees, elongation is not compared
    "triangle": ([(4, 4), (40, 10), (14, 44)], (), (48, 48), None, 0.533333),
    "holed": ([(5, 5), (5, 55), (55, 50), (50, 8)], [[(15, 15), (15, 40), (40, 40), (40, 15)]], (60, 60), None,
              0.1506),
}


@pytest.mark.parametrize("name", OPENCV)
def test_features_agree_with_opencv(name):
    vertices, holes, shape, elongation, irrectangularity = OPENCV[name]
    mask = _polygon(shape, vertices, holes=holes)
    features = mask_features(mask)
    assert features["area"] == pytest.approx(mask.sum() / mask.size)
    assert features["irrectangularity"] == pytest.approx(irrectangularity, abs=2e-6)
    if elongation is not None:
        assert features["elongation"] == pytest.approx(elongation, rel=2e-6)


def test_two_blobs_use_the_longest_border():
    mask = _polygon((80, 80), [(5, 5), (5, 25), (20, 30), (25, 10)], [(40, 50), (70, 45), (75, 70), (50, 75)])
    features = mask_features(mask)
    assert features["n_instances"] == 2
    assert features["elongation"] == pytest.approx(1.148148, rel=2e-6)  # OpenCV
    assert features["irrectangularity"] == pytest.approx(0.151971, abs=2e-6)


def test_features_table_lists_positive_pairs_from_arrays_and_expert_masks():
    masks = np.zeros((2, 3, 10, 10), bool)
    masks[0, 0, 2:7, 2:7] = True
    masks[1, 2, 2:6, 1:9] = True
    classes = ("A", "B", "C")
    table = features_table(masks, cxr_ids=["x", "y"], classes=classes)
    assert table.columns.tolist() == ["cxr_id", "class", *FEATURES]
    assert table[["cxr_id", "class"]].values.tolist() == [["x", "A"], ["y", "C"]]
    assert table["area"].tolist() == pytest.approx([0.25, 0.32])
    assert table["elongation"].tolist() == pytest.approx([1.0, 7 / 3])
    expert = ExpertMasks.from_arrays(masks, cxr_ids=["x", "y"], classes=classes)
    pd.testing.assert_frame_equal(features_table(expert), table)
    full = features_table(expert, include_empty=True)
    assert len(full) == 6 and (full["area"] == 0).sum() == 4 and full["elongation"].isna().sum() == 4


def _synthetic_pairs(seed=0, images=120, classes=("A", "B", "C")):
    rng = np.random.default_rng(seed)
    rows, features = [], []
    for image in range(images):
        for name in classes[: 1 + image % len(classes)]:
            area, elongation = rng.uniform(0.01, 0.4), rng.uniform(1, 6)
            features.append({"cxr_id": f"p{image}", "class": name, "area": area, "n_instances": rng.integers(1, 4),
                             "elongation": elongation, "irrectangularity": rng.uniform(0, 0.8)})
            for method in ("M1", "M2"):
                iou = 0.5 * area + rng.normal(0, 0.02)
                rows.append({"method": method, "cxr_id": f"p{image}", "class": name, "iou": iou,
                             "segmented": True, "hit": float(rng.random() < 0.2 + area)})
    return pd.DataFrame(rows), pd.DataFrame(features)


@pytest.mark.numerics
def test_regression_recovers_a_known_coefficient():
    pairs, features = _synthetic_pairs()
    table = geometry_regression(pairs, features, scaling="none", n_resamples=400)
    iou = table[(table["outcome"] == "iou")].set_index(["method", "feature"])
    for method in ("M1", "M2"):
        area = iou.loc[(method, "area")]
        assert area["low"] < 0.5 < area["high"] and area["low"] > 0  # covers 0.5, excludes 0
        assert area["boot_low"] < 0.5 < area["boot_high"] and area["boot_low"] > 0
        assert area["coef"] == pytest.approx(0.5, abs=0.03)
        for unrelated in ("elongation", "irrectangularity", "n_instances"):
            row = iou.loc[(method, unrelated)]
            assert row["low"] < 0 < row["high"] and row["boot_low"] < 0 < row["boot_high"]
    # the OLS interval is the textbook one (CheXlocalize uses statsmodels' conf_int)
    part = pairs[pairs["method"] == "M1"].merge(features, on=["cxr_id", "class"])
    fit = stats.linregress(part["area"], part["iou"])
    half = stats.t.ppf(0.975, len(part) - 2) * fit.stderr
    row = iou.loc[("M1", "area")]
    assert row["coef"] == pytest.approx(fit.slope) and row["low"] == pytest.approx(fit.slope - half)
    assert row["p_value"] == pytest.approx(fit.pvalue, abs=1e-12)
    assert row["p_bonferroni"] == pytest.approx(min(1.0, 4 * fit.pvalue), abs=1e-12)
    assert row["n"] == len(part) and row["images"] == 120
    # min-max scaling (CheXlocalize): the coefficient spans the feature's observed range
    scaled = geometry_regression(pairs, features, n_resamples=50).set_index(["method", "outcome", "feature"])
    span = features["area"].max() - features["area"].min()
    assert scaled.loc[("M1", "iou", "area"), "coef"] == pytest.approx(fit.slope * span)
    assert scaled.loc[("M1", "hit", "area"), "coef"] > 0


@pytest.mark.numerics
def test_joint_model_class_effects_and_the_true_positive_slice():
    pairs, features = _synthetic_pairs(seed=1)
    merged = pairs.merge(features, on=["cxr_id", "class"])
    pairs["iou"] = 0.5 * merged["area"] + 0.05 * merged["elongation"] + np.random.default_rng(2).normal(
        0, 0.02, len(pairs))
    joint = geometry_regression(pairs, features, model="joint", scaling="none", n_resamples=200,
                                outcomes=("iou",)).set_index(["method", "feature"])
    for method in ("M1", "M2"):
        assert joint.loc[(method, "area"), "low"] < 0.5 < joint.loc[(method, "area"), "high"]
        assert joint.loc[(method, "elongation"), "low"] < 0.05 < joint.loc[(method, "elongation"), "high"]
    within = geometry_regression(pairs, features, class_effects=True, scaling="none", n_resamples=200,
                                 outcomes=("iou",)).set_index(["method", "feature"])
    assert within.loc[("M1", "area"), "low"] < 0.5 < within.loc[("M1", "area"), "high"]
    # an empty segmentation leaves the IoU true-positive slice, not the hit regression
    pairs.loc[pairs.index[pairs["method"] == "M1"][:10], "segmented"] = False
    sliced = geometry_regression(pairs, features, n_resamples=20).set_index(["method", "outcome", "feature"])
    full = geometry_regression(pairs, features, n_resamples=20, iou_slice="full").set_index(
        ["method", "outcome", "feature"])
    assert sliced.loc[("M1", "iou", "area"), "n"] == full.loc[("M1", "iou", "area"), "n"] - 10
    assert sliced.loc[("M1", "hit", "area"), "n"] == full.loc[("M1", "hit", "area"), "n"]


def test_regression_refuses_pairs_without_features_and_keeps_constant_features():
    pairs, features = _synthetic_pairs(images=20)
    with pytest.raises(ValueError, match="no features"):
        geometry_regression(pairs, features.iloc[1:], n_resamples=10)
    with pytest.raises(ValueError, match="missing columns: hit"):
        geometry_regression(pairs.drop(columns="hit"), features, n_resamples=10)
    features["n_instances"] = 1  # constant: no slope, reported as NaN rather than a failure
    table = geometry_regression(pairs, features, n_resamples=10)
    constant = table[table["feature"] == "n_instances"]
    assert constant["coef"].isna().all() and table[table["feature"] == "area"]["coef"].notna().all()


def test_geometry_figure_draws_every_feature_and_method():
    pairs, features = _synthetic_pairs(images=30)
    regression = geometry_regression(pairs, features, n_resamples=20)
    figure = plots.geometry_figure(regression, features, pairs)
    assert len(figure.axes) == len(FEATURES) + 2
    assert "min-max" in figure._suptitle.get_text()
    plots.plt.close(figure)
    with pytest.raises(ValueError, match="interval"):
        plots.geometry_figure(regression, features, pairs, interval="wald")
