"""Pathology geometry of the expert masks and its relation to localisation (CheXlocalize).

CheXlocalize (Saporta et al. 2022, Fig. 3 and Table 2) asks which pathologies saliency methods
fail on: it describes every non-empty expert mask by four features and regresses a method's IoU
and hit/miss on each of them. The definitions below are those of CheXlocalize's
``compute_pathology_features.py`` (``get_geometric_features``, commit 616aadf) and
``regression_pathology_features.py`` + ``utils.py`` (``run_linear_regression``, commits
71d6d38 / 17f642b):

* **area** = foreground pixels / image pixels (``np.sum(segm) / (H * W)``), every component.
* The mask's contours are ``cv2.findContours(segm, RETR_LIST, CHAIN_APPROX_NONE)``: 8-connected
  borders through the centres of the boundary pixels, outer borders and hole borders alike. Only
  the **longest** contour (most points, the first listed on a tie) is used for the shape features.
* **elongation** = ``max(w, h) / min(w, h)`` of ``cv2.minAreaRect`` of that contour.
* **irrectangularity** = ``1 - cv2.contourArea(contour) / (w * h)``: the share of the minimum-area
  rectangle the contour's polygon does *not* fill (not a convex-hull irregularity).
* Because the polygon runs through pixel *centres*, a filled ``a x b`` block has a ``(a - 1) x
  (b - 1)`` rectangle (a 4 x 16 block has elongation 15 / 3 = 5); with several components only the
  longest border counts; a ring's hole is ignored (its outer border is longer and encloses it).
* **n_instances**: CheXlocalize counts the radiologists' annotation polygons.
* Negatives (empty masks) get area 0, 0 instances and NaN shape features; only positive pairs
  enter the regression.
* Regression: the pairs of all 10 pathologies are pooled (no class terms), each feature is
  min-max normalised over the pooled positive pairs, and **one simple OLS per feature**
  (``metric ~ feature``) gives the coefficient, its 95 % t-interval and a p-value that CheXlocalize
  multiplies by 4 (Bonferroni over the four features). IoU is the true-positive slice (README:
  "only the true positive slice was included in each regression"); hit/miss covers every pair
  with an expert mask. A Spearman correlation with a Fisher-z interval is reported beside it.

Deviations:

* OpenCV is not a dependency of this project, so the contours come from scikit-image's marching
  squares (``find_contours`` at level 0.75, ``fully_connected="high"`` so that foreground is
  8-connected as in OpenCV) with every vertex rounded to its foreground pixel centre, which gives
  OpenCV's border (the same pixels, point count and polygon area); a tie in length goes to the
  contour OpenCV lists first. The minimum-area rectangle is computed by rotating calipers over the
  convex hull's edges, as ``cv2.minAreaRect`` does. Against OpenCV 4.14 on 620 masks (random blobs,
  rotated rectangles and ellipses, 220 phantom masks): area, the chosen contour's length and
  irrectangularity agree everywhere (to 5e-7), elongation in 617. The three others are shapes where
  several rectangles share the minimum area (near-triangular or symmetric hulls): OpenCV's pick
  among them hangs on float32 rounding; we take the one turned least from the image axes.
* A degenerate rectangle (a single pixel or a one-pixel-wide line: ``min(w, h) == 0``) stops
  CheXlocalize's script with ``ZeroDivisionError``; here its elongation and irrectangularity are NaN.
* **n_instances** counts the mask's 8-connected components (OpenCV's foreground connectivity):
  the phantom has no annotation polygons; overlapping polygons would count once here.

Beyond CheXlocalize, :func:`geometry_regression` reports 95 % intervals of 1000 seeded bootstrap
resamples of images (the project's convention, pairs of one image move together) and offers a
joint model and class effects as secondary analyses.

References
----------
Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation.
Nature Machine Intelligence 4, 867-878. Code: github.com/rajpurkarlab/cheXlocalize.
Freeman, H. & Shapira, R. (1975). Determining the minimum-area encasing rectangle for an
arbitrary closed curve. Communications of the ACM 18(7), 409-413.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from skimage import measure

from .labels import LOCALIZED_CLASSES
from .metrics.bootstrap import resample_indices

__all__ = ["FEATURES", "mask_features", "features_table", "geometry_regression", "scored_geometry"]

FEATURES: tuple[str, ...] = ("area", "n_instances", "elongation", "irrectangularity")  # CheXlocalize's four
_CONTOUR_LEVEL = 0.75  # any level in (0.5, 1) puts every marching-squares vertex nearest its foreground pixel


def _longest_contour(mask: np.ndarray) -> np.ndarray:
    """The contour CheXlocalize measures: the longest of OpenCV's ``RETR_LIST`` /
    ``CHAIN_APPROX_NONE`` contours of a non-empty mask, int ``[k, 2]`` (row, column) pixel centres.

    Marching squares at a level above 0.5 puts every vertex nearer its foreground pixel than its
    background pixel, so rounding gives the 8-connected border pixels in tracing order. Ties in
    length go to the contour OpenCV lists first: its list runs backwards in the raster order of the
    border's starting pixel (an outer border's first pixel; for a hole, the pixel left of the
    hole's first pixel).
    """
    rows, columns = np.nonzero(mask)
    crop = np.pad(mask[rows.min():rows.max() + 1, columns.min():columns.max() + 1], 1).astype(np.float32)
    best, best_key = None, None
    for contour in measure.find_contours(crop, _CONTOUR_LEVEL, fully_connected="high"):
        points = np.rint(contour).astype(np.int64)
        keep = np.any(points != np.roll(points, 1, axis=0), axis=1)  # drop repeats, incl. the closing point
        points = points[keep] if keep.any() else points[:1]
        if _signed_area(contour) >= 0:  # an outer border (foreground on the left)
            start = tuple(points[np.lexsort((points[:, 1], points[:, 0]))[0]])
        else:  # a hole: its background pixels lie beyond each vertex, at 4x the vertex's offset
            hole = np.rint(4 * contour - 3 * np.rint(contour)).astype(np.int64)
            first = hole[np.lexsort((hole[:, 1], hole[:, 0]))[0]]
            start = (first[0], first[1] - 1)
        key = (len(points), start)
        if best_key is None or key > best_key:
            best, best_key = points, key
    return best


def _signed_area(points: np.ndarray) -> float:
    """Shoelace area of a closed polygon of (row, column) points, positive counter-clockwise in
    (column, row) coordinates; ``cv2.contourArea`` is its absolute value."""
    x, y = points[:, 1].astype(float), points[:, 0].astype(float)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain on integer points (only each row's extreme points can be vertices)."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    ordered = points[order]
    first = np.r_[True, ordered[1:, 0] != ordered[:-1, 0]]
    last = np.r_[ordered[1:, 0] != ordered[:-1, 0], True]
    candidates = np.unique(ordered[first | last], axis=0)
    if len(candidates) < 3:
        return candidates

    def chain(sequence):
        hull: list[tuple[int, int]] = []
        for x, y in sequence.tolist():
            while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (y - hull[-2][1])
                                      - (hull[-1][1] - hull[-2][1]) * (x - hull[-2][0])) <= 0:
                hull.pop()
            hull.append((x, y))
        return hull

    return np.array(chain(candidates)[:-1] + chain(candidates[::-1])[:-1])


def _min_area_rectangle(points: np.ndarray) -> tuple[float, float]:
    """Sides of the minimum-area rectangle enclosing points (rotating calipers over hull edges)."""
    hull = _convex_hull(points).astype(float)
    if len(hull) < 2:
        return 0.0, 0.0
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    directions = edges[lengths > 0] / lengths[lengths > 0, None]
    normals = np.stack([-directions[:, 1], directions[:, 0]], axis=1)
    along, across = hull @ directions.T, hull @ normals.T  # [vertices, edges]
    widths = along.max(axis=0) - along.min(axis=0)
    heights = across.max(axis=0) - across.min(axis=0)
    areas = widths * heights
    # several rectangles can share the minimum area (symmetric pixel shapes); OpenCV's choice then
    # hangs on float rounding: take the one turned least from the image axes
    angles = np.degrees(np.arctan2(directions[:, 0], directions[:, 1])) % 90.0
    tied = np.flatnonzero(areas <= areas.min() * (1 + 1e-9))
    best = int(tied[np.argmin(np.round(angles[tied], 6))])
    return float(widths[best]), float(heights[best])


def mask_features(mask: np.ndarray) -> dict[str, float]:
    """CheXlocalize's geometric features of one binary mask.

    Parameters
    ----------
    mask : array_like of bool, shape (H, W)
        An expert segmentation at its image's size.

    Returns
    -------
    dict
        ``area`` (share of the image covered), ``n_instances`` (8-connected components),
        ``elongation`` (long / short side of the minimum-area rectangle around the longest
        contour) and ``irrectangularity`` (1 - contour polygon area / rectangle area). An empty
        mask gives area 0, 0 instances and NaN shape features (CheXlocalize's negatives); a
        degenerate rectangle (single pixel, one-pixel line) NaN shape features.

    Notes
    -----
    The contour runs through boundary pixel centres (OpenCV's convention, see the module
    docstring), so a filled ``a x b`` block has a rectangle of ``(a - 1) x (b - 1)``.

    References
    ----------
    Saporta, A. et al. (2022), Nature Machine Intelligence 4, 867-878;
    cheXlocalize ``compute_pathology_features.py``, ``get_geometric_features``.

    Examples
    --------
    >>> mask = np.zeros((20, 20), bool)
    >>> mask[2:6, 2:18] = True  # a 4 x 16 block: pixel centres span 3 x 15
    >>> features = mask_features(mask)
    >>> float(features["area"]), features["n_instances"], features["elongation"], features["irrectangularity"]
    (0.16, 1, 5.0, 0.0)
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    area = float(mask.mean()) if mask.size else 0.0
    if not mask.any():
        return {"area": area, "n_instances": 0, "elongation": np.nan, "irrectangularity": np.nan}
    longest = _longest_contour(mask)
    width, height = _min_area_rectangle(longest)
    degenerate = min(width, height) <= 0
    components = int(measure.label(mask, connectivity=2).max())
    return {"area": area, "n_instances": components,
            "elongation": np.nan if degenerate else max(width, height) / min(width, height),
            "irrectangularity": np.nan if degenerate else 1.0 - abs(_signed_area(longest)) / (width * height)}


def features_table(masks, *, cxr_ids=None, classes=LOCALIZED_CLASSES, include_empty: bool = False) -> pd.DataFrame:
    """:func:`mask_features` of every (image, class) expert mask, one mask decoded at a time.

    Parameters
    ----------
    masks : ExpertMasks or array_like
        :class:`shamsul_utils.datasets.ExpertMasks` (decoded one mask at a time, at its
        original size), or bool ``[N, C, H, W]`` / a list of ``[C, H_n, W_n]``.
    cxr_ids, classes : sequence of str, optional
        For arrays only (an ``ExpertMasks`` knows its own): image ids (default ``"0"``,
        ``"1"``, ...) and class names (default the 10 localised classes).
    include_empty : bool
        Also list the empty masks (area 0, NaN shape features), as CheXlocalize's feature CSVs
        do; by default only the positive pairs the regression uses.

    Returns
    -------
    pandas.DataFrame
        ``cxr_id, class, area, n_instances, elongation, irrectangularity``, images in order.
    """
    from .datasets import ExpertMasks

    if not isinstance(masks, ExpertMasks):
        masks = ExpertMasks.from_arrays(masks, cxr_ids=cxr_ids, classes=classes)
    present = masks.present
    rows, columns = np.nonzero(np.ones_like(present) if include_empty else present)
    records = [mask_features(masks[row, column]) if present[row, column] else mask_features(np.zeros((1, 1), bool))
               for row, column in zip(rows.tolist(), columns.tolist(), strict=True)]
    table = pd.DataFrame.from_records(records, columns=list(FEATURES))
    table["area"] = masks.area[rows, columns]  # from the run lengths: identical, and no rounding of a float mean
    table.insert(0, "class", np.asarray(masks.classes, dtype=object)[columns])
    table.insert(0, "cxr_id", np.asarray(masks.cxr_ids, dtype=object)[rows])
    return table.astype({"n_instances": int})


def _range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if len(finite) else (np.nan, np.nan)


def _scaled(values: np.ndarray, scaling: str) -> tuple[np.ndarray, bool]:
    """A feature min-max / z-scaled over the pooled pairs (NaN kept); False when it is constant."""
    low, high = _range(values)
    if not np.isfinite(low) or low == high:
        return values, False  # CheXlocalize's normalize() returns a constant column unchanged
    if scaling == "minmax":
        return (values - low) / (high - low), True
    if scaling == "zscore":
        return (values - np.nanmean(values)) / np.nanstd(values, ddof=1), True
    return values, True


def _fit(x: np.ndarray, y: np.ndarray, images: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """OLS of y on [1, x]: coefficients, t-interval half-widths and p-values; and the coefficients
    of every bootstrap resample of images (rows of ``counts``: how often each image was drawn)."""
    design = np.column_stack([np.ones(len(y)), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = len(y) - design.shape[1]
    residual = y - design @ coef
    with np.errstate(divide="ignore", invalid="ignore"):
        covariance = np.linalg.pinv(design.T @ design) * (residual @ residual) / dof
        se = np.sqrt(np.diag(covariance))
        p_value = 2 * stats.t.sf(np.abs(coef / se), dof)
    half = stats.t.ppf(0.975, dof) * se if dof > 0 else np.full_like(se, np.nan)
    weights = counts[:, images]  # [resamples, pairs]
    gram = np.einsum("bi,ij,ik->bjk", weights, design, design)
    moment = np.einsum("bi,ij,i->bj", weights, design, y)
    boot = np.einsum("bjk,bk->bj", np.linalg.pinv(gram), moment)
    return coef, half, p_value, boot


def geometry_regression(pairs: pd.DataFrame, features: pd.DataFrame, *, outcomes=("iou", "hit"),
                        feature_names=FEATURES, model: str = "separate", class_effects: bool = False,
                        scaling: str = "minmax", iou_slice: str = "true_positive", n_resamples: int = 1000,
                        seed: int = 0) -> pd.DataFrame:
    """Regress each method's localisation on the expert masks' geometry, CheXlocalize's way.

    Parameters
    ----------
    pairs : pandas.DataFrame
        One row per method, image and class with an expert mask
        (:func:`shamsul_utils.evaluation.per_pair_table`): ``method, cxr_id, class`` and the
        outcome columns; ``segmented`` (whether the method's segmentation is non-empty) selects
        the IoU true-positive slice (without it every pair counts as segmented).
    features : pandas.DataFrame
        :func:`features_table` of (at least) the same images.
    outcomes : sequence of str
        Outcome columns of ``pairs``; ``"iou"`` and ``"hit"`` are CheXlocalize's two.
    feature_names : sequence of str
        Features to regress on; CheXlocalize's Bonferroni factor is their number.
    model : {"separate", "joint"}
        ``"separate"`` (CheXlocalize): one simple regression per feature; ``"joint"``
        (secondary): all features in one model, each coefficient adjusted for the others.
    class_effects : bool
        Add one indicator per class (secondary: the effect of geometry within a class).
        CheXlocalize pools the classes without class terms.
    scaling : {"minmax", "zscore", "none"}
        ``"minmax"`` (CheXlocalize): each feature mapped to [0, 1] over the method's pooled
        pairs, so a coefficient is the change of the outcome across the feature's observed range.
    iou_slice : {"true_positive", "full"}
        IoU pairs kept: CheXlocalize's true-positive slice (a non-empty segmentation), or all.
    n_resamples, seed : int
        Bootstrap over images for ``boot_low`` / ``boot_high``.

    Returns
    -------
    pandas.DataFrame
        Per method, outcome and feature (with ``model`` and ``scaling``): ``coef`` with its 95 % OLS t-interval ``low, high``
        (CheXlocalize) and its 95 % percentile interval of image resamples
        ``boot_low, boot_high``; ``p_value`` and ``p_bonferroni`` (times the number of
        features, capped at 1); ``spearman`` with its Fisher-z interval; ``n`` pairs,
        ``images``; ``feature_min, feature_max`` (the observed range the scaling used).

    References
    ----------
    Saporta, A. et al. (2022), Nature Machine Intelligence 4, 867-878, Table 2;
    cheXlocalize ``regression_pathology_features.py`` and ``utils.run_linear_regression``.
    """
    if model not in ("separate", "joint"):
        raise ValueError(f"model must be 'separate' or 'joint', got {model!r}")
    if scaling not in ("minmax", "zscore", "none"):
        raise ValueError(f"scaling must be 'minmax', 'zscore' or 'none', got {scaling!r}")
    if iou_slice not in ("true_positive", "full"):
        raise ValueError(f"iou_slice must be 'true_positive' or 'full', got {iou_slice!r}")
    feature_names = list(feature_names)
    missing = [name for name in ("method", "cxr_id", "class", *outcomes) if name not in pairs.columns]
    missing += [name for name in feature_names if name not in features.columns]
    if missing:
        raise ValueError(f"missing columns: {', '.join(missing)}")
    merged = pairs.merge(features[["cxr_id", "class", *feature_names]], on=["cxr_id", "class"], how="left",
                         validate="many_to_one", indicator=True)
    unmatched = merged["_merge"] != "both"
    if unmatched.any():
        example = merged.loc[unmatched, ["cxr_id", "class"]].iloc[0].tolist()
        raise ValueError(f"{int(unmatched.sum())} pairs have no features (e.g. {example}): "
                         "compute features_table for the same images")
    records = []
    groups = [[name] for name in feature_names] if model == "separate" else [feature_names]
    for method, part in merged.groupby("method", sort=False):
        images = pd.factorize(part["cxr_id"])[0]
        draws = resample_indices(int(images.max()) + 1, n_resamples, seed)
        counts = np.zeros((n_resamples, int(images.max()) + 1))  # how often each image is drawn
        np.add.at(counts, (np.repeat(np.arange(n_resamples), draws.shape[1]), draws.ravel()), 1.0)
        raw = {name: part[name].to_numpy(float) for name in feature_names}
        scaled = {name: _scaled(values, scaling) for name, values in raw.items()}
        dummies = (pd.get_dummies(part["class"], drop_first=True, dtype=float).to_numpy()
                   if class_effects else np.zeros((len(part), 0)))
        segmented = part["segmented"].to_numpy(bool) if "segmented" in part else np.ones(len(part), bool)
        for outcome in outcomes:
            y = part[outcome].to_numpy(float)
            if outcome == "iou" and iou_slice == "true_positive":
                y = np.where(segmented, y, np.nan)
            for group in groups:
                usable = [name for name in group if scaled[name][1]]  # a constant feature has no slope
                x = np.column_stack([scaled[name][0] for name in usable] + [dummies])
                keep = np.isfinite(y) & np.isfinite(np.column_stack([raw[name] for name in group])).all(axis=1)
                fitted = {}
                if usable and keep.sum() > x.shape[1] + 1:
                    coef, half, p_value, boot = _fit(x[keep], y[keep], images[keep], counts)
                    for index, name in enumerate(usable, start=1):
                        low, high = np.nanquantile(boot[:, index], [0.025, 0.975])
                        fitted[name] = {"coef": coef[index], "low": coef[index] - half[index],
                                        "high": coef[index] + half[index], "boot_low": low, "boot_high": high,
                                        "p_value": p_value[index]}
                for name in group:
                    rho, rho_low, rho_high = _spearman(y[keep], raw[name][keep])
                    records.append({"method": method, "outcome": outcome, "feature": name, "model": model,
                                    "scaling": scaling,
                                    **fitted.get(name, {}), "spearman": rho, "spearman_low": rho_low,
                                    "spearman_high": rho_high, "n": int(keep.sum()),
                                    "images": len(np.unique(images[keep])),
                                    **dict(zip(("feature_min", "feature_max"), _range(raw[name]), strict=True))})
    columns = ["method", "outcome", "feature", "model", "scaling", "coef", "low", "high", "boot_low", "boot_high", "p_value",
               "p_bonferroni", "spearman", "spearman_low", "spearman_high", "n", "images", "feature_min",
               "feature_max"]
    table = pd.DataFrame.from_records(records).reindex(columns=columns)
    table["p_bonferroni"] = np.minimum(1.0, table["p_value"] * len(feature_names))
    return table


def _spearman(y: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    """Spearman's rho with CheXlocalize's Fisher-z 95 % interval (standard error 1 / sqrt(n - 3))."""
    if len(y) < 4 or np.ptp(y) == 0 or np.ptp(x) == 0:
        return np.nan, np.nan, np.nan
    rho = float(stats.spearmanr(y, x).statistic)
    delta = 1.96 / np.sqrt(len(y) - 3)
    z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
    return rho, float(np.tanh(z - delta)), float(np.tanh(z + delta))


def scored_geometry(pairs: pd.DataFrame, segmentations: dict, *, method: str = "method", n_resamples: int = 1000,
                    seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`features_table` and :func:`geometry_regression` for the score CLI's ``pairs.csv``
    (``python -m shamsul_utils.score --geometry``): the ground truth's masks (``{cxr_id: {class:
    COCO RLE}}``, decoded one at a time) and the method's per-pair scores (CheXlocalize's task names)."""
    from .datasets import ExpertMasks, SplitData
    from .labels import from_chexlocalize_task

    ids = [cxr_id for cxr_id in dict.fromkeys(pairs["cxr_id"]) if cxr_id in segmentations]
    split = SplitData("ground truth", pd.DataFrame({"cxr_id": [], "image_path": []}), segmentations)
    features = features_table(ExpertMasks(split, ids, check_image_size=False))
    scored = pairs[pairs["gt_present"] > 0].assign(
        method=method, **{"class": pairs["task"].map(from_chexlocalize_task)}, segmented=pairs["pred_present"] > 0)
    regression = geometry_regression(scored, features, n_resamples=n_resamples, seed=seed)
    return features, regression
