"""Medical significance (notebook 08): a measurable proxy on the phantom, a rule for the instances
shown, and a blinded rating sheet for clinicians.

The SHAMSUL paper's second headline is that LIME's segmentations have the highest medical
significance, as judged by clinicians looking at them (Alam et al. 2023, Nordic Machine
Intelligence 3(1):27-47, doi 10.5617/nmi.10471). This module makes that question testable in the
two worlds of the study:

* **phantom**: the generator knows its anatomy exactly, so each segmentation gets an
  **anatomical plausibility**, the share of its pixels inside the region where its finding can occur
  (:mod:`shamsul_utils.anatomy`). It is tested like the localisation claims: every method on the same
  images under every model, a pooled two-level paired bootstrap per pair of methods, Holm over the
  pairs (:func:`shamsul_utils.claims.claims_table`). It is a *proxy*: a plausible segmentation can
  still be clinically useless (a whole lung for a nodule), and it says nothing of how a clinician
  would judge it;
* **real data** (no anatomy masks): a blinded rating sheet (:mod:`shamsul_utils.rating`) that
  notebook 08 writes and reads back.

Deviation from the paper: its instances were chosen by the authors; here they are drawn by a rule
stated before any score is seen (:func:`random_instances`), the same images for every method.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import claims
from .anatomy import PhantomRegions, plausibility, plausible_regions
from .labels import LOCALIZED_CLASSES

__all__ = ["PLAUSIBILITY", "WHOLE_IMAGE", "plausibility_scores", "proxy_tables", "values_table", "random_instances",
           "rating_items", "sheet_and_ratings", "significance_markdown"]

PLAUSIBILITY = "plausibility"
WHOLE_IMAGE = "whole image (reference)"
_DEVICE = LOCALIZED_CLASSES.index("Support Devices")


def plausibility_scores(profile, scores: dict) -> dict[tuple[str, str], np.ndarray]:
    """Anatomical plausibility of every scored segmentation, ``{(method, "plausibility"): [S, N, 10]}``.

    Parameters
    ----------
    profile : Profile
        A phantom profile (its test split's manifest gives the anatomy; :class:`~shamsul_utils.anatomy.PhantomRegions`).
    scores : dict
        :func:`shamsul_utils.seeds.score_seeds`' result, ``{seed: {method: (rows, Localisation)}}``:
        the segmentations are the scored ones (the primary protocol's when scored so).

    Returns
    -------
    dict
        Per method ``[S, N, 10]``: the share of the segmentation inside the class's plausible region
        where the expert mask is non-empty (the pairs the hit rate scores), NaN elsewhere and for an
        empty segmentation. Also ``(WHOLE_IMAGE, "plausibility")``: what a segmentation covering the
        whole image gets (the region's share of the image), the level no map needs to beat.
    """
    from . import study

    anatomy = PhantomRegions(profile)
    explanation = study.explanation_set(profile)
    regions_of: dict[str, np.ndarray] = {}

    def regions(row: int) -> np.ndarray:
        cxr_id = explanation.cxr_ids[row]
        if cxr_id not in regions_of:
            device = explanation.masks[row][_DEVICE]
            regions_of[cxr_id] = plausible_regions(anatomy.regions("test", cxr_id), device, LOCALIZED_CLASSES)
        return regions_of[cxr_id]

    result: dict[tuple[str, str], list[np.ndarray]] = {}
    for by_method in scores.values():
        for method, (rows, score) in by_method.items():
            values = np.full(score.gt_present.shape, np.nan)
            for position, column in zip(*np.nonzero(score.gt_present), strict=True):
                segmentation = score.segmentation(position, column)
                values[position, column] = plausibility(segmentation, regions(int(rows[position]))[column])
            result.setdefault((method, PLAUSIBILITY), []).append(values)
        if (WHOLE_IMAGE, PLAUSIBILITY) not in result:
            rows, score = next(iter(by_method.values()))
            whole = np.full(score.gt_present.shape, np.nan)
            for position, column in zip(*np.nonzero(score.gt_present), strict=True):
                whole[position, column] = regions(int(rows[position]))[column].mean()
            result[(WHOLE_IMAGE, PLAUSIBILITY)] = [whole]
    count = len(scores)
    return {key: np.stack(values * (count if key[0] == WHOLE_IMAGE else 1)) for key, values in result.items()}


def proxy_tables(profile, scores: dict, *, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[dict, pd.DataFrame | None, pd.DataFrame | None, str]:
    """Notebook 08's proxy analysis: ``(plausibility, values, comparisons, note)``.

    On the phantom: :func:`plausibility_scores`, the values table of plausibility and mIoU (full set)
    (:func:`values_table`) and the tested comparisons (:func:`shamsul_utils.claims.claims_table`,
    one family over the method pairs). On real data there are no anatomy masks: empty results, and
    ``note`` says that the rating sheet is the route there."""
    from . import seeds

    if profile.data.source != "phantom":
        return {}, None, None, ("anatomical plausibility needs the phantom's anatomy; on real data medical "
                                "significance is rated by clinicians on the blinded sheet below")
    plausibility = plausibility_scores(profile, scores)
    values = values_table(plausibility | seeds.family_scores(scores, ("miou_all",)), n_resamples=n_resamples,
                          seed=seed)
    tested = {key: value for key, value in plausibility.items() if key[0] != WHOLE_IMAGE}
    comparisons = claims.claims_table(tested, metrics=(PLAUSIBILITY,), n_resamples=n_resamples, seed=seed,
                                      family="anatomical plausibility")
    images = next(iter(plausibility.values())).shape[1]
    return plausibility, values, comparisons, f"{len(scores)} models x {images} images"


def values_table(values: dict[tuple[str, str], np.ndarray], *, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per method and metric: the mean over the models of the class mean (a fixed class set), with the
    pooled two-level 95 % interval (:func:`shamsul_utils.claims.pooled_mean`)."""
    rows = []
    for (method, metric), array in values.items():
        row = {"method": method, "metric": metric}
        try:
            estimate = claims.pooled_mean(array, n_resamples=n_resamples, seed=seed)
        except claims.UntestableError:  # no class with two pairs under every model: no value, said so
            rows.append(row | {"mean": np.nan, "low": np.nan, "high": np.nan, "models": array.shape[0],
                               "images": array.shape[1], "classes": 0})
            continue
        rows.append(row | {"mean": estimate.difference, "low": estimate.low, "high": estimate.high,
                           "models": estimate.models, "images": estimate.images, "classes": estimate.classes})
    return pd.DataFrame(rows)


def random_instances(explanation, class_name: str, count: int, seed: int) -> list[tuple[int, str]]:
    """Up to ``count`` images with the finding, drawn by a rule fixed before any score is seen.

    The candidates are the explanation set's images whose expert mask of ``class_name`` is
    non-empty. One single-label image first (when there is one), the rest drawn at random among the
    remaining candidates, all with ``numpy.random.default_rng([seed, class index])``; the same images
    for every method. Returns ``[(row, kind)]`` with kind ``"single-label"`` or ``"multi-label"``.
    """
    column = LOCALIZED_CLASSES.index(class_name)
    candidates = np.flatnonzero(explanation.masks.present[:, column])
    if not len(candidates):
        return []
    rng = np.random.default_rng([seed, column])
    single = candidates[explanation.positive_findings[candidates] == 1]
    chosen = [int(rng.choice(single))] if len(single) else []
    rest = np.setdiff1d(candidates, chosen)
    chosen += [int(row) for row in rng.permutation(rest)[: max(0, count - len(chosen))]]
    return [(row, "single-label" if explanation.positive_findings[row] == 1 else "multi-label") for row in chosen]


def rating_items(explanation, scores: dict, *, per_class: int, seed: int, model: str = "main") -> list:
    """The blinded sheet's items: for every localised class, :func:`random_instances` (``per_class``)
    under every method, with the scored segmentation, the radiograph at its original size and the
    expert mask (kept in the key's IoU, never shown)."""
    from .datasets import load_image, resize_nearest
    from .rating import RatingItem

    items = []
    for class_name in LOCALIZED_CLASSES:
        column = LOCALIZED_CLASSES.index(class_name)
        for row, _ in random_instances(explanation, class_name, per_class, seed):
            expert = explanation.masks[row][column]
            image = load_image(explanation.table["image_path"][row])
            if image.shape != expert.shape:  # a downsampled JPEG (CheXpert-small): shown at the masks' size
                image = resize_nearest(image, expert.shape)
            for method, score in scores.items():
                items.append(RatingItem(cxr_id=explanation.cxr_ids[row], class_name=class_name, method=method,
                                        model=model, image=image, segmentation=score.segmentation(row, column),
                                        expert_mask=expert))
    return items


def sheet_and_ratings(folder, items: list, *, seed: int, n_resamples: int = 1000):
    """Write the blinded sheet of ``items`` into ``folder`` unless one with ratings is there (it is kept
    and read), then read the ratings back: ``(ratings, summary)``; ``summary`` is None while nothing
    is rated. :mod:`shamsul_utils.rating` does the work and checks every input."""
    from pathlib import Path

    from . import rating

    folder = Path(folder)
    sheet = folder / rating.SHEET_FILE
    if not sheet.is_file() or not rating.filled_rows(sheet):  # an untouched sheet is rewritten, a filled one kept
        rating.write_rating_sheet(folder, items, seed=seed, overwrite=True)
    ratings = rating.read_ratings(folder)
    summary = rating.rating_summary(ratings, n_resamples=n_resamples, seed=seed) if len(ratings) else None
    return ratings, summary


def significance_markdown(values: pd.DataFrame | None, table: pd.DataFrame | None,
                          ratings_summary: pd.DataFrame | None, *, images: int, models: int, note: str = "") -> str:
    """Notebook 08's conclusion, generated from its tables (and quoted by README); without the proxy's
    tables (real data) the note and the ratings only."""
    if values is None or table is None:
        return "\n".join([f"**Medical significance**: {note}.", "", _ratings_line(ratings_summary)]) + "\n"
    lines = [f"**Medical significance, by a proxy** (anatomical plausibility: the share of a segmentation inside "
             f"the region where its finding can occur; {models} models x {images} images, primary protocol; "
             "mean over the localised classes and the models, 95 % interval over models and images):", ""]
    wide = values.pivot(index="method", columns="metric", values=["mean", "low", "high"])
    order = list(dict.fromkeys(values["method"]))
    header = "| method | " + " | ".join(claims.METRIC_NAMES.get(metric, metric)
                                       for metric in dict.fromkeys(values["metric"])) + " |"
    lines += [header, "|---" * (1 + values["metric"].nunique()) + "|"]
    for method in order:
        cells = []
        for metric in dict.fromkeys(values["metric"]):
            mean = wide.loc[method, ("mean", metric)]
            cells.append("-" if np.isnan(mean) else
                         f"{mean:.3f} [{wide.loc[method, ('low', metric)]:.3f}, {wide.loc[method, ('high', metric)]:.3f}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Pairwise (pooled two-level paired bootstrap, Holm over the method pairs): "
              + claims.claims_markdown(table), ""]
    verdict = claims.best_verdict(table, claims.PAPER_MEDICAL_BEST)
    lines.append(f"**The paper's claim** \"{claims.PAPER_MEDICAL_BEST}'s segmentations have the highest medical "
                 f"significance\" (judged by clinicians there): on this proxy, {verdict}. A proxy, not a "
                 "clinician's judgement: a segmentation can lie where its finding can occur and still be too "
                 "diffuse to help.")
    lines += ["", _ratings_line(ratings_summary)]
    return "\n".join(lines) + "\n"


def _ratings_line(ratings_summary: pd.DataFrame | None) -> str:
    if ratings_summary is None or ratings_summary.empty:
        return ("Blinded ratings: none yet (notebook 08 writes the sheet; a filled sheet is read back and summarised "
                "here).")
    parts = [f"{row['method']} {row['mean_rating']:.2f} [{row['mean_low']:.2f}, {row['mean_high']:.2f}] "
             f"({int(row['items'])} items)" for _, row in ratings_summary.iterrows()]
    return "Blinded ratings (1-5, mean with 95 % interval over images): " + "; ".join(parts) + "."
