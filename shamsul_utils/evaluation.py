"""The localisation evaluation of the study: segment every heatmap, score it, summarise with CIs.

For each method the explanation set's maps of the 10 localised classes are turned into
segmentations as CheXlocalize does (:func:`shamsul_utils.segmentation.heatmap_to_mask`) at each
image's original size (the expert masks' size, whatever the size of the image file or the model
input), one image at a time (:mod:`shamsul_utils.scoring`), then scored:

* **IoU** per image and class, summarised two ways: CheXlocalize's default *true-positive slice*
  (only pairs where both the expert mask and the segmentation are non-empty) and the *full set*
  (every pair with an expert mask; an empty segmentation scores 0). Method rankings use the
  full set, because it compares the methods on the same image-class pairs.
* **Hit rate** (pointing game): the map's maximum lies inside the expert mask; undefined when
  the mask is empty. CheXlocalize takes the first maximal pixel in raster order; LIME and SHAP
  maps are piecewise constant (a whole segment is maximal), so the **tie-aware** hit rate (the
  share of maximal pixels inside the mask, the expected hit under a random tie break) is reported
  beside it.
* **Chance level**: the share of the image an expert mask covers is the hit rate of a random
  point, so localisation is also reported as a multiple of it.

All intervals are 95 % percentile intervals of 1000 seeded bootstrap resamples of images.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
import torch

from . import metrics, scoring
from .datasets import describe_sizes
from .labels import LOCALIZED_CLASSES
from .metrics.localisation import IOU_METRICS, LOCALISATION_METRICS
from .models import model_device
from .segmentation import heatmap_to_mask
from .study import ExplanationSet, localised_indices

__all__ = ["Localisation", "score_method", "per_pair_table", "summary_table", "overall_table", "lrp_variants_table",
           "ranking_table", "by_label_count_table", "faithfulness_table", "sanity_table", "class_mean",
           "sanity_analysis", "tune_on_validation", "tuned_settings", "secondary_analyses"]


@dataclass
class Localisation:
    """Scores of one method on the explanation set, all ``[N, 10]`` (localised classes)."""

    method: str
    iou: np.ndarray  # NaN where both masks are empty
    gt_present: np.ndarray
    pred_present: np.ndarray
    hits: np.ndarray  # 1 / 0 / NaN (no expert mask): the map's first maximal pixel (CheXlocalize)
    hits_tie_aware: np.ndarray  # share of the maximal pixels inside the mask / NaN
    maps: np.ndarray  # [N, 10, h, w] the localised classes' heatmaps, as scored
    sizes: list  # (H, W) per image: the original size every score was computed at
    signed: str = "positive"
    probabilities: np.ndarray | None = None  # [N, 10] when a probability cutoff applied
    probability_cutoff: float | np.ndarray | None = None  # one for every class or [10]
    thresholds: np.ndarray | None = None  # [10] fixed thresholds (NaN: Otsu); None: Otsu everywhere

    def selected_iou(self, variant: str) -> np.ndarray:
        return metrics.select_iou(self.iou, self.gt_present, self.pred_present, variant=variant)

    def values(self, metric: str) -> np.ndarray:
        """``[N, 10]`` values of a metric (:data:`~shamsul_utils.metrics.localisation.LOCALISATION_METRICS`
        or ``"miou_union"``), NaN where undefined: the one place a metric name becomes numbers."""
        if metric in IOU_METRICS:
            return self.selected_iou(IOU_METRICS[metric])
        if metric == "hit_rate":
            return self.hits
        if metric == "hit_rate_ties":
            return self.hits_tie_aware
        raise ValueError(f"unknown localisation metric {metric!r}; expected one of "
                         f"{', '.join([*LOCALISATION_METRICS, *IOU_METRICS])}")

    def segmentation(self, row: int, column: int) -> np.ndarray:
        """The scored segmentation of one image and localised class, bool ``(H, W)`` at the image's
        original size (recomputed by the plain route, so that no cohort of masks is kept)."""
        probability = None if self.probabilities is None else self.probabilities[row, column]
        cutoff = self.probability_cutoff
        if cutoff is not None and np.ndim(cutoff):
            cutoff = np.asarray(cutoff)[column]
        threshold = "otsu" if self.thresholds is None or np.isnan(self.thresholds[column]) else self.thresholds[column]
        return heatmap_to_mask(self.maps[row, column], output_size=self.sizes[row], signed=self.signed,
                               probability=probability, probability_cutoff=cutoff, threshold=threshold)


def score_method(method: str, explanation: ExplanationSet, heatmaps: np.ndarray, *, signed: str = "positive",
                 probability_cutoff: float | np.ndarray | None = None,
                 thresholds: np.ndarray | None = None) -> Localisation:
    """Segment and score one method's heatmaps ``[N, 14, h, w]`` against the expert masks, one image
    at a time at its original size (:func:`shamsul_utils.scoring.score_images`).

    ``probability_cutoff`` (one value or one per localised class) empties a segmentation where the
    model's probability is below it; ``thresholds`` ``[10]`` replace Otsu by fixed thresholds on the
    normalised map (NaN: Otsu for that class). Both as CheXlocalize tunes them on validation
    (:func:`tune_on_validation`)."""
    maps = heatmaps[:, localised_indices()]
    probabilities = explanation.probabilities[:, localised_indices()] if probability_cutoff is not None else None
    scores = scoring.score_images(maps, explanation.masks, signed=signed, probabilities=probabilities,
                                  probability_cutoff=probability_cutoff, thresholds=thresholds)
    # a class the model does not predict (NaN probabilities) is not scored: no pair of it counts
    missing = np.isnan(explanation.probabilities[:, localised_indices()]).all(axis=0) if len(explanation) else []
    if np.any(missing):
        for values in (scores.iou, scores.hits, scores.hits_tie_aware):
            values[:, missing] = np.nan
        scores.gt_present[:, missing] = scores.pred_present[:, missing] = False
    return Localisation(method=method, iou=scores.iou, gt_present=scores.gt_present,
                        pred_present=scores.pred_present, hits=scores.hits, hits_tie_aware=scores.hits_tie_aware,
                        maps=maps, sizes=list(explanation.masks.sizes), signed=signed,
                        probabilities=probabilities, probability_cutoff=probability_cutoff,
                        thresholds=None if thresholds is None else np.asarray(thresholds, dtype=float))


def class_mean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over images (``axis``) per class, then over classes: the study's overall mIoU statistic."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.nanmean(values, axis=axis), axis=-1)


def per_pair_table(scores: dict[str, Localisation], explanation: ExplanationSet) -> pd.DataFrame:
    """One row per method, image and localised class with an expert mask (for box plots)."""
    rows = []
    findings = explanation.positive_findings
    area = explanation.masks.area
    heights = np.array([size[0] for size in explanation.masks.sizes], dtype=int)
    widths = np.array([size[1] for size in explanation.masks.sizes], dtype=int)
    probabilities = explanation.probabilities[:, localised_indices()]
    for method, score in scores.items():
        images, classes = np.nonzero(score.gt_present)
        rows.append(pd.DataFrame({
            "method": method, "cxr_id": np.asarray(explanation.cxr_ids)[images],
            "class": np.asarray(LOCALIZED_CLASSES)[classes], "iou": np.nan_to_num(score.iou[images, classes]),
            "segmented": score.pred_present[images, classes], "hit": score.hits[images, classes],
            "hit_tie_aware": score.hits_tie_aware[images, classes],
            "mask_area": area[images, classes], "probability": probabilities[images, classes],
            "positive_findings": findings[images], "scored_height": heights[images],
            "scored_width": widths[images]}))
    return pd.concat(rows, ignore_index=True)


def summary_table(scores: dict[str, Localisation], explanation: ExplanationSet, *, n_resamples: int = 1000,
                  seed: int = 0) -> pd.DataFrame:
    """Per method and class: mIoU (true-positive slice and full set) and hit rate, each with its CI."""
    tables = []
    chance = np.where(explanation.masks.present, explanation.masks.area, np.nan)
    chance_estimate = metrics.bootstrap_ci(chance, n_resamples=1, seed=seed)[0]
    for method, score in scores.items():
        parts = {}
        for label in ("miou_tp", "miou_all"):
            values = score.values(label)
            estimate, low, high = metrics.bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
            parts |= {label: estimate, f"{label}_low": low, f"{label}_high": high,
                      f"n_{label.split('_')[1]}": (~np.isnan(values)).sum(0)}
        estimate, low, high = metrics.bootstrap_ci(score.hits, n_resamples=n_resamples, seed=seed)
        parts |= {"hit_rate": estimate, "hit_rate_low": low, "hit_rate_high": high,
                  "chance_hit_rate": chance_estimate}
        table = pd.DataFrame({"method": method, "class": LOCALIZED_CLASSES, **parts})
        table["hit_rate_over_chance"] = table["hit_rate"] / table["chance_hit_rate"]
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def overall_table(scores: dict[str, Localisation], *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per method: mean over classes of mIoU (both variants) and hit rate, with bootstrap CIs."""
    rows = []
    for method, score in scores.items():
        row = {"method": method, "scored_at": "original size: " + describe_sizes(score.sizes)}
        for label in ("miou_tp", "miou_all", "miou_union", "hit_rate", "hit_rate_ties"):
            values = score.values(label)
            estimate, low, high = metrics.bootstrap_ci(values, statistic=class_mean, n_resamples=n_resamples, seed=seed)
            row |= {label: float(estimate), f"{label}_low": float(low), f"{label}_high": float(high)}
        rows.append(row)
    return pd.DataFrame(rows)


def ranking_table(scores: dict[str, Localisation], *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap differences between every two methods (full-set mIoU and hit rate)."""
    rows = []
    for first, second in combinations(scores, 2):
        for label in ("miou_all", "hit_rate"):
            result = metrics.paired_bootstrap_difference(scores[first].values(label), scores[second].values(label),
                                                         statistic=class_mean, n_resamples=n_resamples, seed=seed)
            rows.append({"metric": label, "method_a": first, "method_b": second,
                         "difference": float(result.difference), "low": float(result.low),
                         "high": float(result.high), "fraction_a_greater": float(result.fraction_a_greater)})
    table = pd.DataFrame(rows)
    table["clear"] = (table["low"] > 0) | (table["high"] < 0)
    return table


def lrp_variants_table(profile, model: torch.nn.Module, explanation: ExplanationSet, *, n_resamples: int = 1000,
                       seed: int = 0) -> pd.DataFrame:
    """:func:`overall_table` for every LRP rule of ``explain.lrp_rules`` (cached maps of notebook 04),
    the evaluation's rule marked, so that the paper's rules are seen beside the one reported."""
    from . import study
    from .explainers.registry import with_rules

    scores = {rule: score_method(f"LRP ({rule})", explanation,
                                 study.load_heatmaps(profile, model, explanation, with_rules().key, rule=rule),
                                 signed=profile.evaluation.signed)
              for rule in profile.explain.lrp_rules}
    table = overall_table(scores, n_resamples=n_resamples, seed=seed).rename(columns={"method": "rule"})
    table.insert(1, "evaluated", table["rule"] == profile.explain.lrp_rule)
    return table


def by_label_count_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean full-set IoU and hit rate by the image's number of positive findings (1, 2, 3+)."""
    grouped = pairs.assign(findings=np.where(pairs["positive_findings"] >= 3, "3+",
                                             pairs["positive_findings"].astype(str)))
    return (grouped.groupby(["method", "findings"], sort=True)
            .agg(pairs=("iou", "size"), mean_iou=("iou", "mean"), hit_rate=("hit", "mean"))
            .reset_index())


def _faithfulness_targets(explanation: ExplanationSet, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` images with a localised positive, each with its most probable positive class."""
    localised = np.asarray(localised_indices())
    positives = explanation.labels[:, localised] == 1
    rows = np.flatnonzero(positives.any(1))[:count]
    scores = np.where(positives[rows], explanation.probabilities[rows][:, localised], -1)
    return rows, localised[scores.argmax(1)]


def faithfulness_table(model: torch.nn.Module, explanation: ExplanationSet, heatmaps: dict[str, np.ndarray], *,
                       images: int = 24, steps: int = 20) -> pd.DataFrame:
    """Deletion and insertion AUC (Petsiuk et al. 2018) per method, image and explained class.

    Each image is explained for its most probable localised positive class; the same image-class
    pairs are used for every method, and a random-order baseline (a map of noise) is added.
    """
    from .labels import CLASSES

    rows, classes = _faithfulness_targets(explanation, images)
    device = model_device(model)

    def predict(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.sigmoid(model(batch.to(device))).cpu()

    generator = np.random.default_rng(0)
    maps_by_method = dict(heatmaps)
    maps_by_method["random order"] = generator.random((len(explanation), len(CLASSES), 8, 8)).astype(np.float32)
    tables = []
    for method, maps in maps_by_method.items():
        selected = maps[rows, classes][:, None]
        results = [metrics.deletion_insertion_auc(predict, explanation.images[row:row + 1], selected[index:index + 1],
                                                  [int(classes[index])], steps=steps)
                   for index, row in enumerate(rows)]
        tables.append(pd.DataFrame({
            "method": method, "cxr_id": np.asarray(explanation.cxr_ids)[rows],
            "class": [CLASSES[index] for index in classes],
            "deletion_auc": [float(result.deletion[0, 0]) for result in results],
            "insertion_auc": [float(result.insertion[0, 0]) for result in results]}))
    return pd.concat(tables, ignore_index=True)


def sanity_table(method: str, trained: np.ndarray, randomised: np.ndarray, explanation: ExplanationSet,
                 rows: np.ndarray) -> pd.DataFrame:
    """Model-parameter randomisation test (Adebayo et al. 2018): Spearman correlation of the maps of
    the trained and the randomised model, for the localised positives of ``rows``.

    A method whose maps barely change when the weights are randomised (correlation near 1) does
    not explain the model.
    """
    localised = localised_indices()
    similarity = metrics.parameter_randomisation_similarity(trained[:, localised], randomised[:, localised],
                                                            absolute=True)
    positives = explanation.labels[rows][:, localised] == 1
    images, classes = np.nonzero(positives)
    return pd.DataFrame({"method": method, "cxr_id": np.asarray(explanation.cxr_ids)[rows][images],
                         "class": np.asarray(LOCALIZED_CLASSES)[classes],
                         "spearman": similarity[images, classes]})


def sanity_analysis(profile, model: torch.nn.Module, randomised: torch.nn.Module, explanation: ExplanationSet,
                    heatmaps: dict[str, np.ndarray], rows: np.ndarray) -> pd.DataFrame:
    """Run :func:`sanity_table` for every method: explain ``rows`` again with the randomised model.

    LIME and SHAP (1000 model calls per image) use the first quarter of ``rows`` (at least 2).
    The randomised model's maps are cached like any other (its weights are part of the key).
    """
    from . import study
    from .explainers.registry import method as registry_method

    tables = []
    for name, method in study.methods(profile).items():
        subset = registry_method(method).sanity_rows(rows)
        random_maps = study.explain_cached(profile, randomised, explanation, method, rows=subset, progress=False)
        tables.append(sanity_table(name, heatmaps[name][subset], random_maps, explanation, subset))
    return pd.concat(tables, ignore_index=True)


# ------------------------------------------------------------------------------ tuned on validation

def tune_on_validation(profile, model: torch.nn.Module, *, signed: str = "raw", progress: bool = False) -> pd.DataFrame:
    """CheXlocalize's two tuned segmentation settings, per method and localised class, from the
    main model's maps of ``evaluation.tuning_images`` validation images.

    * ``threshold``: the fixed threshold on the normalised map that maximises the true-positive
      mIoU over CheXlocalize's grid 0.2-0.8 (its ``tune_heatmap_threshold.py``);
    * ``probability_cutoff``: the probability below which an Otsu segmentation is emptied that
      maximises CheXlocalize's full-data mIoU over 0.0-0.8 (its ``tune_probability_threshold.py``;
      :func:`shamsul_utils.metrics.tuning.tune_probability_cutoffs`).

    The rule is fixed before any test score is computed, and only validation images enter it.
    Deviation: the three models of the study are scored on test with the main model's values (one
    set of validation maps instead of three). A class without validation pairs keeps Otsu and no
    cutoff (NaN). Also written in CheXlocalize's CSV layouts, ``tables/tuning/<method>_thresholds.csv``
    and ``<method>_probability_cutoffs.csv``, which the score CLI reads.

    Returns
    -------
    pandas.DataFrame
        ``method, class, threshold, threshold_miou, probability_cutoff, cutoff_miou, pairs`` (validation
        pairs with an expert mask).
    """
    from . import study
    from .metrics import tuning

    explanation = study.explanation_set(profile, "valid", profile.evaluation.tuning_images)
    present = explanation.masks.present
    probabilities = explanation.probabilities[:, localised_indices()]
    folder = profile.paths.tables / "tuning"
    rows = []
    for name, method in study.METHODS.items():
        maps = study.explain_cached(profile, model, explanation, method, progress=progress)
        thresholds, threshold_miou = tuning.tune_thresholds(maps[:, localised_indices()], explanation.masks,
                                                           signed=signed)
        otsu = score_method(name, explanation, maps, signed=signed)
        union = metrics.select_iou(otsu.iou, otsu.gt_present, otsu.pred_present, variant="union")
        cutoffs, cutoff_miou = tuning.tune_probability_cutoffs(union, otsu.gt_present, probabilities)
        tuning.write_thresholds(folder / f"{method}_thresholds.csv",
                                dict(zip(LOCALIZED_CLASSES, thresholds, strict=True)))
        tuning.write_probability_cutoffs(folder / f"{method}_probability_cutoffs.csv", cutoff_miou)
        for column, class_name in enumerate(LOCALIZED_CLASSES):
            best_threshold = np.nanmax(threshold_miou[:, column]) if np.isfinite(thresholds[column]) else np.nan
            best_cutoff = np.nanmax(cutoff_miou[:, column]) if np.isfinite(cutoffs[column]) else np.nan
            rows.append({"method": name, "class": class_name, "threshold": thresholds[column],
                         "threshold_miou": best_threshold, "probability_cutoff": cutoffs[column],
                         "cutoff_miou": best_cutoff, "pairs": int(present[:, column].sum())})
    table = pd.DataFrame(rows)
    table.attrs["images"] = len(explanation)
    return table


def tuned_settings(table: pd.DataFrame) -> dict[str, dict[str, dict]]:
    """:func:`tune_on_validation`'s table as the ``tuned`` arguments of
    :func:`shamsul_utils.seeds.score_seeds`: ``{"thresholds": {method: {"thresholds": [10]}},
    "probability cutoffs": {method: {"probability_cutoff": [10]}}}`` (a class without a tuned cutoff
    keeps every segmentation: cutoff 0)."""
    result: dict[str, dict[str, dict]] = {"thresholds": {}, "probability cutoffs": {}}
    for method, group in table.groupby("method", sort=False):
        ordered = group.set_index("class").loc[list(LOCALIZED_CLASSES)]
        result["thresholds"][method] = {"thresholds": ordered["threshold"].to_numpy(float)}
        result["probability cutoffs"][method] = {
            "probability_cutoff": np.nan_to_num(ordered["probability_cutoff"].to_numpy(float), nan=0.0)}
    return result


def secondary_analyses(profile, model: torch.nn.Module) -> tuple[dict[str, dict], pd.DataFrame | None, str]:
    """Notebook 07's labelled secondary analyses, declared here before any test score is computed:
    ``{name: keyword arguments of seeds.score_seeds}``, the validation tuning table and one line
    on the tuning. The two tuned analyses are left out (table None, the line says why) when
    ``evaluation.tuning_images`` is 0 or the validation split has no expert masks (the paper
    profile scores CheXlocalize's masked validation images as its test split).

    * maps clipped at zero before min-max;
    * LRP's ``explain.lrp_secondary`` composite in place of the epsilon rule;
    * per-class thresholds tuned on validation in place of Otsu (CheXlocalize);
    * per-class probability cutoffs tuned on validation (CheXlocalize's; a segmentation is emptied
      where the model's probability is below its class's cutoff).
    """
    signed = profile.evaluation.signed
    analyses: dict[str, dict] = {"maps clipped at zero": {"signed": "positive"},
                                 f"LRP {profile.explain.lrp_secondary}": {"signed": signed,
                                                                          "lrp_rule": profile.explain.lrp_secondary}}
    if not profile.evaluation.tuning_images:
        return analyses, None, "thresholds and cutoffs not tuned: evaluation.tuning_images is 0"
    if not profile.data.splits["valid"].segmentations:
        return analyses, None, ("thresholds and cutoffs not tuned: the validation split has no expert masks "
                                "(data.splits.valid.segmentations); tune with CheXlocalize's scripts and score with "
                                "python -m shamsul_utils.score --thresholds/--probability-cutoffs (data/README.md)")
    table = tune_on_validation(profile, model, signed=signed)
    tuned = tuned_settings(table)
    analyses["thresholds tuned on validation"] = {"signed": signed, "tuned": tuned["thresholds"]}
    analyses["probability cutoffs tuned on validation"] = {"signed": signed, "tuned": tuned["probability cutoffs"]}
    images = int(table.attrs.get("images", profile.evaluation.tuning_images))
    return analyses, table, (f"thresholds and probability cutoffs tuned on {images} validation images of the main "
                             f"model (tables/tuning/, CheXlocalize's CSV layouts)")
