"""Score heatmaps or segmentations against CheXlocalize's ground truth, from the command line.

``python -m shamsul_utils.score`` is the counterpart of CheXlocalize's own scripts
(``heatmap_to_segmentation.py`` followed by ``eval.py``), for files in CheXlocalize's formats:

* predictions: a folder of heatmap pickles ``<cxr_id>_<Task>_map.pkl`` (CheXlocalize's, or this
  project's :func:`shamsul_utils.chexlocalize.export_heatmap_pkls`), this project's heatmap cache
  of one method (``--store``), or a segmentation JSON;
* ground truth: CheXlocalize's segmentation JSON (``gt_segmentations_val.json``).

Each heatmap is resized to its image's original size (the ground truth's), segmented with Otsu
(:mod:`shamsul_utils.scoring`, one image at a time) and scored. Written to ``--output``:

* ``pairs.csv``: one row per image and task: IoU, whether each mask is non-empty, the hit of the
  pointing game (first maximal pixel, as CheXlocalize) and its tie-aware rate, the size scored at;
* ``summary.csv``: per task and over all tasks (the mean of the task means): mIoU on the
  true-positive slice (CheXlocalize's default), on CheXlocalize's full set (``true_pos_only=False``:
  every pair where either mask is non-empty; ``miou_full_set``), on the pairs with an expert mask
  (``miou_expert_mask``, this study's "full set"), and the hit rate, each with its bootstrap CI
  over images (CheXlocalize's percentile indices with ``--ci chexlocalize``).

``--signed raw`` segments the signed map as CheXlocalize does; the default ``positive`` clips
negative evidence first (see :func:`shamsul_utils.segmentation.heatmap_to_mask`).

Example::

    python -m shamsul_utils.score --heatmaps heatmaps/gradcam --gt CheXlocalize/gt_segmentations_val.json \\
        --output scores/gradcam --signed raw
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics
from .chexlocalize import decode_mask, import_heatmap_pkls, read_segmentations
from .errors import DataError
from .files import write_table
from .labels import CHEXLOCALIZE_TASK_NAMES, LOCALIZED_CLASSES
from .scoring import score_image
from .store import read_heatmap_file

__all__ = ["score_heatmaps", "score_store", "score_segmentations", "summarise", "main"]

_COLUMNS = ("iou", "gt_present", "pred_present", "hit", "hit_tie_aware")


def _expert_masks(ground_truth: dict, cxr_ids: list[str], path):
    """The ground truth's masks of the 10 localised classes, one image at a time (the study's own
    :class:`~shamsul_utils.datasets.ExpertMasks`: every entry checked before it is decoded); a bad
    entry is one line naming the file ``path``."""
    from .datasets import ExpertMasks, SplitData

    split = SplitData("ground truth", pd.DataFrame({"cxr_id": [], "image_path": []}), ground_truth)
    try:
        return ExpertMasks(split, cxr_ids, check_image_size=False)
    except DataError as error:
        raise DataError(f"{path}: {error}") from None


def _check_ids(predicted: dict, ground_truth: dict, what: str) -> list[str]:
    unknown = sorted(set(predicted) - set(ground_truth))
    if unknown:
        raise DataError(f"{what}: image {unknown[0]!r} is not in the ground truth ({len(unknown)} such ids)")
    missing = sorted(set(ground_truth) - set(predicted))
    if missing:
        raise DataError(f"{what}: no prediction for image {missing[0]!r} ({len(missing)} of {len(ground_truth)} "
                        "ground-truth images have none)")
    return sorted(ground_truth)


def _each_image(predicted: dict, ground_truth_path, what: str):
    """``(cxr_id, masks [10, H, W], (H, W))`` of every ground-truth image, in id order, after
    checking that ``predicted`` holds exactly the ground truth's images (one image's masks at a time)."""
    ground_truth = read_segmentations(ground_truth_path)
    ids = _check_ids(predicted, ground_truth, what)
    masks = _expert_masks(ground_truth, ids, ground_truth_path)
    for row, cxr_id in enumerate(ids):
        yield cxr_id, masks[row], masks.sizes[row]


def _rows(cxr_id: str, size: tuple[int, int], values: np.ndarray) -> pd.DataFrame:
    table = pd.DataFrame({"cxr_id": cxr_id, "task": [CHEXLOCALIZE_TASK_NAMES[name] for name in LOCALIZED_CLASSES]})
    for name, column in zip(_COLUMNS, values, strict=True):
        table[name] = column
    table["scored_height"], table["scored_width"] = size
    return table


def score_heatmaps(folder, ground_truth_path, *, signed: str = "positive",
                   probability_cutoff: float | None = None) -> pd.DataFrame:
    """Per-pair scores of a folder of heatmap pickles (see the module docstring)."""
    heatmaps = import_heatmap_pkls(folder)
    tables = []
    for cxr_id, truth, size in _each_image(heatmaps, ground_truth_path, str(folder)):
        entries = heatmaps[cxr_id]
        absent = [name for name in LOCALIZED_CLASSES if name not in entries]
        if absent:
            raise DataError(f"{folder}: image {cxr_id!r} has no heatmap for {CHEXLOCALIZE_TASK_NAMES[absent[0]]!r}")
        values = np.full((len(_COLUMNS), len(LOCALIZED_CLASSES)), np.nan)
        for column, name in enumerate(LOCALIZED_CLASSES):
            entry = entries[name]
            if tuple(entry.size) != size:
                raise DataError(f"{folder}: {cxr_id}/{CHEXLOCALIZE_TASK_NAMES[name]}: cxr_dims give the image size "
                                f"{entry.size}, the ground truth's masks are {size}")
            result = score_image(entry.map[None], truth[column:column + 1], signed=signed,
                                 probabilities=None if probability_cutoff is None else [entry.probability],
                                 probability_cutoff=probability_cutoff)
            values[:, column] = [value[0] for value in result]
        tables.append(_rows(cxr_id, size, values))
    return pd.concat(tables, ignore_index=True)


def score_store(folder, ground_truth_path, *, signed: str = "positive") -> pd.DataFrame:
    """Per-pair scores of one method's heatmap cache of this project
    (``runs/<profile>/heatmaps/<method>/<key>/``: one ``<cxr_id>.npz`` of 14 maps per image).

    The cache keeps no image sizes: each map is scored at its ground-truth masks' size, which is
    the original image's size (what CheXlocalize's ``cxr_dims`` holds).
    """
    from .labels import CLASSES

    folder = Path(folder)
    files = {path.stem: path for path in sorted(folder.glob("*.npz"))}
    if not files:
        raise DataError(f"{folder}: no <cxr_id>.npz heatmaps (a folder runs/<profile>/heatmaps/<method>/<key>/)")
    localised = [CLASSES.index(name) for name in LOCALIZED_CLASSES]
    tables = []
    for cxr_id, truth, size in _each_image(files, ground_truth_path, str(folder)):
        try:
            maps, _ = read_heatmap_file(files[cxr_id])
        except DataError as error:
            raise DataError(f"not a heatmap file of this project: {error}") from None
        if len(maps) != len(CLASSES):
            raise DataError(f"{files[cxr_id]}: maps of shape {maps.shape}; expected ({len(CLASSES)}, h, w)")
        tables.append(_rows(cxr_id, size, np.stack(score_image(maps[localised], truth, signed=signed))))
    return pd.concat(tables, ignore_index=True)


def score_segmentations(path, ground_truth_path) -> pd.DataFrame:
    """Per-pair IoU of a segmentation JSON (no maps, so no pointing game: hit columns are NaN)."""
    predicted = read_segmentations(path)
    tables = []
    for cxr_id, truth, size in _each_image(predicted, ground_truth_path, str(path)):
        values = np.full((len(_COLUMNS), len(LOCALIZED_CLASSES)), np.nan)
        for column, name in enumerate(LOCALIZED_CLASSES):
            rle = predicted[cxr_id].get(name)
            mask = np.zeros(size, bool) if rle is None else decode_mask(rle, where=f"{path}: {cxr_id}/{name}")
            if mask.shape != size:
                raise DataError(f"{path}: {cxr_id}/{CHEXLOCALIZE_TASK_NAMES[name]}: segmentation is {mask.shape}, "
                                f"the ground truth's masks are {size}")
            values[:3, column] = (metrics.iou(mask, truth[column]), truth[column].any(), mask.any())
        tables.append(_rows(cxr_id, size, values))
    return pd.concat(tables, ignore_index=True)


def summarise(pairs: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0, interval: str = "percentile") -> pd.DataFrame:
    """Per task and over all tasks: mIoU (three selections) and hit rate with bootstrap CIs over images."""
    from .evaluation import class_mean

    tasks = [CHEXLOCALIZE_TASK_NAMES[name] for name in LOCALIZED_CLASSES]
    wide = {name: pairs.pivot(index="cxr_id", columns="task", values=name)[tasks].to_numpy(dtype=float)
            for name in _COLUMNS}
    gt, pred = wide["gt_present"] > 0, wide["pred_present"] > 0
    selections = {
        "miou_true_positive": metrics.select_iou(wide["iou"], gt, pred, variant="true_positive"),
        "miou_full_set": metrics.select_iou(wide["iou"], gt, pred, variant="union"),
        "miou_expert_mask": metrics.select_iou(wide["iou"], gt, pred, variant="all"),
        "hit_rate": wide["hit"],
        "hit_rate_tie_aware": wide["hit_tie_aware"],
    }
    rows = [{"task": task} for task in tasks] + [{"task": "all tasks (mean of task means)"}]
    for label, values in selections.items():
        kwargs = {"n_resamples": n_resamples, "seed": seed, "interval": interval}
        per_task = metrics.bootstrap_ci(values, **kwargs)
        overall = metrics.bootstrap_ci(values, statistic=class_mean, **kwargs)
        counts = (~np.isnan(values)).sum(axis=0)
        for index, row in enumerate(rows):
            estimate, low, high = ((part[index] for part in per_task) if index < len(tasks) else overall)
            row |= {label: float(estimate), f"{label}_low": float(low), f"{label}_high": float(high),
                    f"n_{label}": int(counts[index] if index < len(tasks) else counts.sum())}
    return pd.DataFrame(rows)


def _check_writable(folder: Path) -> None:
    """Refuse an output folder that cannot be written before scoring, not after it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise DataError(f"{folder}: cannot write the tables there ({error.strerror or type(error).__name__})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shamsul_utils.score",
                                     description="Score heatmaps or segmentations against CheXlocalize's masks.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--heatmaps", type=Path, help="folder of <cxr_id>_<Task>_map.pkl heatmap pickles")
    source.add_argument("--segmentations", type=Path, help="segmentation JSON in CheXlocalize's format")
    source.add_argument("--store", type=Path,
                        help="this project's heatmap cache of one method: runs/<profile>/heatmaps/<method>/<key>")
    parser.add_argument("--gt", type=Path, required=True, help="ground-truth segmentation JSON (CheXlocalize)")
    parser.add_argument("--output", type=Path, required=True, help="folder for pairs.csv and summary.csv")
    parser.add_argument("--signed", choices=("positive", "absolute", "raw"), default="positive",
                        help="negative evidence before min-max: clip (default), |m|, or as is (CheXlocalize)")
    parser.add_argument("--probability-cutoff", type=float, default=None,
                        help="empty segmentation where the pkl's prob is below this (CheXlocalize's option)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of images (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ci", choices=("percentile", "chexlocalize"), default="percentile",
                        help="interval: percentiles, or CheXlocalize's sorted-sample indices")
    arguments = parser.parse_args(argv)
    if arguments.bootstrap < 1:
        parser.error("--bootstrap must be at least 1")
    try:
        _check_writable(arguments.output)
        if arguments.heatmaps is not None:
            pairs = score_heatmaps(arguments.heatmaps, arguments.gt, signed=arguments.signed,
                                   probability_cutoff=arguments.probability_cutoff)
        elif arguments.store is not None:
            if arguments.probability_cutoff is not None:
                parser.error("--probability-cutoff needs probabilities: the store has none (use --heatmaps)")
            pairs = score_store(arguments.store, arguments.gt, signed=arguments.signed)
        else:
            pairs = score_segmentations(arguments.segmentations, arguments.gt)
        summary = summarise(pairs, n_resamples=arguments.bootstrap, seed=arguments.seed, interval=arguments.ci)
    except DataError as error:
        print(f"score: {error}", file=sys.stderr)
        return 2
    write_table(pairs, arguments.output / "pairs.csv")
    write_table(summary, arguments.output / "summary.csv")
    overall = summary.iloc[-1]
    print(f"{len(pairs['cxr_id'].unique())} images: mIoU {overall['miou_true_positive']:.3f} (true-positive slice), "
          f"{overall['miou_full_set']:.3f} (full set); hit rate {overall['hit_rate']:.3f}; "
          f"tables in {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
