"""Conclusions across training seeds: the same data and recipe, several models.

A ranking of explanation methods measured on one trained model can flip with the model: a
different initialisation, batch order or CPU (whose floating-point kernels change the training
trajectory) gives a different model. The study therefore trains the main model (``seed``) and
the models of ``training.extra_seeds`` on the same data, explains the same explanation set with
each, and tests every declared comparison once over all of them (models and images resampled
together, :mod:`shamsul_utils.claims`).

Each extra model is a *seed profile* (:func:`seed_profile`): the base profile with another
``training.seed``, its own run folder ``runs/<profile>-seed<k>/`` (checkpoints, predictions,
heatmaps) and the base profile's data. Its explanation set is the base profile's (it is selected
with the profile's ``seed``, not the training seed).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

from . import claims, metrics, study, training
from .config import Profile
from .metrics.localisation import LOCALISATION_METRICS

__all__ = ["seed_profile", "model_profile", "seed_profiles", "train_extra_seeds", "explain_extra_seeds", "explained_rows",
           "score_seeds", "score_models", "common_rows", "family_scores", "seed_probabilities", "across_seeds_table", "seed_ranking_per_seed",
           "METRICS"]


def seed_profile(profile: Profile, seed: int) -> Profile:
    """The profile of the model trained with ``seed`` (the profile itself for its own seed).

    Examples
    --------
    >>> from shamsul_utils.config import load_profile
    >>> base = load_profile("smoke")
    >>> variant = seed_profile(base, 7)
    >>> variant.name, variant.training_seed, variant.seed, variant.data_root == base.data_root
    ('smoke-seed7', 7, 0, True)
    """
    if seed == profile.training_seed:
        return profile
    return model_profile(profile, seed, f"{profile.name}-seed{seed}")


def model_profile(profile: Profile, seed: int, name: str) -> Profile:
    """``profile``'s recipe trained with ``seed``, in its own run folder ``name`` on ``profile``'s data
    (never published): the one way an extra or held-out model's profile is made."""
    data = dataclasses.replace(profile.data, root=str(profile.data_root))
    recipe = dataclasses.replace(profile.training, seed=seed, extra_seeds=())
    return dataclasses.replace(profile, name=name, data=data, training=recipe, publish_figures=False)


def seed_profiles(profile: Profile) -> list[Profile]:
    """The main profile followed by one profile per ``training.extra_seeds``."""
    return [profile] + [seed_profile(profile, seed) for seed in profile.training.extra_seeds]


def _train_single_threaded(variant: Profile) -> None:
    """Train one extra seed's model with one thread (run in a worker process)."""
    import torch

    torch.set_num_threads(1)
    training.train(variant, progress=False)


def train_extra_seeds(profile: Profile, *, workers: int | None = None) -> pd.DataFrame:
    """Train (or reuse) the model of every extra seed and write its test predictions.

    The extra seeds' models train in worker processes with one thread each, ``workers`` at a
    time (default: one per CPU core, at most one per seed): on a small model, two single-threaded
    trainings on two cores finish sooner than two two-threaded ones in turn. Training the main
    model beside them as well (three processes on two cores) was slower than the main model first
    with every core and then the extra seeds (measured in ``benchmarks/README.md``). They always train
    single-threaded, whatever ``workers`` is, so their weights do not depend on the number of
    cores (the thread count changes float rounding). The main model must already be trained
    (notebook 02 trains it in the notebook's process).

    Returns one row per model (the main model first): its seed, selected epoch and test mean
    AUROC (no timings: the table is a result, byte-identical between runs; each model's
    ``history.csv`` has its epoch times).
    """
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from .datasets import read_split
    from .labels import CLASSES
    from .models import load_trained_model

    variants = seed_profiles(profile)
    extra = variants[1:]
    workers = max(1, min(len(extra), os.cpu_count() or 1)) if workers is None else workers
    if extra:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_train_single_threaded, extra))
    test = read_split(profile, "test")
    rows = []
    for variant in variants:
        model, checkpoint = load_trained_model(variant)
        predictions = training.predict_split(variant, model, test)
        epoch = checkpoint.get("epoch")  # None: a given checkpoint (model.checkpoint), not trained here
        rows.append({"seed": variant.training_seed, "selected epoch": None if epoch is None else int(epoch),
                     "test mean AUROC": metrics.mean_auroc(test.labels, predictions[list(CLASSES)].to_numpy())})
    return pd.DataFrame(rows)


def explained_rows(profile: Profile, method: str, n_images: int, *, main: bool) -> np.ndarray:
    """Rows of the explanation set a method explains for a model: all of them, except LIME and SHAP
    on the extra seeds (``explain.seed_images`` evenly spaced rows, so every class is represented)."""
    count = profile.explain.seed_images
    if main or study.is_cheap(method) or count == 0 or count >= n_images:
        return np.arange(n_images)
    return np.unique(np.linspace(0, n_images - 1, count).round().astype(int))


def explain_extra_seeds(profile: Profile, method: str, *, rule: str | None = None) -> dict[int, int]:
    """Explain the explanation set with every extra seed's model (cached); ``{seed: images explained}``."""
    from .models import load_trained_model

    done = {}
    for variant in seed_profiles(profile)[1:]:
        model, _ = load_trained_model(variant)
        explanation = study.explanation_set(variant)
        rows = explained_rows(profile, method, len(explanation), main=False)
        study.explain_cached(variant, model, explanation, method, rule=rule, rows=rows, progress=False)
        done[variant.training_seed] = len(rows)
    return done


# ------------------------------------------------------------------------- scores across seeds

METRICS: dict[str, str] = LOCALISATION_METRICS  # the one spelling, metrics.localisation.LOCALISATION_METRICS


def score_seeds(profile: Profile, *, signed: str = "raw", lrp_rule: str | None = None,
                probability_cutoff: float | None = None,
                tuned: dict[str, dict] | None = None) -> dict[int, dict[str, tuple[np.ndarray, object]]]:
    """Segment and score every model's cached heatmaps: ``{seed: {method: (rows, Localisation)}}``.

    ``rows`` are the explanation-set rows a method explained under *every* model (all of them,
    unless ``explain.seed_images`` limits LIME and SHAP under the extra seeds), so each method is
    compared across seeds on the same images. ``signed`` and ``lrp_rule`` (default: the profile's
    ``explain.lrp_rule``) choose the analysis: the primary one is the paper's (``"raw"``, epsilon).
    ``probability_cutoff`` empties the segmentation where the model's probability is below it
    (CheXlocalize's probability threshold; the pointing game does not depend on it). ``tuned``
    gives per method the settings tuned on validation, ``{method: {"thresholds": [10]}}`` or
    ``{method: {"probability_cutoff": [10]}}`` (:func:`shamsul_utils.evaluation.tuned_settings`).
    """
    return score_models(profile, seed_profiles(profile), signed=signed, lrp_rule=lrp_rule,
                        probability_cutoff=probability_cutoff, tuned=tuned)


def score_models(profile: Profile, variants: list[Profile], *, signed: str = "raw", lrp_rule: str | None = None,
                 probability_cutoff: float | None = None,
                 tuned: dict[str, dict] | None = None) -> dict[int, dict[str, tuple[np.ndarray, object]]]:
    """:func:`score_seeds` for the given model profiles (``variants``, e.g. held-out seeds' models,
    :mod:`shamsul_utils.replicate`), each explained on ``profile``'s explanation set."""
    from .evaluation import score_method
    from .models import load_trained_model

    result = {}
    for variant in variants:
        model, _ = load_trained_model(variant)
        explanation = study.explanation_set(variant)
        by_method = {}
        for name, method in study.METHODS.items():
            # with extra seeds, every model is scored on the rows the extra seeds explained
            rows = explained_rows(profile, method, len(explanation), main=not profile.training.extra_seeds)
            # the rule applies to the method that has rules (Method.options ignores it for the others)
            maps = study.load_heatmaps(variant, model, explanation, method, rows=rows, rule=lrp_rule)
            settings = {"probability_cutoff": probability_cutoff} | (tuned or {}).get(name, {})
            by_method[name] = (rows, score_method(name, explanation.subset(rows), maps, signed=signed, **settings))
        result[variant.training_seed] = by_method
    return result


def _stacked(scores: dict, method: str, metric: str, rows: np.ndarray | None = None) -> np.ndarray:
    """``[S, n, 10]`` values of one method and metric under every seed (restricted to ``rows``)."""
    arrays = []
    for by_method in scores.values():
        own_rows, score = by_method[method]
        values = score.values(metric)
        if rows is not None:
            values = values[np.searchsorted(own_rows, rows)]
        arrays.append(values)
    return np.stack(arrays)


def across_seeds_table(scores: dict, *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per method, metric and class (and ``"all classes"``): the mean over seeds, the spread between
    seeds (standard deviation, min, max), each seed's value, and a 95 % interval from the two-level
    (seed, image) bootstrap of :func:`shamsul_utils.metrics.seed_bootstrap_ci`."""
    from . import metrics
    from .evaluation import class_mean
    from .labels import LOCALIZED_CLASSES

    seeds = list(scores)
    rows = []
    for method in next(iter(scores.values())):
        for metric in METRICS:
            values = _stacked(scores, method, metric)
            for statistic, classes in ((class_mean, ["all classes"]), (np.nanmean, list(LOCALIZED_CLASSES))):
                estimate, low, high = metrics.seed_bootstrap_ci(values, statistic=statistic,
                                                                n_resamples=n_resamples, seed=seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a class without pairs: NaN
                    per_seed = np.array([statistic(values[k], axis=0) for k in range(len(seeds))]).reshape(
                        len(seeds), -1)
                for index, name in enumerate(classes):
                    column = per_seed[:, index]
                    rows.append({"method": method, "metric": metric, "class": name, "images": values.shape[1],
                                 "mean": float(np.atleast_1d(estimate)[index]),
                                 "low": float(np.atleast_1d(low)[index]), "high": float(np.atleast_1d(high)[index]),
                                 "between_seed_sd": float(np.nanstd(column, ddof=1)) if len(seeds) > 1 else 0.0,
                                 "seed_min": float(np.nanmin(column)), "seed_max": float(np.nanmax(column)),
                                 **{f"seed {k}": float(column[i]) for i, k in enumerate(seeds)}})
    return pd.DataFrame(rows)


def seed_probabilities(profile: Profile) -> np.ndarray:
    """``[S, N, 10]``: every model's predicted probability of each localised class on the explanation set."""
    return np.stack([study.explanation_set(variant).probabilities[:, study.localised_indices()]
                     for variant in seed_profiles(profile)])


def common_rows(scores: dict) -> np.ndarray:
    """The explanation-set rows every method explained under every model."""
    first = next(iter(scores.values()))
    common = None
    for name in first:
        rows = first[name][0]
        common = rows if common is None else np.intersect1d(common, rows)
    return common


def family_scores(scores: dict, metrics_in_family=claims.FAMILY_METRICS) -> dict[tuple[str, str], np.ndarray]:
    """``{(method, metric): values [S, N, 10]}`` of every method and metric under every model, on the
    images every method explained under every model (:func:`common_rows`): what
    :func:`shamsul_utils.claims.claims_table` tests."""
    common = common_rows(scores)
    return {(name, metric): _stacked(scores, name, metric, common)
            for name in next(iter(scores.values())) for metric in metrics_in_family}


def seed_ranking_per_seed(table: pd.DataFrame) -> pd.DataFrame:
    """The order of the methods under each seed and metric (by the per-seed overall value)."""
    overall = table[table["class"] == "all classes"]
    seed_columns = [column for column in overall if column.startswith("seed ")]
    rows = []
    for metric, group in overall.groupby("metric", sort=False):
        for column in seed_columns:
            order = group.sort_values(column, ascending=False)["method"].tolist()
            rows.append({"metric": metric, "seed": int(column.split()[1]), "ranking": " > ".join(order)})
    return pd.DataFrame(rows)
