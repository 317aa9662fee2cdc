"""Score heatmaps or segmentations against CheXlocalize's ground truth, from the command line.

``python -m shamsul_utils.score`` is the counterpart of CheXlocalize's own scripts
(``heatmap_to_segmentation.py`` followed by ``eval.py``), for files in CheXlocalize's formats:

* predictions: a folder of heatmap pickles ``<cxr_id>_<Task>_map.pkl`` (CheXlocalize's, or this
  project's :func:`shamsul_utils.chexlocalize.export_heatmap_pkls`), this project's heatmap cache
  of one method (``--store``), or a segmentation JSON;
* ground truth: CheXlocalize's segmentation JSON (``gt_segmentations_val.json``, ``--gt``), or
  its raw annotations (``gt_annotations_val.json``, ``--gt-annotations``), drawn into masks in
  memory exactly as CheXlocalize's ``annotation_to_segmentation.py`` draws them
  (:mod:`shamsul_utils.annotations`). An annotation file lists only the images with a positive
  finding: a scored image it does not list has empty expert masks (at the prediction's size).

Each heatmap is resized to its image's original size (the ground truth's), segmented with Otsu
(or a tuned threshold, below; :mod:`shamsul_utils.scoring`, one image at a time) and scored. Written to ``--output``:

* ``pairs.csv``: one row per image and task: IoU, whether each mask is non-empty, the hit of the
  pointing game (first maximal pixel, as CheXlocalize) and its tie-aware rate, the size scored at;
* ``summary.csv``: per task and over all tasks (the mean of the task means): mIoU on the
  true-positive slice (CheXlocalize's default), on CheXlocalize's full set (``true_pos_only=False``:
  every pair where either mask is non-empty; ``miou_full_set``), on the pairs with an expert mask
  (``miou_expert_mask``, this study's "full set"), and the hit rate, each with its bootstrap CI
  over images (CheXlocalize's percentile indices with ``--ci chexlocalize``).

``--signed raw`` segments the signed map as CheXlocalize does; the default ``positive`` clips
negative evidence first (see :func:`shamsul_utils.segmentation.heatmap_to_mask`).

With ``--human-benchmark hb_segmentations_test.json`` (CheXlocalize's benchmark radiologists'
segmentations, a segmentation JSON) and optionally ``--human-salient-points
hb_salient_pt_test.json`` (their most-representative points), the human benchmark is scored like
a method against the same ground truth, with the same bootstrap (the same resampled images), into

* ``human_benchmark_pairs.csv`` and ``human_benchmark.csv`` (as ``pairs.csv`` and ``summary.csv``;
  its hit rate from the salient points, :func:`shamsul_utils.human_benchmark.score_human_benchmark`);
* ``percentage_decrease.csv``: per task and overall, how far the method falls below the human
  benchmark, CheXlocalize's definition (:func:`shamsul_utils.human_benchmark.percentage_decrease`).

``--thresholds tuning_results.csv`` and ``--probability-cutoffs probability_tuning_results.csv``
(CheXlocalize's tuning outputs, or this project's, ``runs/<profile>/tables/tuning/``) apply per-class
fixed thresholds in place of Otsu and per-class probability cutoffs (:mod:`shamsul_utils.metrics.tuning`).

Example::

    python -m shamsul_utils.score --heatmaps heatmaps/gradcam --gt CheXlocalize/gt_segmentations_val.json \\
        --output scores/gradcam --signed raw
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import metrics
from .chexlocalize import check_rle, decode_mask, encode_mask, import_heatmap_pkls, read_segmentations
from .errors import DataError
from .files import write_table
from .labels import CHEXLOCALIZE_TASK_NAMES, LOCALIZED_CLASSES
from .metrics import tuning
from .scoring import score_image
from .store import read_heatmap_file

__all__ = ["GroundTruth", "read_ground_truth", "score_heatmaps", "score_store", "score_segmentations",
           "summarise", "main"]

_COLUMNS = ("iou", "gt_present", "pred_present", "hit", "hit_tie_aware")


class GroundTruth(NamedTuple):
    """Expert masks to score against, kept encoded: ``{cxr_id: {class_name: COCO RLE}}``."""

    entries: dict[str, dict[str, dict]]
    where: str  # the file, for messages
    annotated_only: bool = False  # from an annotation file: an image it does not list has no finding


def read_ground_truth(segmentations: str | os.PathLike | None = None, *,
                      annotations: str | os.PathLike | None = None) -> GroundTruth:
    """The ground truth from a segmentation JSON or from CheXlocalize's raw annotations (give one).

    An annotation file is checked and drawn as CheXlocalize draws it
    (:func:`shamsul_utils.annotations.annotations_to_masks`), one image at a time, and kept as
    COCO RLE; its images without a positive finding are not in it, and are scored as having
    empty masks (see :func:`score_heatmaps`).
    """
    if (segmentations is None) == (annotations is None):
        raise DataError("give the ground truth once: a segmentation JSON or an annotation file")
    if segmentations is not None:
        return GroundTruth(read_segmentations(segmentations), str(segmentations))
    from .annotations import annotations_to_masks, read_annotations

    masks = annotations_to_masks(read_annotations(annotations))
    entries = {cxr_id: {name: _encode(mask) for name, mask in masks[cxr_id].items()} for cxr_id in masks}
    return GroundTruth(entries, str(annotations), annotated_only=True)


_EMPTY_RLE: dict[tuple[int, int], dict] = {}


def _encode(mask: np.ndarray) -> dict:
    if mask.any():
        return encode_mask(mask)
    return _empty_rle(mask.shape)


def _empty_rle(size) -> dict:
    size = (int(size[0]), int(size[1]))
    if size not in _EMPTY_RLE:
        _EMPTY_RLE[size] = encode_mask(np.zeros(size, dtype=bool))
    return dict(_EMPTY_RLE[size])


def _as_truth(ground_truth) -> GroundTruth:
    return ground_truth if isinstance(ground_truth, GroundTruth) else read_ground_truth(ground_truth)


def _expert_masks(entries: dict, cxr_ids: list[str], where: str):
    """The ground truth's masks of the 10 localised classes, one image at a time (the study's own
    :class:`~shamsul_utils.datasets.ExpertMasks`: every entry checked before it is decoded); a bad
    entry is one line naming the file ``where``."""
    from .datasets import ExpertMasks, SplitData

    split = SplitData("ground truth", pd.DataFrame({"cxr_id": [], "image_path": []}), entries)
    try:
        return ExpertMasks(split, cxr_ids, check_image_size=False)
    except DataError as error:
        raise DataError(f"{where}: {error}") from None


def _matched(predicted, truth: GroundTruth, what: str, size_of=None) -> dict[str, dict[str, dict]]:
    """The ground truth's entries for exactly the predicted images, or one line saying which image
    is missing or unknown. An image an annotation file does not list gets empty masks of the size
    ``size_of(cxr_id)`` gives (the prediction's)."""
    entries = truth.entries
    unknown = sorted(set(predicted) - set(entries))
    if unknown and not truth.annotated_only:
        raise DataError(f"{what}: image {unknown[0]!r} is not in the ground truth ({len(unknown)} such ids)")
    missing = sorted(set(entries) - set(predicted))
    if missing:
        raise DataError(f"{what}: no prediction for image {missing[0]!r} ({len(missing)} of {len(entries)} "
                        "ground-truth images have none)")
    if unknown:
        entries = dict(entries)
        for cxr_id in unknown:
            size = size_of(cxr_id) if size_of is not None else None
            if size is None:
                raise DataError(f"{what}: image {cxr_id!r} is not in the annotations and has no size here to give it "
                                f"empty masks ({len(unknown)} such ids); score it with --gt segmentations")
            entries[cxr_id] = {name: _empty_rle(size) for name in LOCALIZED_CLASSES}
    return entries


def _each_image(entries: dict, where: str):
    """``(cxr_id, masks [10, H, W], (H, W))`` of every image of ``entries``, in id order, one
    image's masks at a time."""
    ids = sorted(entries)
    masks = _expert_masks(entries, ids, where)
    for row, cxr_id in enumerate(ids):
        yield cxr_id, masks[row], masks.sizes[row]


def _rows(cxr_id: str, size: tuple[int, int], values: np.ndarray) -> pd.DataFrame:
    table = pd.DataFrame({"cxr_id": cxr_id, "task": [CHEXLOCALIZE_TASK_NAMES[name] for name in LOCALIZED_CLASSES]})
    for name, column in zip(_COLUMNS, values, strict=True):
        table[name] = column
    table["scored_height"], table["scored_width"] = size
    return table


def _per_class(values, name: str, default=None):
    """A setting given once (a number) or per class (a dict, e.g. a CheXlocalize tuning file's)."""
    if isinstance(values, dict):
        return values.get(name, default)
    return default if values is None else values


def score_heatmaps(folder, ground_truth, *, signed: str = "positive",
                   probability_cutoff: float | dict[str, float] | None = None,
                   thresholds: dict[str, float] | None = None) -> pd.DataFrame:
    """Per-pair scores of a folder of heatmap pickles (see the module docstring).

    ``ground_truth`` is a segmentation JSON's path or a :class:`GroundTruth`
    (:func:`read_ground_truth`). The pickles must cover exactly the ground truth's images; from
    an annotation file, an image it does not list is scored against empty masks of its
    ``cxr_dims`` (CheXlocalize's annotation files list only the images with a finding).
    ``probability_cutoff`` is one cutoff or one per class, ``thresholds`` fixed thresholds per class
    in place of Otsu (both as :mod:`shamsul_utils.metrics.tuning` reads CheXlocalize's tuning files;
    a class without an entry keeps Otsu and no cutoff).
    """
    heatmaps = import_heatmap_pkls(folder)
    truth = _as_truth(ground_truth)

    def size_of(cxr_id):
        return next((entry.size for entry in heatmaps[cxr_id].values()), None)

    tables = []
    for cxr_id, expert, size in _each_image(_matched(heatmaps, truth, str(folder), size_of), truth.where):
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
            cutoff = _per_class(probability_cutoff, name)
            result = score_image(entry.map[None], expert[column:column + 1], signed=signed,
                                 probabilities=None if cutoff is None else [entry.probability],
                                 probability_cutoff=cutoff,
                                 thresholds=[_per_class(thresholds, name, np.nan)])
            values[:, column] = [value[0] for value in result]
        tables.append(_rows(cxr_id, size, values))
    return pd.concat(tables, ignore_index=True)


def score_store(folder, ground_truth, *, signed: str = "positive",
                thresholds: dict[str, float] | None = None) -> pd.DataFrame:
    """Per-pair scores of one method's heatmap cache of this project
    (``runs/<profile>/heatmaps/<method>/<key>/``: one ``<cxr_id>.npz`` of 14 maps per image).

    The cache keeps no image sizes: each map is scored at its ground-truth masks' size, which is
    the original image's size (what CheXlocalize's ``cxr_dims`` holds). So every image must be
    in the ground truth, also when it comes from an annotation file. ``thresholds``: as in
    :func:`score_heatmaps` (the store has no probabilities, so no cutoff).
    """
    from .labels import CLASSES

    folder = Path(folder)
    files = {path.stem: path for path in sorted(folder.glob("*.npz"))}
    if not files:
        raise DataError(f"{folder}: no <cxr_id>.npz heatmaps (a folder runs/<profile>/heatmaps/<method>/<key>/)")
    truth = _as_truth(ground_truth)
    localised = [CLASSES.index(name) for name in LOCALIZED_CLASSES]
    tables = []
    for cxr_id, expert, size in _each_image(_matched(files, truth, str(folder)), truth.where):
        try:
            maps, _ = read_heatmap_file(files[cxr_id])
        except DataError as error:
            raise DataError(f"not a heatmap file of this project: {error}") from None
        if len(maps) != len(CLASSES):
            raise DataError(f"{files[cxr_id]}: maps of shape {maps.shape}; expected ({len(CLASSES)}, h, w)")
        fixed = [_per_class(thresholds, name, np.nan) for name in LOCALIZED_CLASSES]
        tables.append(_rows(cxr_id, size, np.stack(score_image(maps[localised], expert, signed=signed,
                                                               thresholds=fixed))))
    return pd.concat(tables, ignore_index=True)


def _segmentation_size(predicted: dict, path):
    def size_of(cxr_id):
        entry = next(iter(predicted[cxr_id].items()), None)
        return None if entry is None else check_rle(entry[1], where=f"{path}: {cxr_id}/{entry[0]}")[0]
    return size_of


def _segmentation_values(predicted_entry: dict, expert: np.ndarray, size, cxr_id: str, path) -> np.ndarray:
    """``_COLUMNS`` x tasks of one image's segmentations (a task without an entry is an empty mask)."""
    values = np.full((len(_COLUMNS), len(LOCALIZED_CLASSES)), np.nan)
    for column, name in enumerate(LOCALIZED_CLASSES):
        rle = predicted_entry.get(name)
        mask = np.zeros(size, bool) if rle is None else decode_mask(rle, where=f"{path}: {cxr_id}/{name}")
        if mask.shape != size:
            raise DataError(f"{path}: {cxr_id}/{CHEXLOCALIZE_TASK_NAMES[name]}: segmentation is {mask.shape}, "
                            f"the ground truth's masks are {size}")
        values[:3, column] = (metrics.iou(mask, expert[column]), expert[column].any(), mask.any())
    return values


def score_segmentations(path, ground_truth) -> pd.DataFrame:
    """Per-pair IoU of a segmentation JSON (no maps, so no pointing game: hit columns are NaN).

    ``ground_truth`` as in :func:`score_heatmaps`; an image an annotation file does not list gets
    empty masks of its segmentations' size.
    """
    predicted = read_segmentations(path)
    truth = _as_truth(ground_truth)
    entries = _matched(predicted, truth, str(path), _segmentation_size(predicted, path))
    tables = [_rows(cxr_id, size, _segmentation_values(predicted[cxr_id], expert, size, cxr_id, path))
              for cxr_id, expert, size in _each_image(entries, truth.where)]
    return pd.concat(tables, ignore_index=True)


_SELECTIONS = ("miou_true_positive", "miou_full_set", "miou_expert_mask", "hit_rate", "hit_rate_tie_aware")


def _wide(pairs: pd.DataFrame) -> tuple[list[str], dict[str, np.ndarray]]:
    """The image ids (sorted) and each selection of :func:`summarise` as ``[N, 10]`` (NaN: not counted)."""
    tasks = [CHEXLOCALIZE_TASK_NAMES[name] for name in LOCALIZED_CLASSES]
    wide = {name: pairs.pivot(index="cxr_id", columns="task", values=name)[tasks].sort_index()
            for name in _COLUMNS}
    ids = list(wide["iou"].index)
    wide = {name: table.to_numpy(dtype=float) for name, table in wide.items()}
    gt, pred = wide["gt_present"] > 0, wide["pred_present"] > 0
    return ids, {
        "miou_true_positive": metrics.select_iou(wide["iou"], gt, pred, variant="true_positive"),
        "miou_full_set": metrics.select_iou(wide["iou"], gt, pred, variant="union"),
        "miou_expert_mask": metrics.select_iou(wide["iou"], gt, pred, variant="all"),
        "hit_rate": wide["hit"],
        "hit_rate_tie_aware": wide["hit_tie_aware"],
    }


def summarise(pairs: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0, interval: str = "percentile") -> pd.DataFrame:
    """Per task and over all tasks: mIoU (three selections) and hit rate with bootstrap CIs over images."""
    from .evaluation import class_mean

    tasks = [CHEXLOCALIZE_TASK_NAMES[name] for name in LOCALIZED_CLASSES]
    _, selections = _wide(pairs)
    rows = [{"task": task} for task in tasks] + [{"task": _OVERALL}]
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


_OVERALL = "all tasks (mean of task means)"


def _check_writable(folder: Path) -> None:
    """Refuse an output folder that cannot be written before scoring, not after it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise DataError(f"{folder}: cannot write the tables there ({error.strerror or type(error).__name__})") from None


def _scored_truth(truth: GroundTruth, pairs: pd.DataFrame) -> GroundTruth:
    """The ground truth of the images a method was scored on: an annotation file's, plus empty masks
    (at the size scored) for the images it does not list."""
    if not truth.annotated_only:
        return truth
    entries = dict(truth.entries)
    sizes = pairs.drop_duplicates("cxr_id").set_index("cxr_id")[["scored_height", "scored_width"]]
    for cxr_id, (height, width) in sizes.iterrows():
        if cxr_id not in entries:
            entries[cxr_id] = {name: _empty_rle((height, width)) for name in LOCALIZED_CLASSES}
    return GroundTruth(entries, truth.where)


def main(argv: list[str] | None = None) -> int:
    from .human_benchmark import HUMAN_BENCHMARK_IMAGES, percentage_decrease, score_human_benchmark

    parser = argparse.ArgumentParser(prog="python -m shamsul_utils.score",
                                     description="Score heatmaps or segmentations against CheXlocalize's masks.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--heatmaps", type=Path, help="folder of <cxr_id>_<Task>_map.pkl heatmap pickles")
    source.add_argument("--segmentations", type=Path, help="segmentation JSON in CheXlocalize's format")
    source.add_argument("--store", type=Path,
                        help="this project's heatmap cache of one method: runs/<profile>/heatmaps/<method>/<key>")
    parser.add_argument("--gt", type=Path, help="ground-truth segmentation JSON (CheXlocalize)")
    parser.add_argument("--gt-annotations", type=Path,
                        help="ground truth as CheXlocalize's raw annotations (gt_annotations_val.json), instead of --gt")
    parser.add_argument("--output", type=Path, required=True, help="folder for pairs.csv and summary.csv")
    parser.add_argument("--signed", choices=("positive", "absolute", "raw"), default="positive",
                        help="negative evidence before min-max: clip (default), |m|, or as is (CheXlocalize)")
    parser.add_argument("--probability-cutoff", type=float, default=None,
                        help="empty segmentation where the pkl's prob is below this (CheXlocalize's option)")
    parser.add_argument("--thresholds", type=Path, default=None,
                        help="per-class fixed thresholds in place of Otsu, CheXlocalize's tuning_results.csv layout "
                             "(threshold,task), e.g. tuned on validation (runs/<profile>/tables/tuning/)")
    parser.add_argument("--probability-cutoffs", type=Path, default=None,
                        help="per-class probability cutoffs, CheXlocalize's probability_tuning_results.csv layout "
                             "(prob_threshold,mIoU,task: the best per task is applied)")
    parser.add_argument("--geometry", action="store_true",
                        help="also CheXlocalize's pathology features of the ground truth and the regression of IoU "
                             "and hit on them (pathology_features.csv, geometry_regression.csv)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of images (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ci", choices=("percentile", "chexlocalize"), default="percentile",
                        help="interval: percentiles, or CheXlocalize's sorted-sample indices")
    parser.add_argument("--human-benchmark", type=Path,
                        help="human-benchmark segmentation JSON (hb_segmentations_test.json): scored like the method, "
                             "writes human_benchmark.csv and percentage_decrease.csv")
    parser.add_argument("--human-salient-points", type=Path,
                        help="human-benchmark most-representative points (hb_salient_pt_test.json): the human hit rate")
    parser.add_argument("--human-benchmark-images", choices=HUMAN_BENCHMARK_IMAGES, default="exact",
                        help="exact (default): the human benchmark must hold the ground truth's images; ground-truth: "
                             "as CheXlocalize's eval.py, a missing image is an empty segmentation, extra ones are left out")
    arguments = parser.parse_args(argv)
    if arguments.bootstrap < 1:
        parser.error("--bootstrap must be at least 1")
    if (arguments.gt is None) == (arguments.gt_annotations is None):
        print("score: give the ground truth once: --gt <segmentations.json> or --gt-annotations <annotations.json>",
              file=sys.stderr)
        return 2
    if arguments.human_salient_points is not None and arguments.human_benchmark is None:
        print("score: --human-salient-points needs --human-benchmark (the benchmark's segmentations)", file=sys.stderr)
        return 2
    if arguments.store is not None and (arguments.probability_cutoff is not None
                                        or arguments.probability_cutoffs is not None):
        parser.error("--probability-cutoff(s) need probabilities: the store has none (use --heatmaps)")
    if arguments.probability_cutoff is not None and arguments.probability_cutoffs is not None:
        parser.error("give --probability-cutoff (one for every class) or --probability-cutoffs (a file), not both")
    if arguments.segmentations is not None and (arguments.thresholds is not None
                                                or arguments.probability_cutoffs is not None):
        parser.error("--thresholds and --probability-cutoffs apply to heatmaps; --segmentations are already segmented")
    human = None
    try:
        _check_writable(arguments.output)
        truth = read_ground_truth(arguments.gt, annotations=arguments.gt_annotations)
        thresholds = None if arguments.thresholds is None else tuning.read_thresholds(arguments.thresholds)
        cutoffs = (arguments.probability_cutoff if arguments.probability_cutoffs is None
                   else tuning.read_probability_cutoffs(arguments.probability_cutoffs))
        if arguments.heatmaps is not None:
            pairs = score_heatmaps(arguments.heatmaps, truth, signed=arguments.signed, probability_cutoff=cutoffs,
                                   thresholds=thresholds)
        elif arguments.store is not None:
            pairs = score_store(arguments.store, truth, signed=arguments.signed, thresholds=thresholds)
        else:
            pairs = score_segmentations(arguments.segmentations, truth)
        kwargs = {"n_resamples": arguments.bootstrap, "seed": arguments.seed, "interval": arguments.ci}
        summary = summarise(pairs, **kwargs)
        if arguments.geometry:
            from .geometry import scored_geometry

            source = arguments.heatmaps or arguments.store or arguments.segmentations
            features, regression = scored_geometry(pairs, truth.entries, method=Path(source).name,
                                                   n_resamples=arguments.bootstrap, seed=arguments.seed)
        if arguments.human_benchmark is not None:
            human = score_human_benchmark(arguments.human_benchmark, _scored_truth(truth, pairs),
                                          salient_points=arguments.human_salient_points,
                                          images=arguments.human_benchmark_images)
            human_summary = summarise(human, **kwargs)
            human_summary = human_summary[[name for name in human_summary if "tie_aware" not in name]]
            decrease = percentage_decrease(pairs, human, **kwargs)
    except DataError as error:
        print(f"score: {error}", file=sys.stderr)
        return 2
    write_table(pairs, arguments.output / "pairs.csv")
    write_table(summary, arguments.output / "summary.csv")
    if arguments.geometry:
        write_table(features, arguments.output / "pathology_features.csv")
        write_table(regression, arguments.output / "geometry_regression.csv")
    overall = summary.iloc[-1]
    print(f"{len(pairs['cxr_id'].unique())} images: mIoU {overall['miou_true_positive']:.3f} (true-positive slice), "
          f"{overall['miou_full_set']:.3f} (full set); hit rate {overall['hit_rate']:.3f}; "
          f"tables in {arguments.output}")
    if truth.annotated_only:
        unlisted = len(set(pairs["cxr_id"]) - set(truth.entries))
        if unlisted:
            print(f"{unlisted} scored image{'s' * (unlisted != 1)} not in {truth.where}: scored as without findings "
                  "(empty expert masks)")
    if human is not None:
        write_table(human.drop(columns="hit_tie_aware"), arguments.output / "human_benchmark_pairs.csv")
        write_table(human_summary, arguments.output / "human_benchmark.csv")
        write_table(decrease, arguments.output / "percentage_decrease.csv")
        last, change = human_summary.iloc[-1], decrease.iloc[-1]
        below = [f"{change[f'{key}_decrease_pct']:.1f} % in {what}" for key, what in
                 (("miou_true_positive", "mIoU"), ("hit_rate", "hit rate")) if np.isfinite(change[f"{key}_decrease_pct"])]
        print(f"human benchmark: mIoU {last['miou_true_positive']:.3f} (true-positive slice), hit rate "
              f"{last['hit_rate']:.3f}; the method is below it by {', '.join(below) or 'n/a'} (percentage_decrease.csv)")
        for key, what in (("images_without_segmentation", "no human-benchmark segmentation: scored as empty"),
                          ("images_left_out", "a human-benchmark segmentation but no ground truth: left out")):
            if human.attrs.get(key):
                count = len(human.attrs[key])
                print(f"{count} image{'s' * (count != 1)} with {what} (e.g. {human.attrs[key][0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
