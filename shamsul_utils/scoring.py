"""Score heatmaps against expert masks one image at a time, at each image's original size.

CheXlocalize resizes every heatmap to its own image's original size (the size of the expert
masks, ``cxr_dims``) and segments and scores it there. Real images differ in size (CheXpert's
originals are about 2000-3000 px a side), so there is no common grid, and a cohort's masks do not
fit in memory at once (234 images x 10 classes x 2320 x 2828 is 15 GB). This module therefore
streams: it takes one image's maps and masks, resizes each map once, and computes from that one
resized map

* the Otsu segmentation (:func:`shamsul_utils.segmentation.segment_resized_map`),
* IoU with the expert mask and whether each mask is non-empty,
* the pointing game (first maximal pixel, as CheXlocalize) and its tie-aware rate;

a map that points nowhere (constant, or with a NaN or infinite value) gets an empty segmentation
and misses (:func:`shamsul_utils.metrics.localisation.points_somewhere`).

It is the fast route of :func:`shamsul_utils.segmentation.heatmap_to_mask` +
:func:`shamsul_utils.metrics.iou` + :func:`shamsul_utils.metrics.pointing_game`, which stay the
plain route; the tests hold the two equal. Only Otsu thresholding is streamed (the evaluation's
and CheXlocalize's default); fixed thresholds go through the plain route.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import metrics
from .segmentation import resize_maps, segment_resized_map

__all__ = ["ImageScores", "score_image", "score_images"]


@dataclass
class ImageScores:
    """Scores of every pair of a set of images, all ``[N, C]``."""

    iou: np.ndarray  # NaN where both masks are empty
    gt_present: np.ndarray
    pred_present: np.ndarray
    hits: np.ndarray  # 1 / 0 / NaN (empty expert mask): the first maximal pixel (CheXlocalize)
    hits_tie_aware: np.ndarray  # share of the maximal pixels inside the mask / NaN


def score_image(heatmaps, truth, *, signed: str = "positive", probabilities=None,
                probability_cutoff=None, thresholds=None, keep_segmentations: bool = False):
    """Segment and score one image's maps against its expert masks, at the masks' size.

    Parameters
    ----------
    heatmaps : array-like, shape (C, h, w)
        One map per class, at any resolution (resized bilinearly to the masks' size).
    truth : array-like of bool, shape (C, H, W)
        The expert masks at the image's original size.
    signed : {"positive", "absolute", "raw"}
        See :func:`shamsul_utils.segmentation.heatmap_to_mask`.
    probabilities, probability_cutoff : array-like (C,) and scalar or (C,), optional
        Where ``probability < cutoff`` the segmentation is empty (CheXlocalize's probability
        threshold); the pointing game does not depend on it.
    thresholds : array-like (C,), optional
        Per-class fixed thresholds on the normalised map (tuned on validation,
        :mod:`shamsul_utils.metrics.tuning`); NaN or None: Otsu.
    keep_segmentations : bool
        Also return the segmentations ``[C, H, W]``.

    Returns
    -------
    tuple
        ``(iou, gt_present, pred_present, hit, hit_tie_aware)``, each ``(C,)``, and the
        segmentations when asked.
    """
    maps = heatmaps.detach().cpu().numpy() if isinstance(heatmaps, torch.Tensor) else np.asarray(heatmaps)
    truth = np.asarray(truth, dtype=bool)
    if maps.ndim != 3 or truth.ndim != 3 or len(maps) != len(truth):
        raise ValueError(f"heatmaps (C, h, w) and truth (C, H, W) need the same C; got {maps.shape}, {truth.shape}")
    count, size = len(maps), truth.shape[-2:]
    fixed = np.full(count, np.nan) if thresholds is None else np.broadcast_to(np.asarray(thresholds, float), (count,))
    empty = np.zeros(count, dtype=bool)
    if probabilities is not None:
        cutoff = 0.0 if probability_cutoff is None else probability_cutoff
        empty = np.broadcast_to(np.asarray(probabilities, dtype=float) < np.asarray(cutoff, dtype=float), (count,))
    scores = np.full((5, count), np.nan)
    segmentations = np.zeros((count, *size), dtype=bool) if keep_segmentations else None
    informative = metrics.points_somewhere(np.asarray(maps, dtype=np.float32))
    non_finite = 0
    for index in range(count):
        heatmap, expert = np.ascontiguousarray(maps[index], dtype=np.float32), truth[index]
        expert_pixels = np.count_nonzero(expert)
        if not informative[index]:  # constant or non-finite (in float32): empty, and a miss
            non_finite += not np.isfinite(heatmap).all()
            segmentation, first, fraction = np.zeros(size, dtype=bool), 0.0, 0.0
        else:
            resized = resize_maps(torch.from_numpy(heatmap)[None], size)[0]
            if tuple(heatmap.shape) == tuple(size):
                resized = resized.clone()
            maximal = metrics.maximal_pixels(resized.numpy().reshape(1, -1))[0]
            flat_expert = expert.ravel()
            first = float(flat_expert[np.argmax(maximal)])
            fraction = np.count_nonzero(maximal & flat_expert) / np.count_nonzero(maximal)
            segmentation = segment_resized_map(resized, signed=signed, threshold=float(fixed[index]))
        if empty[index]:
            segmentation = np.zeros(size, dtype=bool)
        predicted_pixels = np.count_nonzero(segmentation)
        intersection = np.count_nonzero(segmentation & expert) if predicted_pixels and expert_pixels else 0
        union = predicted_pixels + expert_pixels - intersection
        scores[:, index] = (intersection / union if union else np.nan, expert_pixels > 0, predicted_pixels > 0,
                            first if expert_pixels else np.nan, fraction if expert_pixels else np.nan)
        if keep_segmentations:
            segmentations[index] = segmentation
    if non_finite:  # as heatmap_to_mask warns on the plain route
        warnings.warn(f"{non_finite} heatmap(s) contain NaN or inf; their masks are empty and they miss",
                      RuntimeWarning, stacklevel=2)
    result = (scores[0], scores[1].astype(bool), scores[2].astype(bool), scores[3], scores[4])
    return (*result, segmentations) if keep_segmentations else result


def score_images(heatmaps, masks: Sequence, *, signed: str = "positive", probabilities=None,
                 probability_cutoff=None, thresholds=None) -> ImageScores:
    """:func:`score_image` for every image: ``heatmaps[n]`` (C, h, w) against ``masks[n]`` (C, H_n, W_n).

    ``masks`` is anything indexable by image that returns one image's masks, e.g.
    :class:`shamsul_utils.datasets.ExpertMasks`, which decodes them on demand, so only one image's
    masks are in memory at a time. ``probabilities`` is ``[N, C]`` when given.
    """
    count = len(masks)
    if len(heatmaps) != count:
        raise ValueError(f"{len(heatmaps)} heatmap sets for {count} mask sets")
    rows = [score_image(heatmaps[n], masks[n], signed=signed,
                        probabilities=None if probabilities is None else np.asarray(probabilities)[n],
                        probability_cutoff=probability_cutoff, thresholds=thresholds)
            for n in range(count)]
    if not rows:
        empty = np.zeros((0, 0))
        return ImageScores(empty, empty.astype(bool), empty.astype(bool), empty, empty)
    return ImageScores(*(np.stack(column) for column in zip(*rows, strict=True)))
