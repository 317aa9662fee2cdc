"""Bootstrap confidence intervals over images (and over training seeds), and paired differences.

Every per-image score is an array ``[N]`` or ``[N, C]`` with NaN where it is undefined; the
statistic is NaN-aware (default :func:`numpy.nanmean`), so one resampling of images serves every
table. Intervals are percentile intervals, or CheXlocalize's sorted-sample indices
(``eval.py``'s ``compute_cis``) where a table is compared with CheXlocalize's.

References
----------
Efron, B. & Tibshirani, R. (1993). An Introduction to the Bootstrap. Chapman & Hall.
Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation.
Nature Machine Intelligence 4, 867-878 (CheXlocalize's ``bootstrap_metric``, ``compute_cis``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = ["bootstrap_ci", "seed_bootstrap_ci", "paired_bootstrap_difference", "PairedDifference",
           "resample_indices", "resampled_statistic", "interval_of", "CHUNK_ELEMENTS"]

# Elements of one resampled chunk: bounds memory whatever the number of resamples.
CHUNK_ELEMENTS = 1 << 24


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def resampled_statistic(values: np.ndarray, indices: np.ndarray, statistic: Callable) -> np.ndarray:
    """statistic over axis 1 of values[indices], in chunks of resamples: [R, ...]."""
    per_resample = max(1, values.size)
    step = max(1, CHUNK_ELEMENTS // per_resample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN
        return np.concatenate(
            [
                statistic(values[indices[start : start + step]], axis=1)
                for start in range(0, len(indices), step)
            ]
        )


def interval_of(samples: np.ndarray, confidence: float, interval: str) -> tuple[np.ndarray, np.ndarray]:
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
    samples = resampled_statistic(array, resample_indices(len(array), n_resamples, seed), statistic)
    low, high = interval_of(samples, confidence, interval)
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
    indices = resample_indices(n_images, n_resamples, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        estimate = np.mean([statistic(array[k], axis=0) for k in range(n_seeds)], axis=0)
        per_seed = np.stack([resampled_statistic(array[k], indices, statistic) for k in range(n_seeds)])  # [S, R, ...]
    if n_seeds > 1:
        drawn = np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(n_resamples, n_seeds))
        samples = per_seed[drawn, np.arange(n_resamples)[:, None]].mean(axis=1)
    else:
        samples = per_seed[0]
    low, high = interval_of(samples, confidence, "percentile")
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
    indices = resample_indices(len(first), n_resamples, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        difference = statistic(first, axis=0) - statistic(second, axis=0)
    sample_a = resampled_statistic(first, indices, statistic)
    sample_b = resampled_statistic(second, indices, statistic)
    low, high = interval_of(sample_a - sample_b, confidence, "percentile")
    defined = ~(np.isnan(sample_a) | np.isnan(sample_b))
    with np.errstate(invalid="ignore"):
        greater = ((sample_a > sample_b) & defined).sum(axis=0) / defined.sum(axis=0)
    return PairedDifference(difference, low, high, greater)
