"""Segmentation settings tuned on validation images, as CheXlocalize does (its Table 3): per-class
fixed thresholds on the normalised map (``tune_heatmap_threshold.py``) and per-class probability
cutoffs below which the segmentation is empty (``tune_probability_threshold.py``), with readers and
writers of the CSV files CheXlocalize's scripts write, so that values tuned either way apply in
:mod:`shamsul_utils.score`.

Tune on validation images only; the test split reports.

References
----------
Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation. Nature
Machine Intelligence 4, 867-878 (github.com/rajpurkarlab/cheXlocalize).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..labels import CHEXLOCALIZE_TASK_NAMES, LOCALIZED_CLASSES, from_chexlocalize_task, to_chexlocalize_task
from ..segmentation import _check_signed, _chunks
from .localisation import iou, select_iou

__all__ = ["tune_thresholds", "tune_probability_cutoffs", "THRESHOLDS", "PROBABILITY_CUTOFFS", "read_thresholds",
           "write_thresholds", "read_probability_cutoffs", "write_probability_cutoffs"]

# CheXlocalize's candidates (as it writes and applies them, rounded to one decimal): thresholds on the normalised
# map np.arange(0.2, .8, .1), i.e. 0.2, ..., 0.8; probability cutoffs np.arange(0, .9, .1), i.e. 0.0, ..., 0.8
THRESHOLDS = np.round(np.arange(0.2, 0.8, 0.1), 1)
PROBABILITY_CUTOFFS = np.round(np.arange(0, 0.9, 0.1), 1)


def tune_thresholds(
    heatmaps,
    gt_masks,
    *,
    thresholds=None,
    signed: str = "positive",
    variant: str = "true_positive",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class fixed thresholds that maximise mIoU (CheXlocalize's ``tune_heatmap_threshold.py``).

    Parameters
    ----------
    heatmaps : array-like, shape (N, C, h, w)
    gt_masks : array-like of bool, shape (N, C, H, W), or a sequence of N arrays (C, H_n, W_n)
        Ground truth (e.g. :class:`shamsul_utils.datasets.ExpertMasks`, decoded one image at a time);
        each image's heatmaps are resized to its masks' size.
    thresholds : sequence of float, optional
        Candidates; default CheXlocalize's ``np.arange(0.2, .8, .1)``, which by floating-point
        rounding has 7 values, 0.2, 0.3, ..., 0.7 and 0.8000000000000003; CheXlocalize writes the
        winner rounded to one decimal and applies that, so the default grid is rounded to one
        decimal here (:data:`THRESHOLDS`), the values the score CLI reads back.
    signed : see :func:`shamsul_utils.segmentation.heatmap_to_mask`
    variant : {"true_positive", "all", "union"}
        Which images enter the mean IoU (see :func:`shamsul_utils.metrics.select_iou`);
        CheXlocalize tunes on the true-positive slice.

    Returns
    -------
    best : ndarray, shape (C,)
        The first threshold with the highest mIoU per class (NaN if no threshold gives any IoU).
    miou : ndarray, shape (T, C)
        mIoU of every candidate.

    Notes
    -----
    The true-positive slice rewards thresholds that leave weak maps empty: their images drop out
    of the mean. Report the ``"all"`` variant alongside. Tune on validation images only.
    """
    _check_signed(signed)
    thresholds = THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=float)
    maps = heatmaps.detach().cpu().numpy() if hasattr(heatmaps, "detach") else np.asarray(heatmaps)
    if maps.ndim != 4 or len(gt_masks) != len(maps):
        raise ValueError(f"heatmaps (N, C, h, w) {maps.shape} and gt_masks of N images ({len(gt_masks)}) needed")
    leading = maps.shape[:2]
    scores = np.full((len(thresholds), *leading), np.nan)
    for image in range(len(maps)):  # one image's masks at a time, at its own size
        truth = np.asarray(gt_masks[image], dtype=bool)
        if truth.shape[0] != leading[1]:
            raise ValueError(f"image {image}: {truth.shape[0]} masks for {leading[1]} maps")
        for where, normalised, usable, _ in _chunks(maps[image], truth.shape[-2:], signed):
            expert = truth[where]
            for index, value in enumerate(thresholds):
                predicted = (normalised > value) & usable[:, None, None]
                scores[index, image, where] = select_iou(iou(predicted, expert), expert.any(axis=(-2, -1)),
                                                         predicted.any(axis=(-2, -1)), variant=variant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        miou = np.nanmean(scores, axis=1)
    filled = np.where(np.isnan(miou), -np.inf, miou)
    best = thresholds[np.argmax(filled, axis=0)].astype(float)
    best[np.isnan(miou).all(axis=0)] = np.nan
    return best, miou


def tune_probability_cutoffs(iou_kept, gt_present, probabilities, *, cutoffs=PROBABILITY_CUTOFFS) -> tuple[np.ndarray, np.ndarray]:
    """Per-class probability cutoffs that maximise mIoU (CheXlocalize's ``tune_probability_threshold.py``).

    A pair's segmentation is kept where ``probability >= cutoff`` and emptied below, the rule every
    scorer of this project applies (:func:`shamsul_utils.segmentation.heatmap_to_mask`); CheXlocalize's
    tuning script keeps it only strictly above, which differs only for a probability exactly on a
    candidate. The mIoU is CheXlocalize's over every image of the class: IoU where the union of the
    two masks is non-empty, undefined (left out) where both are empty. The segmentation itself does
    not depend on the cutoff, so the IoUs of the kept segmentations suffice.

    Parameters
    ----------
    iou_kept : array-like, shape (N, C)
        IoU of each pair's segmentation with its expert mask, NaN where both are empty (the
        ``"union"`` variant of :func:`~shamsul_utils.metrics.select_iou`).
    gt_present : array-like of bool, shape (N, C)
        The expert mask is non-empty.
    probabilities : array-like, shape (N, C)
    cutoffs : sequence of float
        Candidates (default :data:`PROBABILITY_CUTOFFS`).

    Returns
    -------
    best : ndarray, shape (C,)
        The first cutoff with the highest mIoU per class (NaN where no cutoff gives any IoU).
    miou : ndarray, shape (T, C)

    Examples
    --------
    >>> iou_kept = np.array([[0.5], [np.nan], [0.0]])  # a hit, an empty-empty pair, a false positive
    >>> gt = np.array([[True], [False], [False]]); p = np.array([[0.9], [0.1], [0.3]])
    >>> best, miou = tune_probability_cutoffs(iou_kept, gt, p, cutoffs=[0.0, 0.5])
    >>> best.tolist(), miou[:, 0].tolist()  # at 0.5 the false positive is emptied and drops out
    ([0.5], [0.25, 0.5])
    """
    kept_iou = np.asarray(iou_kept, dtype=float)
    present = np.asarray(gt_present, dtype=bool)
    probability = np.asarray(probabilities, dtype=float)
    if not kept_iou.shape == present.shape == probability.shape or kept_iou.ndim != 2:
        raise ValueError(f"iou_kept {kept_iou.shape}, gt_present {present.shape} and probabilities "
                         f"{probability.shape} must all be (N, C)")
    candidates = np.asarray(cutoffs, dtype=float)
    emptied = np.where(present, 0.0, np.nan)  # an empty segmentation: 0 against a mask, undefined without one
    values = np.where(probability[None] >= candidates[:, None, None], kept_iou[None], emptied[None])  # [T, N, C]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        miou = np.nanmean(values, axis=1)
    filled = np.where(np.isnan(miou), -np.inf, miou)
    best = candidates[np.argmax(filled, axis=0)].astype(float)
    best[np.isnan(miou).all(axis=0)] = np.nan
    return best, miou


def _class_column(table: pd.DataFrame, path: Path) -> pd.Series:
    unknown = sorted(set(map(str, table["task"])) - set(CHEXLOCALIZE_TASK_NAMES.values()))
    if unknown:
        raise DataError(f"{path}: unknown task(s) {', '.join(unknown)}; expected CheXlocalize's localised tasks "
                        f"({', '.join(CHEXLOCALIZE_TASK_NAMES.values())})")
    return table["task"].map(from_chexlocalize_task)


def _read_csv(path, columns: tuple[str, ...]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(map(str, table.columns))}); "
                        f"CheXlocalize's layout has {', '.join(columns)}")
    values = pd.to_numeric(table[columns[0]], errors="coerce")
    bad = table.index[values.isna() | (values < 0) | (values > 1)]
    if len(bad):
        raise DataError(f"{path}: line {int(bad[0]) + 2}: {columns[0]} must be a number in [0, 1], "
                        f"got {table[columns[0]].iloc[bad[0]]!r}")
    table[columns[0]] = values
    return table


def read_thresholds(path: str | os.PathLike) -> dict[str, float]:
    """Per-class fixed thresholds from CheXlocalize's ``tuning_results.csv`` layout (columns
    ``threshold, task``; task names as CheXlocalize spells them). Classes not listed use Otsu."""
    table = _read_csv(path, ("threshold", "task"))
    classes = _class_column(table, Path(path))
    if classes.duplicated().any():
        raise DataError(f"{path}: task {table['task'][classes.duplicated()].iloc[0]!r} listed twice")
    return dict(zip(classes, table["threshold"].astype(float), strict=True))


def write_thresholds(path: str | os.PathLike, thresholds: dict[str, float]) -> None:
    """Write per-class thresholds in CheXlocalize's ``tuning_results.csv`` layout (atomically)."""
    from ..files import write_table

    rows = [{"threshold": round(float(value), 1), "task": to_chexlocalize_task(name)}
            for name, value in thresholds.items() if not np.isnan(value)]
    write_table(pd.DataFrame(rows, columns=["threshold", "task"]), Path(path))


def read_probability_cutoffs(path: str | os.PathLike) -> dict[str, float]:
    """Per-class probability cutoffs from CheXlocalize's ``probability_tuning_results.csv`` layout
    (columns ``prob_threshold, mIoU, task``, one row per candidate): per task the first candidate with
    the highest mIoU, as CheXlocalize picks it. A file with one row per task (no ``mIoU`` column)
    is read as the chosen cutoffs."""
    table = _read_csv(path, ("prob_threshold", "task"))
    table["class"] = _class_column(table, Path(path))
    if "mIoU" not in table.columns:
        if table["class"].duplicated().any():
            raise DataError(f"{path}: several cutoffs for one task and no mIoU column to choose among them")
        return dict(zip(table["class"], table["prob_threshold"].astype(float), strict=True))
    table["mIoU"] = pd.to_numeric(table["mIoU"], errors="coerce")
    chosen = {}
    for name, group in table.groupby("class", sort=False):
        scores = group["mIoU"].to_numpy(float)
        if np.isnan(scores).all():
            continue
        chosen[name] = float(group["prob_threshold"].iloc[int(np.nanargmax(scores))])
    return chosen


def write_probability_cutoffs(path: str | os.PathLike, miou: np.ndarray, *, cutoffs=PROBABILITY_CUTOFFS,
                              classes=LOCALIZED_CLASSES) -> None:
    """Write :func:`tune_probability_cutoffs`' ``miou`` [T, C] in CheXlocalize's
    ``probability_tuning_results.csv`` layout (atomically). Deviation: the mIoU is written at full
    precision (CheXlocalize rounds it to 3 decimals, which can tie candidates and change the choice
    read back)."""
    from ..files import write_table

    rows = [{"prob_threshold": round(float(cutoff), 1), "mIoU": float(miou[t, c]),
             "task": to_chexlocalize_task(name)}
            for c, name in enumerate(classes) for t, cutoff in enumerate(cutoffs)]
    write_table(pd.DataFrame(rows, columns=["prob_threshold", "mIoU", "task"]), Path(path))
