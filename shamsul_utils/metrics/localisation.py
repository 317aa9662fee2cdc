"""Localisation scores of heatmaps against expert masks: IoU (and which images a mean counts),
per-class mIoU with bootstrap intervals, and the pointing game (hit rate).

Every per-image score is an array ``[N, C]`` (image x class) with NaN where the score is
undefined, so that one NaN-aware bootstrap over images (:mod:`.bootstrap`) serves every table.

References
----------
Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation.
Nature Machine Intelligence 4, 867-878 (CheXlocalize; github.com/rajpurkarlab/cheXlocalize).
Zhang, J. et al. (2018). Top-down neural attention by excitation backprop. IJCV (pointing game).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..segmentation import resize_maps
from .bootstrap import CHUNK_ELEMENTS, bootstrap_ci

__all__ = ["iou", "select_iou", "summarise_iou", "pointing_game", "points_somewhere", "maximal_pixels",
           "IOU_VARIANTS", "TIE_TOLERANCE", "LOCALISATION_METRICS", "IOU_METRICS"]

IOU_VARIANTS = ("true_positive", "all", "union")
# The per-pair localisation metrics of the study, name -> how tables and claims spell it (the one vocabulary)
LOCALISATION_METRICS: dict[str, str] = {"miou_all": "mIoU (full set)", "miou_tp": "mIoU (true-positive slice)",
                                        "hit_rate": "hit rate", "hit_rate_ties": "tie-aware hit rate"}
# Which pairs each mIoU counts (select_iou's variants): the full set is every pair with an expert mask ("all");
# "miou_union" adds the pairs without one where the segmentation is not empty (CheXlocalize's full-data mIoU)
IOU_METRICS: dict[str, str] = {"miou_tp": "true_positive", "miou_all": "all", "miou_union": "union"}


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
    if variant not in IOU_VARIANTS:
        raise ValueError(f"variant must be one of {IOU_VARIANTS}, got {variant!r}")
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


# Pixels within this share of a map's range of its maximum count as maximal (8 float32 steps at
# the top of the range): bilinear upsampling of a plateau (a LIME or SHAP segment) leaves values
# that differ from the plateau's by a rounding step or two, and by how many depends on the CPU's
# kernels (AVX-512 vs AVX2 vs scalar). An exact maximum made the pointing game CPU-dependent.
TIE_TOLERANCE = 2.0**-20


def maximal_pixels(flat: np.ndarray) -> np.ndarray:
    """bool ``[k, P]``: the pixels of each flattened map ``[k, P]`` that reach its maximum, up to
    :data:`TIE_TOLERANCE` of the map's largest magnitude (finite maps)."""
    flat = np.asarray(flat)
    top = flat.max(axis=1, keepdims=True)
    scale = np.maximum(np.abs(top), np.abs(flat.min(axis=1, keepdims=True)))
    return flat >= top - (TIE_TOLERANCE * scale).astype(flat.dtype)


def points_somewhere(maps) -> np.ndarray:
    """Whether each map ``[..., h, w]`` singles out a location: all values finite in float32 and not
    all equal. The maps for which this is False get an empty segmentation and miss in the
    pointing game (one rule for segmentation, hit rate and tie-aware hit rate).

    Examples
    --------
    >>> points_somewhere(np.array([[[0.0, 1.0]], [[2.0, 2.0]], [[np.nan, 1.0]], [[1e39, 0.0]]]))
    array([ True, False, False, False])
    """
    array = np.asarray(maps, dtype=np.float32)
    flat = array.reshape(*array.shape[:-2], -1)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.isfinite(flat).all(axis=-1) & (flat.max(axis=-1) > flat.min(axis=-1))


def pointing_game(heatmaps, gt_masks, *, ties: str = "first") -> np.ndarray:
    """Hit (1.0) when a map's maximum lies inside the ground-truth mask, else miss (0.0).

    Parameters
    ----------
    heatmaps : array-like, shape (N, C, h, w)
        Resized bilinearly (float32, ``align_corners=False``) to the masks' size if it differs,
        as CheXlocalize's ``eval.py`` (``create_map``) does.
    gt_masks : array-like of bool, shape (N, C, H, W)
    ties : {"first", "fraction", "any"}
        ``"first"``: the first maximal pixel in raster order (``np.argmax``, as CheXlocalize;
        "maximal" up to rounding, :func:`maximal_pixels`).
        ``"fraction"``: the share of the maximal pixels that lie in the mask, i.e. the expected
        hit under a random tie break (tie-aware; for piecewise-constant maps such as LIME's and
        SHAP's, whose maximum is a whole segment, the raster-order pick is arbitrary).
        ``"any"``: a hit when any maximal pixel is in the mask (lenient; a constant map then
        hits every non-empty mask).

    Returns
    -------
    ndarray, shape (N, C)
        1.0 / 0.0 (a fraction in [0, 1] with ``ties="fraction"``); NaN where the ground-truth mask
        is empty: undefined, never a hit (Quantus' pointing game has counted an empty mask as a
        hit). A map that points nowhere - constant, or with any NaN or infinite value (in
        float32) - is a **miss** in every variant, the same maps whose segmentation is empty
        (:func:`shamsul_utils.segmentation.heatmap_to_mask`): neither dropped from the mean nor
        credited with the mask's area share (a random pick among all pixels) or with an
        infinite pixel.

    Notes
    -----
    Pointing game of Zhang et al. (2018); CheXlocalize calls its mean the hit rate. Its
    ``eval.py`` (``get_hit_rates`` with ``create_map``) takes ``np.argmax`` of the resized map and
    scores 1 if ``gt_mask[x][y] == 1``, NaN if the mask is empty, else 0, as here. A later
    ``eval.py`` (commit a9619f8, ``get_hitrates``) takes the argmax of ``pkl_to_mask(...)``, which
    by then returns the binary Otsu segmentation, i.e. its first foreground pixel in raster
    order; we keep the map's maximum, the paper's "most representative point". Deviation: for a
    constant map CheXlocalize's ``np.argmax`` picks the top-left pixel (a hit only when the mask
    covers it); here such a map is a miss. Maximal pixels are those within
    :data:`TIE_TOLERANCE` of the maximum (CheXlocalize: exactly equal), so that the rounding of
    the bilinear resize on a given CPU does not decide which pixel of a plateau is "the" maximum.
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
    step = max(1, CHUNK_ELEMENTS // (size[0] * size[1]))
    for start in range(0, maps.shape[0], step):
        original = np.asarray(maps[start : start + step], dtype=np.float32)
        informative = points_somewhere(original)
        original = np.where(informative[:, None, None], original, np.float32(0))
        flat = resize_maps(torch.from_numpy(original), size).flatten(1).numpy()
        truth = masks[start : start + step].reshape(flat.shape[0], -1)
        maximal = maximal_pixels(flat)
        if ties == "first":
            hits = np.take_along_axis(truth, np.argmax(maximal, axis=1)[:, None], axis=1)[:, 0]
        else:
            inside = (maximal & truth).sum(axis=1)
            hits = inside / maximal.sum(axis=1) if ties == "fraction" else inside > 0
        hits = np.where(informative, hits, 0.0)  # a map that points nowhere
        result[start : start + step] = hits
    result[~masks.any(axis=(-2, -1))] = np.nan
    return result.reshape(gt.shape[:-2])
