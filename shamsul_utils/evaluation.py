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
from .models import model_device
from .segmentation import heatmap_to_mask
from .study import ExplanationSet, localised_indices

__all__ = ["Localisation", "score_method", "per_pair_table", "summary_table", "overall_table", "lrp_variants_table",
           "ranking_table", "by_label_count_table", "faithfulness_table", "sanity_table", "class_mean",
           "sanity_analysis", "significance_instances", "shared_instance"]


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
    probability_cutoff: float | None = None

    def selected_iou(self, variant: str) -> np.ndarray:
        return metrics.select_iou(self.iou, self.gt_present, self.pred_present, variant=variant)

    def segmentation(self, row: int, column: int) -> np.ndarray:
        """The scored segmentation of one image and localised class, bool ``(H, W)`` at the image's
        original size (recomputed by the plain route, so that no cohort of masks is kept)."""
        probability = None if self.probabilities is None else self.probabilities[row, column]
        return heatmap_to_mask(self.maps[row, column], output_size=self.sizes[row], signed=self.signed,
                               probability=probability, probability_cutoff=self.probability_cutoff)


def score_method(method: str, explanation: ExplanationSet, heatmaps: np.ndarray, *, signed: str = "positive",
                 probability_cutoff: float | None = None) -> Localisation:
    """Segment and score one method's heatmaps ``[N, 14, h, w]`` against the expert masks, one image
    at a time at its original size (:func:`shamsul_utils.scoring.score_images`)."""
    maps = heatmaps[:, localised_indices()]
    probabilities = explanation.probabilities[:, localised_indices()] if probability_cutoff is not None else None
    scores = scoring.score_images(maps, explanation.masks, signed=signed, probabilities=probabilities,
                                  probability_cutoff=probability_cutoff)
    # a class the model does not predict (NaN probabilities) is not scored: no pair of it counts
    missing = np.isnan(explanation.probabilities[:, localised_indices()]).all(axis=0) if len(explanation) else []
    if np.any(missing):
        for values in (scores.iou, scores.hits, scores.hits_tie_aware):
            values[:, missing] = np.nan
        scores.gt_present[:, missing] = scores.pred_present[:, missing] = False
    return Localisation(method=method, iou=scores.iou, gt_present=scores.gt_present,
                        pred_present=scores.pred_present, hits=scores.hits, hits_tie_aware=scores.hits_tie_aware,
                        maps=maps, sizes=list(explanation.masks.sizes), signed=signed,
                        probabilities=probabilities, probability_cutoff=probability_cutoff)


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
        for variant, label in (("true_positive", "miou_tp"), ("all", "miou_all")):
            values = score.selected_iou(variant)
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
        for label, values in (("miou_tp", score.selected_iou("true_positive")),
                              ("miou_all", score.selected_iou("all")), ("miou_union", score.selected_iou("union")),
                              ("hit_rate", score.hits),
                              ("hit_rate_ties", score.hits_tie_aware)):
            estimate, low, high = metrics.bootstrap_ci(values, statistic=class_mean, n_resamples=n_resamples, seed=seed)
            row |= {label: float(estimate), f"{label}_low": float(low), f"{label}_high": float(high)}
        rows.append(row)
    return pd.DataFrame(rows)


def ranking_table(scores: dict[str, Localisation], *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap differences between every two methods (full-set mIoU and hit rate)."""
    rows = []
    for first, second in combinations(scores, 2):
        for label, getter in (("miou_all", lambda score: score.selected_iou("all")),
                              ("hit_rate", lambda score: score.hits)):
            result = metrics.paired_bootstrap_difference(getter(scores[first]), getter(scores[second]),
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


def significance_instances(scores: dict[str, Localisation], explanation: ExplanationSet,
                           class_name: str) -> dict[str, list[tuple[int, str]]]:
    """Per method: the best-IoU, the highest-probability and a multi-label instance of a class.

    Only images whose expert mask of the class is non-empty are candidates. The multi-label
    instance is the multi-label candidate with the median IoU (a typical case, not the best).
    """
    from .labels import CLASSES

    column = LOCALIZED_CLASSES.index(class_name)
    probability = explanation.probabilities[:, CLASSES.index(class_name)]
    result = {}
    for method, score in scores.items():
        candidates = np.flatnonzero(score.gt_present[:, column])
        if not len(candidates):
            result[method] = []
            continue
        values = np.nan_to_num(score.iou[candidates, column])
        chosen = [(int(candidates[values.argmax()]), "best IoU"),
                  (int(candidates[probability[candidates].argmax()]), "highest probability")]
        multi = candidates[explanation.positive_findings[candidates] > 1]
        if len(multi):
            multi_values = np.nan_to_num(score.iou[multi, column])
            chosen.append((int(multi[np.argsort(multi_values)[len(multi) // 2]]), "multi-label"))
        result[method] = chosen
    return result


def shared_instance(scores: dict[str, Localisation], explanation: ExplanationSet, class_name: str) -> int | None:
    """One image for the all-methods grid: the most probable multi-label positive of the class
    (a single-label one when there is none)."""
    from .labels import CLASSES

    column = LOCALIZED_CLASSES.index(class_name)
    present = next(iter(scores.values())).gt_present[:, column]
    probability = np.where(present, explanation.probabilities[:, CLASSES.index(class_name)], -1)
    multi = np.where(explanation.positive_findings > 1, probability, -1)
    best = multi if multi.max() >= 0 else probability
    return int(best.argmax()) if best.max() >= 0 else None
