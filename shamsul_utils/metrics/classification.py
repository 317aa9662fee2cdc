"""Classification scores: AUROC and AUPRC per class with bootstrap intervals, their
positive-weighted averages, and the AUROC of many resamples at once.

Point estimates are sklearn's; resamples use exact vectorised equivalents (Mann-Whitney U with
mid-ranks for AUROC, sklearn's step-wise average precision), checked against sklearn in
``tests/test_metrics.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from .bootstrap import interval_of, resample_indices

__all__ = ["auroc_auprc", "auroc_rows", "mean_auroc"]


def auroc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row (Mann-Whitney U with mid-ranks = sklearn's trapezoidal ROC AUC).

    ``labels`` and ``scores`` have shape ``[R, N]`` (e.g. R bootstrap resamples of N images);
    NaN for a row without positives or without negatives.
    """
    labels = np.asarray(labels, dtype=float)
    ranks = stats.rankdata(scores, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        values = ((ranks * labels).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), values, np.nan)


def mean_auroc(labels, probabilities) -> float:
    """Unweighted mean of sklearn's ``roc_auc_score`` over the classes (columns) that have both
    positives and negatives and that the model predicts (a class it lacks has NaN probabilities);
    NaN when none is left. Training selects its best epoch on this (``select_on: valid_auroc``)."""
    y = np.asarray(labels)
    p = np.asarray(probabilities, dtype=float)
    scores = [roc_auc_score(y[:, c], p[:, c]) for c in range(y.shape[1])
              if 0 < y[:, c].sum() < len(y) and not np.isnan(p[:, c]).any()]
    return float(np.mean(scores)) if scores else float("nan")


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
    indices = resample_indices(count, n_resamples, seed)
    point = np.full((2, classes), np.nan)
    samples = np.full((2, n_resamples, classes), np.nan)
    support = np.zeros((n_resamples, classes))
    for c in np.flatnonzero(kept):
        point[0, c] = roc_auc_score(y[:, c], p[:, c])
        point[1, c] = average_precision_score(y[:, c], p[:, c])
        yb, pb = y[indices, c].astype(float), p[indices, c]
        support[:, c] = yb.sum(axis=1)
        ok = (support[:, c] > 0) & (support[:, c] < count)
        samples[0, ok, c] = auroc_rows(yb[ok], pb[ok])
        samples[1, ok, c] = _average_precision_rows(yb[ok], pb[ok])
    skipped = np.where(kept, np.isnan(samples[0]).sum(axis=0), 0)
    # Weighted averages: over kept classes, weights = positives (of each resample).
    complete = ~np.isnan(samples[0][:, kept]).any(axis=1)
    weights = support[complete][:, kept]
    averages = []
    for m in range(2):
        estimate = np.average(point[m, kept], weights=positives[kept]) if kept.any() else np.nan
        resampled = (samples[m][complete][:, kept] * weights).sum(axis=1) / weights.sum(axis=1)
        averages.append((estimate, *interval_of(resampled[:, None], confidence, "percentile")))
    low = [interval_of(samples[m], confidence, "percentile") for m in range(2)]
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
