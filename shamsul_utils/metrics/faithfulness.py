"""Faithfulness of heatmaps: deletion and insertion curves and their areas (RISE).

References
----------
Petsiuk, V., Das, A. & Saenko, K. (2018). RISE: randomized input sampling for explanation of
black-box models. BMVC (deletion and insertion).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..segmentation import resize_maps

__all__ = ["deletion_insertion_auc", "FaithfulnessCurves"]


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
        ranked = resize_maps(torch.from_numpy(np.where(finite, maps[n], floor)), (height, width)).flatten(1)
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
