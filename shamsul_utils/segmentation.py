"""Heatmap -> binary segmentation, as CheXlocalize does it (Saporta et al. 2022).

The pipeline of CheXlocalize's ``heatmap_to_segmentation.py`` (functions ``pkl_to_mask`` and
``cam_to_segmentation``), vectorised over many maps:

1. resize each map to the original image size with ``F.interpolate(mode="bilinear",
   align_corners=False)`` (float32);
2. (this project) handle signed evidence, see ``signed`` below;
3. min-max normalise per map: ``(m - m.min()) / (m - m.min()).max()`` in float32;
4. Otsu mode: ``np.uint8(255 * x)`` (truncation, not rounding), Otsu's threshold on the
   256-bin histogram, foreground where ``value > threshold`` (cv2 ``THRESH_BINARY``), then the
   filled contours; fixed-threshold mode: ``x > threshold`` on the float map, no filling;
5. an empty mask where the predicted probability is below a cutoff
   (``heatmap_to_segmentation_probability_threshold.py``: ``if prob < prob_cutoff``).

Versions of CheXlocalize's code checked: ``heatmap_to_segmentation.py`` (commit 150d723) stops
after ``cv2.threshold(mask, 0, maxval=mask.max(), cv2.THRESH_OTSU)`` (``THRESH_OTSU`` alone
means ``THRESH_BINARY``: ``maxval`` where ``value > threshold``, else 0); the later
``heatmap_to_segmentation_probability_threshold.py`` (commit 2bc27cb) then traces
``cv2.findContours(thresh, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)``, drops one-point contours
and fills each polygon with PIL. Filling every contour (outer ones and holes), like filling only
the external ones (``RETR_EXTERNAL`` + ``drawContours(..., -1, 255, -1)``), fills the holes, so we
follow the later version: hole filling plus removal of isolated pixels (``fill_holes`` and
``drop_isolated_pixels`` switch them off).

References
----------
Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation.
Nature Machine Intelligence 4, 867-878. Code: github.com/rajpurkarlab/cheXlocalize.
Otsu, N. (1979). A threshold selection method from gray-level histograms. IEEE TSMC 9(1).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = ["heatmap_to_mask", "normalise_heatmaps", "otsu_thresholds", "segment_resized_map",
           "fill_holes", "drop_isolated_pixels"]

_SIGNED = ("positive", "absolute", "raw")
_CHUNK_PIXELS = 1 << 24  # float32 pixels processed at once (64 MiB)
_FILL_STRUCTURE = ndimage.generate_binary_structure(2, 1)[None]  # 4-connected background, per map


def otsu_thresholds(maps: np.ndarray) -> np.ndarray:
    """Otsu's threshold of each uint8 map, all maps at once.

    Parameters
    ----------
    maps : ndarray of uint8, shape (M, h, w) or (h, w)

    Returns
    -------
    ndarray of int64, shape (M,) (or a 0-d array)
        Foreground is ``map > threshold``. Equal to ``skimage.filters.threshold_otsu`` on each
        map (same arithmetic on the same histogram; a constant map returns its value, so its
        mask is empty).

    Notes
    -----
    cv2's ``getThreshVal_Otsu_8u`` (used by CheXlocalize) maximises the same between-class
    variance with the same "<= threshold is background" convention and keeps the first maximum.
    Where several thresholds give the same split (empty histogram bins between two occupied
    ones) the returned value may differ from cv2's, but the binary mask is identical, since no
    pixel lies between them. cv2 also skips splits where a class holds less than
    ``FLT_EPSILON`` (1.2e-7) of the pixels, which matters only for maps above 8.4 megapixels.

    Examples
    --------
    >>> int(otsu_thresholds(np.array([[0, 0, 10, 200, 210]], dtype=np.uint8)))
    10
    """
    maps = np.asarray(maps)
    if maps.dtype != np.uint8:
        raise TypeError(f"otsu_thresholds needs uint8 maps, got {maps.dtype}")
    single = maps.ndim == 2
    flat = maps.reshape(1 if single else maps.shape[0], -1)
    count = flat.shape[0]
    offsets = (np.arange(count, dtype=np.int64) * 256)[:, None]
    counts = np.bincount((flat + offsets).ravel(), minlength=count * 256).reshape(count, 256)
    thresholds = _otsu_from_histograms(counts)
    return thresholds[0] if single else thresholds


def _otsu_from_histograms(counts: np.ndarray) -> np.ndarray:
    """Otsu's threshold of each row of 256-bin histograms ``[M, 256]`` (see :func:`otsu_thresholds`)."""
    counts = np.asarray(counts, dtype=np.int64)
    centers = np.arange(256, dtype=np.int64)
    # The arithmetic of skimage.filters.threshold_otsu, row-wise (empty outer bins only add zeros).
    weight1 = np.cumsum(counts, axis=1)
    weight2 = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
    products = counts * centers
    with np.errstate(invalid="ignore", divide="ignore"):
        mean1 = np.cumsum(products, axis=1) / weight1
        mean2 = (np.cumsum(products[:, ::-1], axis=1) / np.cumsum(counts[:, ::-1], axis=1))[:, ::-1]
        variance = weight1[:, :-1] * weight2[:, 1:] * (mean1[:, :-1] - mean2[:, 1:]) ** 2
    valid = (weight1[:, :-1] > 0) & (weight2[:, 1:] > 0)
    variance = np.where(valid, variance, -np.inf)
    thresholds = np.argmax(variance, axis=1)
    constant = ~valid.any(axis=1)
    thresholds[constant] = np.argmax(counts[constant] > 0, axis=1)  # the one value of a constant map
    return thresholds


def _select(flags: np.ndarray):
    """Index for the flagged maps: a slice (a view, no copy) when all are flagged."""
    return slice(None) if flags.all() else flags


def _drop_isolated(masks: np.ndarray) -> np.ndarray:
    """Remove foreground pixels without any 8-neighbour (stack of 2-D masks)."""
    height, width = masks.shape[-2:]
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
    neighbour = np.zeros_like(masks)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) != (1, 1):
                neighbour |= padded[:, dy : dy + height, dx : dx + width]
    return masks & neighbour


def resize_maps(maps: torch.Tensor, size) -> torch.Tensor:
    """Maps ``[k, h, w]`` resized to ``size`` (H, W): step 1 above (bilinear,
    ``align_corners=False``, float32). The tensor itself when the size already matches.

    The one resize of maps in the project: segmentation, scoring, pointing game, deletion and
    insertion, and the shortcut experiment's attribution shares use it.
    """
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def _signed_transform(maps: torch.Tensor, signed: str) -> torch.Tensor:
    if signed == "positive":
        return maps.clamp(min=0)
    if signed == "absolute":
        return maps.abs()
    return maps


def _chunks(
    heatmaps: np.ndarray, output_size, signed: str
) -> Iterator[tuple[slice, np.ndarray, np.ndarray, int]]:
    """Yield (slice of maps, min-max normalised float32 maps [k, H, W], usable [k], non-finite count)."""
    count, height, width = heatmaps.shape
    out_h, out_w = output_size if output_size is not None else (height, width)
    step = max(1, _CHUNK_PIXELS // max(1, out_h * out_w, height * width))
    for start in range(0, count, step):
        part = torch.from_numpy(np.ascontiguousarray(heatmaps[start : start + step], dtype=np.float32))
        finite = torch.isfinite(part).flatten(1).all(dim=1)
        if not finite.all():
            part = torch.where(torch.isfinite(part), part, torch.zeros((), dtype=part.dtype))
        part = resize_maps(part, (out_h, out_w))
        part = _signed_transform(part, signed)
        shifted = part - part.flatten(1).amin(dim=1)[:, None, None]
        spread = shifted.flatten(1).amax(dim=1)
        usable = finite & (spread > 0)
        normalised = shifted.div_(torch.where(usable, spread, torch.ones_like(spread))[:, None, None])
        if not usable.all():
            normalised[~usable] = 0.0
        yield slice(start, start + part.shape[0]), normalised.numpy(), usable.numpy(), int((~finite).sum())


def _as_maps(heatmaps) -> tuple[np.ndarray, tuple[int, ...]]:
    array = heatmaps.detach().cpu().numpy() if isinstance(heatmaps, torch.Tensor) else np.asarray(heatmaps)
    if array.ndim < 2:
        raise ValueError(f"heatmaps need shape [..., h, w], got {array.shape}")
    return array.reshape(-1, *array.shape[-2:]), array.shape[:-2]


def _check_signed(signed: str) -> None:
    if signed not in _SIGNED:
        raise ValueError(f"signed must be one of {_SIGNED}, got {signed!r}")


def normalise_heatmaps(
    heatmaps, *, output_size: tuple[int, int] | None = None, signed: str = "positive"
) -> np.ndarray:
    """Resize (bilinear), apply the sign convention and min-max normalise each map to [0, 1].

    Constant maps and maps with a non-finite value become all zeros. Returns float32
    ``[..., H, W]``. This is the map :func:`heatmap_to_mask` thresholds.
    """
    _check_signed(signed)
    maps, leading = _as_maps(heatmaps)
    out_h, out_w = output_size if output_size is not None else maps.shape[-2:]
    result = np.empty((maps.shape[0], out_h, out_w), dtype=np.float32)
    for where, normalised, _, _ in _chunks(maps, output_size, signed):
        result[where] = normalised
    return result.reshape(*leading, out_h, out_w)


def heatmap_to_mask(
    heatmaps,
    *,
    output_size: tuple[int, int] | None = None,
    threshold: str | float | np.ndarray = "otsu",
    signed: str = "positive",
    probability=None,
    probability_cutoff=None,
    fill_holes: bool | None = None,
    drop_isolated_pixels: bool | None = None,
) -> np.ndarray:
    """Binary segmentation of each heatmap, CheXlocalize's way.

    Parameters
    ----------
    heatmaps : array-like or Tensor, shape (h, w) or (..., h, w), e.g. (N, C, h, w)
    output_size : (H, W), optional
        Size of the original image (of the ground-truth masks); None keeps (h, w). For images
        of different sizes call once per image.
    threshold : "otsu", float in [0, 1], or array broadcastable to the leading shape
        ``"otsu"`` (CheXlocalize's default) or a fixed threshold on the normalised map (e.g. the
        per-class values of :func:`shamsul_utils.metrics.tuning.tune_thresholds`, shape (C,)); NaN entries mean Otsu, as in
        CheXlocalize's ``cam_to_segmentation(threshold=np.nan)``.
    signed : {"positive", "absolute", "raw"}
        How negative relevance (LRP, LIME, SHAP) is treated before min-max. ``"positive"``
        (default) clips it to 0: the expert masks mark where the finding *is*, and negative
        relevance is evidence *against* the class, so it should not enter the mask; a map with
        no positive value gives an empty mask. ``"absolute"`` uses ``|m|`` (evidence of either
        sign). ``"raw"`` is CheXlocalize's plain min-max of the signed map (right for
        non-negative maps such as Grad-CAM, for which all three options agree).
    probability, probability_cutoff : array-like, optional
        Predicted probabilities (broadcastable to the leading shape) and the cutoff (scalar or
        per class); where ``probability < probability_cutoff`` the mask is empty.
    fill_holes : bool, optional
        Fill holes inside the foreground. None (default): as CheXlocalize, True in Otsu mode
        (it fills the contours of the Otsu mask), False with a fixed threshold.
    drop_isolated_pixels : bool, optional
        Remove foreground pixels with no 8-neighbour. None: as ``fill_holes``. CheXlocalize's
        contour step drops single-point contours, which are exactly such pixels.

    Returns
    -------
    ndarray of bool, shape (..., H, W)

    Notes
    -----
    Deviations from CheXlocalize, all documented choices:

    * the ``signed`` step (absent there; ``"raw"`` reproduces it);
    * a map with any non-finite value gives an empty mask and one ``RuntimeWarning`` per call
      (there, NaN propagates through min-max and the uint8 cast of NaN is undefined);
      a constant map gives an empty mask (there: 0/0, the same undefined cast);
    * filling: CheXlocalize draws the polygons of ``cv2.findContours`` (``CHAIN_APPROX_SIMPLE``)
      with PIL (``outline=1, fill=1``), skipping contours of one point. Without OpenCV we use
      ``scipy.ndimage.binary_fill_holes`` (4-connected background, i.e. holes bounded by
      8-connected foreground, cv2's convention) and then drop isolated pixels. The results agree
      up to polygon-rasterisation details at boundaries (e.g. pixels PIL adds or omits along
      diagonal contour segments).
    * Otsu's threshold is :func:`otsu_thresholds` (skimage's arithmetic; same masks as cv2).

    Examples
    --------
    >>> heatmap = np.zeros((4, 4)); heatmap[1:3, 1:3] = 1.0
    >>> heatmap_to_mask(heatmap).astype(int)
    array([[0, 0, 0, 0],
           [0, 1, 1, 0],
           [0, 1, 1, 0],
           [0, 0, 0, 0]])
    """
    _check_signed(signed)
    maps, leading = _as_maps(heatmaps)
    count = maps.shape[0]
    out_h, out_w = output_size if output_size is not None else maps.shape[-2:]

    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ValueError(f"threshold must be 'otsu', a number or an array, got {threshold!r}")
        thresholds = np.full(count, np.nan)
    else:
        values = np.asarray(threshold, dtype=float)
        if np.any((values < 0) | (values > 1)):
            raise ValueError("fixed thresholds must lie in [0, 1] (they apply to the min-max normalised map)")
        thresholds = np.broadcast_to(values, leading).reshape(count)
    use_otsu = np.isnan(thresholds)

    masks = np.zeros((count, out_h, out_w), dtype=bool)
    non_finite = 0
    for where, normalised, usable, bad in _chunks(maps, output_size, signed):
        non_finite += bad
        otsu = use_otsu[where]
        part = masks[where]  # a view: filled in place
        if otsu.any():
            chosen = _select(otsu)
            scaled = (np.float32(255) * normalised[chosen]).astype(np.uint8)
            part[chosen] = scaled > otsu_thresholds(scaled)[:, None, None]
        if not otsu.all():
            # float32 map against a float64 threshold, compared in float64 as in CheXlocalize
            part[~otsu] = normalised[~otsu] > thresholds[where][~otsu, None, None]
        part[~usable] = False
        fill = otsu if fill_holes is None else np.full(otsu.shape, fill_holes)
        if fill.any():
            part[_select(fill)] = ndimage.binary_fill_holes(part[_select(fill)], structure=_FILL_STRUCTURE)
        drop = fill if drop_isolated_pixels is None else np.full(otsu.shape, drop_isolated_pixels)
        if drop.any():
            part[_select(drop)] = _drop_isolated(part[_select(drop)])
    if non_finite:
        warnings.warn(
            f"{non_finite} heatmap(s) contain NaN or inf; their masks are empty", RuntimeWarning, stacklevel=2
        )

    if probability is not None:
        cutoff = 0.0 if probability_cutoff is None else probability_cutoff
        below = np.broadcast_to(np.asarray(probability) < np.asarray(cutoff), leading).reshape(count)
        masks[below] = False
    return masks.reshape(*leading, out_h, out_w)


# --------------------------------------------------------------------------- one large map at a time
def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of one 2-D mask in place: ``scipy.ndimage.binary_fill_holes`` (4-connected
    background), computed only where a hole can be.

    A background pixel outside its row's foreground span (left of the row's first foreground
    pixel or right of its last) reaches the border along the row, so only rows with a *gap*
    inside their span can hold holes. When no row has one (a convex blob, the usual Otsu mask of
    a Grad-CAM map) there is nothing to do. Otherwise the box around the gaps plus a one-pixel
    ring is labelled (``scipy.ndimage.label``): a background component there is a hole unless it
    touches the ring (every component that reaches the border does: a non-gap pixel's run along
    its row crosses the ring). scipy's ``binary_fill_holes`` dilates from the border instead, one
    pixel per iteration over the whole image; the result is identical (tested against scipy).
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return mask
    top, bottom = rows[0], rows[-1] + 1
    band = mask[top:bottom]
    width = band.shape[1]
    first = band.argmax(axis=1)
    last = width - 1 - band[:, ::-1].argmax(axis=1)
    filled = np.count_nonzero(band, axis=1)
    gaps = np.flatnonzero((filled > 0) & (last - first + 1 > filled))
    if not len(gaps):
        return mask
    r0, r1 = max(top + gaps[0] - 1, 0), min(top + gaps[-1] + 2, mask.shape[0])
    c0, c1 = first[gaps].min(), last[gaps].max() + 1  # foreground columns: the ring's sides
    region = mask[r0:r1, c0:c1]  # a view
    labels, count = ndimage.label(~region, structure=_FILL_STRUCTURE[0])
    hole = np.ones(count + 1, dtype=bool)
    hole[labels[0]] = hole[labels[-1]] = hole[labels[:, 0]] = hole[labels[:, -1]] = False
    hole[0] = False  # label 0 is the foreground
    if hole.any():
        region |= hole[labels]
    return mask


def drop_isolated_pixels(mask: np.ndarray) -> np.ndarray:
    """Remove, in place, foreground pixels of one 2-D mask without any 8-neighbour (only the
    foreground's bounding box is examined)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return mask
    columns = np.flatnonzero(mask.any(axis=0))
    box = mask[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    box[...] = _drop_isolated(box[None])[0]
    return mask


def segment_resized_map(resized: torch.Tensor, *, signed: str = "positive", threshold: float | None = None) -> np.ndarray:
    """Segmentation of one map already resized to the original image size, as :func:`heatmap_to_mask`
    computes it: Otsu (with filling and isolated-pixel removal), or a fixed ``threshold`` on the
    normalised map (no filling, as there).

    Parameters
    ----------
    resized : Tensor, float32, shape (H, W), finite
        Overwritten (the sign step and the normalisation run in place, to keep one copy of a
        2320 x 2828 map in memory).
    signed : see :func:`heatmap_to_mask`
    threshold : float in [0, 1], optional
        None or NaN: Otsu (CheXlocalize's default); a number: ``normalised > threshold``, compared in
        float64 as :func:`heatmap_to_mask` and CheXlocalize do (a tuned per-class threshold).

    Returns
    -------
    ndarray of bool, shape (H, W)
        Identical to ``heatmap_to_mask(map, output_size=(H, W), signed=signed, threshold=...)`` for
        the map ``resized`` came from (tested): the same float32 operations in the same order, the
        histogram counted by torch, holes filled by :func:`fill_holes`.
    """
    _check_signed(signed)
    if signed == "positive":
        resized.clamp_(min=0)
    elif signed == "absolute":
        resized.abs_()
    low, high = torch.aminmax(resized)
    spread = high - low
    if not spread > 0:
        return np.zeros(resized.shape, dtype=bool)
    normalised = resized.sub_(low).div_(spread)
    if threshold is not None and not np.isnan(threshold):
        if not 0 <= threshold <= 1:
            raise ValueError(f"a fixed threshold must lie in [0, 1] (it applies to the min-max normalised map), "
                             f"got {threshold}")
        return normalised.numpy() > np.float64(threshold)
    scaled = normalised.mul_(255).to(torch.uint8)
    histogram = torch.bincount(scaled.flatten(), minlength=256).numpy()
    otsu = int(_otsu_from_histograms(histogram[None])[0])
    mask = (scaled > otsu).numpy()
    return drop_isolated_pixels(fill_holes(mask))
