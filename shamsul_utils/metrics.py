"""Evaluation: localisation (IoU, pointing game), classification (AUROC, AUPRC), bootstrap
confidence intervals, faithfulness (deletion / insertion) and sanity checks (randomisation).

Every per-image score is an array ``[N, C]`` (image x class) with NaN where the score is
undefined, so that one NaN-aware bootstrap over images serves every table.

References
----------
Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation.
Nature Machine Intelligence 4, 867-878 (CheXlocalize; github.com/rajpurkarlab/cheXlocalize).
Zhang, J. et al. (2018). Top-down neural attention by excitation backprop. IJCV (pointing game).
Petsiuk, V., Das, A. & Saenko, K. (2018). RISE: randomized input sampling for explanation of
black-box models. BMVC (deletion and insertion).
Adebayo, J. et al. (2018). Sanity checks for saliency maps. NeurIPS.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = [
    "iou",
    "select_iou",
    "summarise_iou",
    "pointing_game",
    "hit_rate",
    "bootstrap_ci",
    "seed_bootstrap_ci",
    "paired_bootstrap_difference",
    "PairedDifference",
    "auroc_auprc",
    "deletion_insertion_auc",
    "FaithfulnessCurves",
    "parameter_randomisation_similarity",
    "randomise_model",
]

_VARIANTS = ("true_positive", "all", "union")
_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------- localisation
def iou(pred_masks, gt_masks) -> np.ndarray:
    """Intersection over union of binary masks, over the last two axes.

    Parameters
    ----------
    pred_masks, gt_masks : array-like of bool, shape (..., H, W), e.g. (N, C, H, W)

    Returns
    -------
    ndarray of float, shape (...)
        NaN where both masks are empty (union 0); 0 where exactly one is empty. Choose which
        images count with :func:`select_iou`.

    Examples
    --------
    >>> a = np.zeros((2, 2), bool); a[0] = True
    >>> float(iou(a, np.ones((2, 2), bool)))
    0.5
    """
    pred = np.asarray(pred_masks, dtype=bool)
    gt = np.asarray(gt_masks, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred_masks {pred.shape} and gt_masks {gt.shape} differ in shape")
    intersection = np.logical_and(pred, gt).sum(axis=(-2, -1))
    union = np.logical_or(pred, gt).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / np.maximum(union, 1), np.nan)


def select_iou(iou_matrix, gt_present, pred_present, *, variant: str = "true_positive") -> np.ndarray:
    """Keep the IoUs of the images that a summary counts; NaN elsewhere.

    Parameters
    ----------
    iou_matrix : array-like, shape (N, C)
    gt_present, pred_present : array-like of bool, shape (N, C)
        Whether the ground-truth / predicted mask is non-empty.
    variant : {"true_positive", "all", "union"}
        ``"true_positive"``: both masks non-empty, CheXlocalize's default
        (``eval.py``, ``calculate_iou(..., true_pos_only=True)``). ``"all"``: every image with a
        ground-truth mask; an empty prediction scores 0 (CheXlocalize's older
        ``true_pos_only=False``). ``"union"``: every image where either mask is non-empty, so a
        false-positive mask also scores 0 (the current ``eval.py`` with ``true_pos_only=False``).
    """
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
    values = np.asarray(iou_matrix, dtype=float)
    gt = np.asarray(gt_present, dtype=bool)
    pred = np.asarray(pred_present, dtype=bool)
    keep = {"true_positive": gt & pred, "all": gt, "union": gt | pred}[variant]
    return np.where(keep, np.nan_to_num(values, nan=0.0), np.nan)


def summarise_iou(
    iou_matrix,
    gt_present,
    pred_present,
    *,
    variant: str = "true_positive",
    class_names: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per-class mean IoU with its bootstrap CI: columns class, n_images, miou, low, high.

    The bootstrap resamples all N images and averages the selected ones in each resample, as
    CheXlocalize's ``bootstrap_metric`` does (see :func:`bootstrap_ci`).
    """
    selected = select_iou(iou_matrix, gt_present, pred_present, variant=variant)
    estimate, low, high = bootstrap_ci(selected, n_resamples=n_resamples, seed=seed, confidence=confidence)
    names = list(class_names) if class_names is not None else [str(i) for i in range(selected.shape[1])]
    n_images = (~np.isnan(selected)).sum(axis=0)
    return pd.DataFrame({"class": names, "n_images": n_images, "miou": estimate, "low": low, "high": high})


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def pointing_game(heatmaps, gt_masks, *, ties: str = "first") -> np.ndarray:
    """Hit (1.0) when a map's maximum lies inside the ground-truth mask, else miss (0.0).

    Parameters
    ----------
    heatmaps : array-like, shape (N, C, h, w)
        Resized bilinearly (float32, ``align_corners=False``) to the masks' size if it differs,
        as CheXlocalize's ``eval.py`` (``create_map``) does.
    gt_masks : array-like of bool, shape (N, C, H, W)
    ties : {"first", "fraction", "any"}
        ``"first"``: the first maximal pixel in raster order (``np.argmax``, as CheXlocalize).
        ``"fraction"``: the share of the maximal pixels that lie in the mask, i.e. the expected
        hit under a random tie break (tie-aware; for piecewise-constant maps such as LIME's and
        SHAP's, whose maximum is a whole segment, the raster-order pick is arbitrary).
        ``"any"``: a hit when any maximal pixel is in the mask (lenient; a constant map then
        hits every non-empty mask).

    Returns
    -------
    ndarray, shape (N, C)
        1.0 / 0.0 (a fraction in [0, 1] with ``ties="fraction"``); NaN where the ground-truth mask is empty: undefined, never a hit (Quantus' pointing game
        has counted an empty mask as a hit). NaN values in a map are ignored; an all-NaN map is
        a miss (a method that points nowhere should not be dropped from the mean).

    Notes
    -----
    Pointing game of Zhang et al. (2018); CheXlocalize calls its mean the hit rate. Its
    ``eval.py`` (``get_hit_rates`` with ``create_map``) takes ``np.argmax`` of the resized map and
    scores 1 if ``gt_mask[x][y] == 1``, NaN if the mask is empty, else 0, as here. A later
    ``eval.py`` (commit a9619f8, ``get_hitrates``) takes the argmax of ``pkl_to_mask(...)``, which
    by then returns the binary Otsu segmentation, i.e. its first foreground pixel in raster
    order; we keep the map's maximum, the paper's "most representative point".
    """
    gt = np.asarray(gt_masks, dtype=bool)
    array = heatmaps.detach().cpu().numpy() if isinstance(heatmaps, torch.Tensor) else np.asarray(heatmaps)
    if array.shape[:-2] != gt.shape[:-2]:
        raise ValueError(f"heatmaps {array.shape} and gt_masks {gt.shape} need the same leading shape")
    if ties not in ("first", "fraction", "any"):
        raise ValueError(f"ties must be 'first', 'fraction' or 'any', got {ties!r}")
    maps = array.reshape(-1, *array.shape[-2:])
    masks = gt.reshape(-1, *gt.shape[-2:])
    size = masks.shape[-2:]
    result = np.empty(maps.shape[0])
    step = max(1, _CHUNK_ELEMENTS // (size[0] * size[1]))
    for start in range(0, maps.shape[0], step):
        part = _resize(torch.from_numpy(np.asarray(maps[start : start + step], dtype=np.float32)), size)
        flat = part.flatten(1).numpy()
        flat = np.where(np.isnan(flat), -np.inf, flat)
        truth = masks[start : start + step].reshape(flat.shape[0], -1)
        if ties == "first":
            hits = np.take_along_axis(truth, np.argmax(flat, axis=1)[:, None], axis=1)[:, 0]
        else:
            maximal = flat == flat.max(axis=1, keepdims=True)
            inside = (maximal & truth).sum(axis=1)
            hits = inside / maximal.sum(axis=1) if ties == "fraction" else inside > 0
        hits = np.where((flat > -np.inf).any(axis=1), hits, 0.0)  # an all-NaN map points nowhere
        result[start : start + step] = hits
    result[~masks.any(axis=(-2, -1))] = np.nan
    return result.reshape(gt.shape[:-2])


hit_rate = pointing_game


# --------------------------------------------------------------------------- bootstrap
def _indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _resampled(values: np.ndarray, indices: np.ndarray, statistic: Callable) -> np.ndarray:
    """statistic over axis 1 of values[indices], in chunks of resamples: [R, ...]."""
    per_resample = max(1, values.size)
    step = max(1, _CHUNK_ELEMENTS // per_resample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN
        return np.concatenate(
            [
                statistic(values[indices[start : start + step]], axis=1)
                for start in range(0, len(indices), step)
            ]
        )


def _interval(samples: np.ndarray, confidence: float, interval: str) -> tuple[np.ndarray, np.ndarray]:
    alpha = 1.0 - confidence
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if interval == "percentile":
            return np.nanquantile(samples, alpha / 2, axis=0), np.nanquantile(samples, 1 - alpha / 2, axis=0)
    if interval != "chexlocalize":
        raise ValueError(f"interval must be 'percentile' or 'chexlocalize', got {interval!r}")
    ordered = np.sort(samples, axis=0)  # NaN sort last, as in pandas' sort_values
    count = len(ordered)
    return ordered[max(int(alpha / 2 * count) - 1, 0)], ordered[max(int((1 - alpha / 2) * count) - 1, 0)]


def bootstrap_ci(
    values,
    *,
    statistic: Callable = np.nanmean,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    interval: str = "percentile",
):
    """Estimate and bootstrap confidence interval, resampling images (rows).

    Parameters
    ----------
    values : array-like, shape (N,) or (N, C)
        Per-image scores; NaN marks an undefined score (dropped by a NaN-aware statistic).
    statistic : callable
        Called as ``statistic(array, axis=...)``; default :func:`numpy.nanmean`.
    n_resamples, seed, confidence : int, int, float
        One index matrix ``[n_resamples, N]`` from ``np.random.default_rng(seed)``.
    interval : {"percentile", "chexlocalize"}
        ``"percentile"``: ``np.nanquantile`` at (1 - confidence) / 2 and its complement.
        ``"chexlocalize"``: ``eval.py``'s ``compute_cis``: of the sorted resample statistics,
        element ``int(0.025 * R) - 1`` and ``int(0.975 * R) - 1`` (24 and 974 for R = 1000).

    Returns
    -------
    estimate, low, high : float or ndarray of shape (C,)
        ``estimate`` is the statistic on the original sample (CheXlocalize reports the same).

    Examples
    --------
    >>> estimate, low, high = bootstrap_ci(np.arange(10.0), n_resamples=200)
    >>> bool(low <= estimate <= high)
    True
    """
    array = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        estimate = statistic(array, axis=0)
    samples = _resampled(array, _indices(len(array), n_resamples, seed), statistic)
    low, high = _interval(samples, confidence, interval)
    return estimate, low, high


def seed_bootstrap_ci(
    values,
    *,
    statistic: Callable = np.nanmean,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
):
    """Estimate and interval over models *and* images: a two-level (seed, image) bootstrap.

    Parameters
    ----------
    values : array-like, shape (S, N) or (S, N, C)
        Per-image scores of the same N images under S models (training seeds).
    statistic, n_resamples, seed, confidence
        As in :func:`bootstrap_ci`.

    Returns
    -------
    estimate, low, high : float or ndarray of shape (C,)
        ``estimate`` is the mean over models of the statistic. Each resample draws S models with
        replacement and N images with replacement (the same images for every model: the models
        explain the same images), and averages the drawn models' statistics; so the interval
        covers the spread between training runs as well as the choice of images. With few seeds
        it is a rough interval (3 seeds allow 10 distinct model multisets).

    Examples
    --------
    >>> same = np.tile(np.arange(10.0), (3, 1))  # three models that agree: the image bootstrap
    >>> estimate, low, high = seed_bootstrap_ci(same, n_resamples=200)
    >>> float(estimate), bool(np.allclose((low, high), bootstrap_ci(np.arange(10.0), n_resamples=200)[1:]))
    (4.5, True)
    """
    array = np.asarray(values, dtype=float)
    n_seeds, n_images = array.shape[:2]
    indices = _indices(n_images, n_resamples, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        estimate = np.mean([statistic(array[k], axis=0) for k in range(n_seeds)], axis=0)
        per_seed = np.stack([_resampled(array[k], indices, statistic) for k in range(n_seeds)])  # [S, R, ...]
    if n_seeds > 1:
        drawn = np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(n_resamples, n_seeds))
        samples = per_seed[drawn, np.arange(n_resamples)[:, None]].mean(axis=1)
    else:
        samples = per_seed[0]
    low, high = _interval(samples, confidence, "percentile")
    return estimate, low, high


class PairedDifference(NamedTuple):
    """Result of :func:`paired_bootstrap_difference` (arrays of shape (C,) or floats)."""

    difference: np.ndarray
    low: np.ndarray
    high: np.ndarray
    fraction_a_greater: np.ndarray


def paired_bootstrap_difference(
    a,
    b,
    *,
    statistic: Callable = np.nanmean,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedDifference:
    """Difference ``statistic(a) - statistic(b)`` of two methods scored on the same images.

    Both are resampled with the same image indices. A pair counts only where both scores are
    defined (NaN in either makes both NaN). ``fraction_a_greater`` is the share of resamples in
    which ``statistic(a) > statistic(b)`` (a one-sided bootstrap p-value is 1 minus it).
    """
    first = np.asarray(a, dtype=float)
    second = np.asarray(b, dtype=float)
    if first.shape != second.shape:
        raise ValueError(f"a {first.shape} and b {second.shape} differ in shape")
    missing = np.isnan(first) | np.isnan(second)
    first = np.where(missing, np.nan, first)
    second = np.where(missing, np.nan, second)
    indices = _indices(len(first), n_resamples, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        difference = statistic(first, axis=0) - statistic(second, axis=0)
    sample_a = _resampled(first, indices, statistic)
    sample_b = _resampled(second, indices, statistic)
    low, high = _interval(sample_a - sample_b, confidence, "percentile")
    defined = ~(np.isnan(sample_a) | np.isnan(sample_b))
    with np.errstate(invalid="ignore"):
        greater = ((sample_a > sample_b) & defined).sum(axis=0) / defined.sum(axis=0)
    return PairedDifference(difference, low, high, greater)


# --------------------------------------------------------------------------- classification
def _auroc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row (Mann-Whitney U with mid-ranks = sklearn's trapezoidal ROC AUC)."""
    ranks = stats.rankdata(scores, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    return ((ranks * labels).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)


def _average_precision_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision of each row, sklearn's step-wise definition (ties form one threshold)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ordered = np.take_along_axis(scores, order, axis=1)
    hits = np.take_along_axis(labels, order, axis=1)
    precision = np.cumsum(hits, axis=1) / np.arange(1, labels.shape[1] + 1)
    position = np.arange(labels.shape[1])
    is_end = np.ones_like(ordered, dtype=bool)
    is_end[:, :-1] = ordered[:, :-1] != ordered[:, 1:]
    ends = np.minimum.accumulate(np.where(is_end, position, labels.shape[1])[:, ::-1], axis=1)[:, ::-1]
    return (hits * np.take_along_axis(precision, ends, axis=1)).sum(axis=1) / hits.sum(axis=1)


def auroc_auprc(
    labels,
    probabilities,
    *,
    class_names: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per-class AUROC and AUPRC with bootstrap CIs, plus their positive-weighted averages.

    Parameters
    ----------
    labels : array-like of {0, 1}, shape (N, C)
    probabilities : array-like, shape (N, C)

    Returns
    -------
    DataFrame
        One row per class, then a row ``"weighted average"``; columns class, positives, auroc,
        auroc_low, auroc_high, auprc, auprc_low, auprc_high, skipped_resamples, excluded.
        A class without positives or without negatives gets NaN scores and
        ``excluded="no positives"`` / ``"no negatives"``; a class whose probabilities are all NaN
        (a model without that output, e.g. torchxrayvision's) gets ``"not predicted by the
        model"``; all are left out of the averages. The
        averages equal sklearn's ``average="weighted"`` (weights = number of positives) on the
        kept classes. Point estimates are sklearn's ``roc_auc_score`` and
        ``average_precision_score``; resamples use exact vectorised equivalents. A resample in
        which a class has a single label value is skipped for that class (and for the averages)
        and counted in ``skipped_resamples``.
    """
    y = np.asarray(labels).astype(bool)
    p = np.asarray(probabilities, dtype=float)
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must both be (N, C)")
    count, classes = y.shape
    names = list(class_names) if class_names is not None else [str(i) for i in range(classes)]
    positives = y.sum(axis=0)
    missing = np.isnan(p).all(axis=0) if count else np.zeros(classes, bool)  # a class the model does not predict
    if np.isnan(p[:, ~missing]).any():
        raise ValueError("probabilities hold NaN for some images of a class (a class is either predicted or not)")
    kept = (positives > 0) & (positives < count) & ~missing
    indices = _indices(count, n_resamples, seed)
    point = np.full((2, classes), np.nan)
    samples = np.full((2, n_resamples, classes), np.nan)
    support = np.zeros((n_resamples, classes))
    for c in np.flatnonzero(kept):
        point[0, c] = roc_auc_score(y[:, c], p[:, c])
        point[1, c] = average_precision_score(y[:, c], p[:, c])
        yb, pb = y[indices, c].astype(float), p[indices, c]
        support[:, c] = yb.sum(axis=1)
        ok = (support[:, c] > 0) & (support[:, c] < count)
        samples[0, ok, c] = _auroc_rows(yb[ok], pb[ok])
        samples[1, ok, c] = _average_precision_rows(yb[ok], pb[ok])
    skipped = np.where(kept, np.isnan(samples[0]).sum(axis=0), 0)
    # Weighted averages: over kept classes, weights = positives (of each resample).
    complete = ~np.isnan(samples[0][:, kept]).any(axis=1)
    weights = support[complete][:, kept]
    averages = []
    for m in range(2):
        estimate = np.average(point[m, kept], weights=positives[kept]) if kept.any() else np.nan
        resampled = (samples[m][complete][:, kept] * weights).sum(axis=1) / weights.sum(axis=1)
        averages.append((estimate, *_interval(resampled[:, None], confidence, "percentile")))
    low = [_interval(samples[m], confidence, "percentile") for m in range(2)]
    table = pd.DataFrame(
        {
            "class": names,
            "positives": positives,
            "auroc": point[0],
            "auroc_low": low[0][0],
            "auroc_high": low[0][1],
            "auprc": point[1],
            "auprc_low": low[1][0],
            "auprc_high": low[1][1],
            "skipped_resamples": skipped,
            "excluded": np.where(kept, "", np.where(missing, "not predicted by the model",
                                                    np.where(positives == 0, "no positives", "no negatives"))),
        }
    )
    table.loc[len(table)] = [
        "weighted average", int(positives[kept].sum()),
        averages[0][0], float(averages[0][1][0]), float(averages[0][2][0]),
        averages[1][0], float(averages[1][1][0]), float(averages[1][2][0]),
        int(n_resamples - complete.sum()), ", ".join(n for n, k in zip(names, kept, strict=True) if not k),
    ]  # fmt: skip
    return table


# --------------------------------------------------------------------------- faithfulness
class FaithfulnessCurves(NamedTuple):
    """Result of :func:`deletion_insertion_auc`: AUCs ``[N, K]`` and curves ``[N, K, steps + 1]``."""

    deletion: np.ndarray
    insertion: np.ndarray
    deletion_curves: np.ndarray
    insertion_curves: np.ndarray


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def _baseline(kind, images: torch.Tensor, sigma: float) -> torch.Tensor:
    if isinstance(kind, str):
        if kind == "zero":
            return torch.zeros_like(images)
        if kind == "blur":
            return _blur(images, sigma)
        raise ValueError(f"baseline must be 'zero', 'blur', a number or a tensor, got {kind!r}")
    return torch.as_tensor(kind, dtype=images.dtype, device=images.device).expand_as(images)


def deletion_insertion_auc(
    predict_fn: Callable,
    images,
    heatmaps,
    classes: Sequence[int],
    *,
    steps: int = 20,
    deletion_baseline="zero",
    insertion_baseline="blur",
    blur_sigma: float = 5.0,
) -> FaithfulnessCurves:
    """Deletion and insertion curves and their areas (Petsiuk et al. 2018, RISE).

    Deletion replaces the most relevant pixels first by the baseline and tracks the class
    probability (lower area = more faithful); insertion starts from the baseline and restores
    the most relevant pixels first (higher area = more faithful).

    Parameters
    ----------
    predict_fn : callable
        Tensor batch ``[B, 3, H, W]`` -> probabilities ``[B, n_outputs]`` (tensor or array);
        called under ``torch.no_grad()`` with all ``2 * (steps + 1)`` variants of one image and
        class in one batch.
    images : Tensor or array, shape (N, 3, H, W)
        The model inputs (already normalised).
    heatmaps : array-like, shape (N, K, h, w)
        Resized bilinearly to (H, W); pixels are ranked by value, highest first (so negative
        relevance is changed last), ties in raster order, non-finite values last.
    classes : sequence of int, length K
        Output index of each heatmap channel.
    steps : int
        Pixels change in ``steps`` equal blocks of ``H * W / steps`` (RISE changes a fixed
        number of pixels per step; blocks keep the cost at ``2 * (steps + 1)`` forward passes).
    deletion_baseline, insertion_baseline : "zero", "blur", number or tensor
        RISE's choices are the defaults: zeros for deletion (the dataset mean after
        normalisation), a Gaussian blur (``blur_sigma`` pixels, replicate padding) for insertion.

    Returns
    -------
    FaithfulnessCurves
        AUC by the trapezoid rule over the fraction of pixels changed, in [0, 1].
    """
    batch = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    batch = batch.float() if not batch.is_floating_point() else batch
    maps = np.asarray(
        heatmaps.detach().cpu() if isinstance(heatmaps, torch.Tensor) else heatmaps, dtype=np.float32
    )
    count, _, height, width = batch.shape
    if maps.shape[:2] != (count, len(classes)):
        raise ValueError(f"heatmaps {maps.shape} must be (N={count}, K={len(classes)}, h, w)")
    pixels = height * width
    sizes = torch.tensor([round(s * pixels / steps) for s in range(steps + 1)], device=batch.device)
    curves = np.zeros((2, count, len(classes), steps + 1))
    delete_to = _baseline(deletion_baseline, batch, blur_sigma)
    insert_from = _baseline(insertion_baseline, batch, blur_sigma)
    for n in range(count):
        finite = np.isfinite(maps[n])
        floor = maps[n][finite].min() - 1.0 if finite.any() else 0.0
        ranked = _resize(torch.from_numpy(np.where(finite, maps[n], floor)), (height, width)).flatten(1)
        for k, output in enumerate(classes):
            order = torch.argsort(-ranked[k], stable=True).to(batch.device)
            rank = torch.empty(pixels, dtype=torch.long, device=batch.device)
            rank[order] = torch.arange(pixels, device=batch.device)
            changed = (rank[None] < sizes[:, None]).view(steps + 1, 1, height, width)
            deleted = torch.where(changed, delete_to[n], batch[n])
            inserted = torch.where(changed, batch[n], insert_from[n])
            with torch.no_grad():
                probabilities = predict_fn(torch.cat([deleted, inserted]))
            values = torch.as_tensor(probabilities).detach().cpu().numpy()[:, output]
            curves[:, n, k] = values.reshape(2, steps + 1)
    areas = np.trapezoid(curves, dx=1.0 / steps, axis=-1)
    return FaithfulnessCurves(areas[0], areas[1], curves[0], curves[1])


# --------------------------------------------------------------------------- sanity checks
def parameter_randomisation_similarity(
    maps_trained, maps_random, *, measure: str = "spearman", absolute: bool = False
) -> np.ndarray:
    """Similarity of each map before and after model randomisation (Adebayo et al. 2018).

    Parameters
    ----------
    maps_trained, maps_random : array-like, shape (N, C, h, w)
    measure : {"spearman", "ssim"}
        Spearman rank correlation of the pixels (mid-ranks, as ``scipy.stats.spearmanr``), or
        SSIM (``skimage.metrics.structural_similarity``, 7 x 7 window or the largest odd window
        that fits) of the min-max normalised maps.
    absolute : bool
        Compare ``|map|`` (Adebayo et al. report both).

    Returns
    -------
    ndarray, shape (N, C)
        High similarity means the explanation does not depend on what the model learned;
        NaN for constant maps.
    """
    first = np.asarray(maps_trained, dtype=float)
    second = np.asarray(maps_random, dtype=float)
    if first.shape != second.shape:
        raise ValueError(f"maps_trained {first.shape} and maps_random {second.shape} differ in shape")
    if absolute:
        first, second = np.abs(first), np.abs(second)
    leading = first.shape[:-2]
    first = first.reshape(-1, first.shape[-2] * first.shape[-1])
    second = second.reshape(first.shape)
    if measure == "spearman":
        ranks_a = stats.rankdata(first, axis=1)
        ranks_b = stats.rankdata(second, axis=1)
        ranks_a -= ranks_a.mean(axis=1, keepdims=True)
        ranks_b -= ranks_b.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            result = (ranks_a * ranks_b).sum(axis=1) / np.sqrt(
                (ranks_a**2).sum(axis=1) * (ranks_b**2).sum(axis=1)
            )
    elif measure == "ssim":
        from skimage.metrics import structural_similarity

        shape = np.asarray(maps_trained).shape[-2:]
        window = min(7, min(shape) - (1 - min(shape) % 2))  # skimage's 7, or the largest odd side
        result = np.full(first.shape[0], np.nan)
        for i, (x, y) in enumerate(zip(first, second, strict=True)):
            if np.ptp(x) > 0 and np.ptp(y) > 0:
                x, y = (x - x.min()) / np.ptp(x), (y - y.min()) / np.ptp(y)
                result[i] = structural_similarity(
                    x.reshape(shape), y.reshape(shape), data_range=1.0, win_size=window
                )
    else:
        raise ValueError(f"measure must be 'spearman' or 'ssim', got {measure!r}")
    return result.reshape(leading)


def randomise_model(
    model: torch.nn.Module, seed: int = 0, *, top_modules: int | None = None
) -> torch.nn.Module:
    """A deep copy of ``model`` with re-initialised parameters (Adebayo et al. 2018).

    Parameters
    ----------
    model : torch.nn.Module
        Left unchanged.
    seed : int
        Seeds the re-initialisation; the global random state is restored afterwards.
    top_modules : int, optional
        None (default): full randomisation, every module with ``reset_parameters``. An integer
        ``k``: only the last ``k`` such modules in registration order, which for DenseNet is the
        forward order, i.e. one step of Adebayo's cascading randomisation from the classifier down.

    Notes
    -----
    Each module is reset with its own ``reset_parameters`` (PyTorch's default initialisation):
    convolutions and linear layers get new random weights; batch-norm layers return to weight 1,
    bias 0 and fresh running statistics. Adebayo et al. draw weights from a truncated normal;
    the test (does the map change?) does not depend on that choice. Parameters of modules
    without ``reset_parameters`` keep their values.
    """
    randomised = copy.deepcopy(model)
    modules = [m for m in randomised.modules() if callable(getattr(m, "reset_parameters", None))]
    if top_modules is not None:
        modules = modules[len(modules) - top_modules :] if top_modules > 0 else []
    devices = sorted({p.device.index or 0 for p in randomised.parameters() if p.is_cuda})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with torch.no_grad():
            for module in modules:
                module.reset_parameters()
    return randomised
