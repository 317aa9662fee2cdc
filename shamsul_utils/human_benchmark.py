"""CheXlocalize's human benchmark, scored like a method, and each method's percentage decrease from it.

When a user has CheXlocalize's benchmark radiologists' segmentations (``hb_segmentations_test.json``)
and, optionally, their salient points (``hb_salient_pt_test.json``), ``python -m shamsul_utils.score
--human-benchmark ...`` scores them against the same ground truth as the method
(:func:`score_human_benchmark`) and reports how far the method falls below them
(:func:`percentage_decrease`), as CheXlocalize's Table 2 and Fig. 2 do.

References
----------
Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation. Nature
Machine Intelligence 4, 867-878 (github.com/rajpurkarlab/cheXlocalize: ``eval.py``,
``eval_hb_hit.py``, ``calculate_percentage_decrease.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .chexlocalize import read_segmentations
from .errors import DataError
from .labels import CHEXLOCALIZE_TASK_NAMES, LOCALIZED_CLASSES
from .metrics.bootstrap import interval_of, resample_indices, resampled_statistic
from .score import (
    _OVERALL,
    _as_truth,
    _each_image,
    _matched,
    _rows,
    _segmentation_values,
    _wide,
)

__all__ = ["HUMAN_BENCHMARK_IMAGES", "HUMAN_BENCHMARK_FILES", "PERCENTAGE_DECREASE_METRICS", "score_human_benchmark",
           "percentage_decrease", "availability"]


HUMAN_BENCHMARK_IMAGES = ("exact", "ground-truth")


def score_human_benchmark(segmentations, ground_truth, *, salient_points=None, images: str = "exact") -> pd.DataFrame:
    """Per-pair scores of CheXlocalize's human benchmark, like a method's (:func:`score_segmentations`).

    Parameters
    ----------
    segmentations : path-like
        The benchmark radiologists' segmentations (``hb_segmentations_test.json``), a
        segmentation JSON; scored at the ground truth's size, a task without an entry is empty.
    ground_truth : path-like or GroundTruth
        Every image of it is scored (an annotation file's images only: score the method first
        and pass the ground truth it was scored on, as the CLI does).
    salient_points : path-like, optional
        The benchmark radiologists' most-representative points (``hb_salient_pt_test.json``,
        :func:`shamsul_utils.annotations.read_salient_points`): the human hit rate, CheXlocalize's
        ``get_hb_hitrates``: a pair with an expert mask is a hit when any of its points lies in
        the mask, at ``mask[int(y), int(x)]``, a miss when none does or the file has none for it;
        undefined without an expert mask. A point outside its image (``int(x)`` not in
        ``[0, w)`` or ``int(y)`` not in ``[0, h)``) is refused. Without the file the hit columns are NaN.
    images : {"exact", "ground-truth"}
        ``"exact"`` (default): both files must hold exactly the ground truth's images (the
        salient points: no image the ground truth lacks; an image without points has missed),
        else one line naming an image. ``"ground-truth"``: CheXlocalize's ``eval.py``: a
        ground-truth image the segmentations lack is an empty segmentation, and images the
        ground truth lacks are left out; their ids are in ``pairs.attrs``
        (``"images_without_segmentation"``, ``"images_left_out"``). CheXlocalize's test-set files
        need it: ``hb_segmentations_test.json`` lacks ``patient65145_study1_view1_frontal``,
        which ``gt_segmentations_test.json`` has (rajpurkarlab, ``human_benchmark_metrics.py``).

    Returns
    -------
    DataFrame
        As :func:`score_heatmaps` (``hit_tie_aware`` is NaN: points have no ties).

    References
    ----------
    Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation.
    Nature Machine Intelligence 4, 867-878; github.com/rajpurkarlab/cheXlocalize (``eval.py``:
    ``get_ious``, ``get_hb_hitrates``).
    """
    from .annotations import read_salient_points

    if images not in HUMAN_BENCHMARK_IMAGES:
        raise ValueError(f"images must be one of {HUMAN_BENCHMARK_IMAGES}, got {images!r}")
    predicted = read_segmentations(segmentations)
    points = read_salient_points(salient_points) if salient_points is not None else None
    truth = _as_truth(ground_truth)
    truth = truth._replace(annotated_only=False)  # the images to score are the ground truth's
    without = sorted(set(truth.entries) - set(predicted))
    left_out = sorted(set(predicted) - set(truth.entries))
    if images == "ground-truth":
        predicted = {cxr_id: predicted.get(cxr_id, {}) for cxr_id in truth.entries}
    try:
        entries = _matched(predicted, truth, str(segmentations))
    except DataError as error:
        raise DataError(f"{error}; images='ground-truth' (--human-benchmark-images ground-truth) scores it as "
                        "CheXlocalize's eval.py does") from None
    if points is not None:
        unknown = sorted(set(points) - set(truth.entries))
        if unknown and images == "exact":
            raise DataError(f"{salient_points}: image {unknown[0]!r} is not in the ground truth ({len(unknown)} such ids)")
    tables = []
    for cxr_id, expert, size in _each_image(entries, truth.where):
        values = _segmentation_values(predicted[cxr_id], expert, size, cxr_id, segmentations)
        if points is not None:
            values[3] = _point_hits(points.get(cxr_id, {}), expert, size, f"{salient_points}: {cxr_id}")
        tables.append(_rows(cxr_id, size, values))
    pairs = pd.concat(tables, ignore_index=True)
    if images == "ground-truth":
        pairs.attrs["images_without_segmentation"], pairs.attrs["images_left_out"] = without, left_out
    return pairs


def _point_hits(points: dict[str, np.ndarray], expert: np.ndarray, size, where: str) -> np.ndarray:
    height, width = size
    hits = np.full(len(LOCALIZED_CLASSES), np.nan)
    for column, name in enumerate(LOCALIZED_CLASSES):
        marked = points.get(name, np.zeros((0, 2)))
        # int() truncates towards zero, as CheXlocalize's gt_mask[int(pt[1]), int(pt[0])]
        columns, rows = np.trunc(marked[:, 0]).astype(np.int64), np.trunc(marked[:, 1]).astype(np.int64)
        outside = (columns < 0) | (columns >= width) | (rows < 0) | (rows >= height)
        if outside.any():
            x, y = marked[np.argmax(outside)]
            raise DataError(f"{where}/{CHEXLOCALIZE_TASK_NAMES[name]}: point (x={x:g}, y={y:g}) is outside the "
                            f"image (w={width}, h={height}; points are [x, y])")
        if expert[column].any():
            hits[column] = float(expert[column][rows, columns].any())
    return hits


PERCENTAGE_DECREASE_METRICS = ("miou_true_positive", "miou_full_set", "miou_expert_mask", "hit_rate")


def percentage_decrease(method_pairs: pd.DataFrame, human_pairs: pd.DataFrame, *, n_resamples: int = 1000,
                        seed: int = 0, interval: str = "percentile") -> pd.DataFrame:
    """How far a method's localisation falls below the human benchmark, per task and overall, in percent.

    CheXlocalize's definition (Saporta et al. 2022; ``calculate_percentage_decrease.py``):
    ``100 * (human - method) / human`` per pathology, for mIoU and for hit rate, each computed
    on its own pairs (the method's mIoU on its true-positive slice, the human benchmark's on
    its own); positive where the method is worse. The overall row is that of the two task
    means (CheXlocalize's "Average": ``(mean_hb - mean_pred) / mean_hb``), not the mean of the
    task percentages. The 95 % CI is that of the same ratio over bootstrap resamples of images,
    the method and the human benchmark resampled with the same images (as CheXlocalize's two
    ``eval.py`` runs with seed 0 over the same sorted images are), with the resamples of
    :func:`summarise`.

    Parameters
    ----------
    method_pairs, human_pairs : DataFrame
        Per-pair tables of the same images (``pairs.csv``, ``human_benchmark_pairs.csv``).
    n_resamples, seed, interval
        As in :func:`summarise`.

    Returns
    -------
    DataFrame
        One row per task and ``all tasks (mean of task means)``; for each of
        ``miou_true_positive``, ``miou_full_set``, ``miou_expert_mask`` and ``hit_rate``:
        ``<metric>_method``, ``<metric>_human``, ``<metric>_decrease_pct`` and its
        ``_low`` / ``_high``. NaN where the human value is 0 or either is undefined.

    Notes
    -----
    Deviations from CheXlocalize's script: the method's and the human values are the
    statistics of the sample, not the means of their bootstrap replicates, and nothing is
    rounded before the ratio is taken (CheXlocalize rounds the averages to 3 decimals first).

    References
    ----------
    Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation.
    Nature Machine Intelligence 4, 867-878; github.com/rajpurkarlab/cheXlocalize
    (``calculate_percentage_decrease.py``, README section "Calculate percentage decrease").

    Examples
    --------
    >>> def pairs(ious):  # one image, the 10 tasks; each mask non-empty
    ...     return pd.DataFrame({"cxr_id": "p", "task": list(CHEXLOCALIZE_TASK_NAMES.values()), "iou": ious,
    ...                          "gt_present": True, "pred_present": True, "hit": 1.0, "hit_tie_aware": 1.0})
    >>> table = percentage_decrease(pairs([0.2] * 10), pairs([0.8] * 10), n_resamples=10)
    >>> float(table["miou_true_positive_decrease_pct"].iloc[-1])
    75.0
    """
    from .evaluation import class_mean

    method_ids, method = _wide(method_pairs)
    human_ids, human = _wide(human_pairs)
    if method_ids != human_ids:
        differ = sorted(set(method_ids) ^ set(human_ids))
        raise DataError(f"the method and the human benchmark were scored on different images (e.g. {differ[0]!r}, "
                        f"{len(differ)} in one only)")
    indices = resample_indices(len(method_ids), n_resamples, seed)
    tasks = [CHEXLOCALIZE_TASK_NAMES[name] for name in LOCALIZED_CLASSES]
    table = pd.DataFrame({"task": tasks + [_OVERALL]})
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for label in PERCENTAGE_DECREASE_METRICS:
            values, samples = [], []
            for selection in (method[label], human[label]):
                per_task = np.nanmean(selection, axis=0)
                values.append(np.append(per_task, np.nanmean(per_task)))
                samples.append(np.column_stack([resampled_statistic(selection, indices, np.nanmean),
                                                resampled_statistic(selection, indices, class_mean)]))
            ratio = 100 * (values[1] - values[0]) / values[1]
            sampled = 100 * (samples[1] - samples[0]) / samples[1]
            sampled[~np.isfinite(sampled)] = np.nan
            low, high = interval_of(sampled, 0.95, interval)
            table[f"{label}_method"], table[f"{label}_human"] = values
            table[f"{label}_decrease_pct"] = np.where(np.isfinite(ratio), ratio, np.nan)
            table[f"{label}_decrease_pct_low"], table[f"{label}_decrease_pct_high"] = low, high
    return table




HUMAN_BENCHMARK_FILES = ("hb_segmentations_test.json", "hb_salient_pt_test.json")


def availability(profile) -> str:
    """One line for notebook 07: whether this run has CheXlocalize's human benchmark and how to score
    with it. The phantom has none (the benchmark radiologists marked CheXpert test images); for
    CheXpert data the files are looked for beside the profile's ground truth (``DATA_DIR/CheXlocalize/``)."""
    if profile.data.source == "phantom":
        return ("human benchmark: none for the phantom (CheXlocalize's benchmark radiologists marked CheXpert's test "
                "images); on CheXlocalize's data: python -m shamsul_utils.score --human-benchmark (data/README.md)")
    folder = profile.data_root / "CheXlocalize"
    missing = [name for name in HUMAN_BENCHMARK_FILES if not (folder / name).is_file()]
    if missing:
        return f"human benchmark: not found under {folder} ({', '.join(missing)} missing); see data/README.md"
    return (f"human benchmark: found under {folder}; score a method's test heatmaps against "
            "gt_segmentations_test.json with python -m shamsul_utils.score --human-benchmark "
            f"{folder / HUMAN_BENCHMARK_FILES[0]} --human-salient-points {folder / HUMAN_BENCHMARK_FILES[1]} "
            "(data/README.md): CheXlocalize's benchmark covers its test split, which this profile does not score")
