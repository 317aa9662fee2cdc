"""Conclusions across training seeds: the same data and recipe, several models.

A ranking of explanation methods measured on one trained model can flip with the model: a
different initialisation, batch order or CPU (whose floating-point kernels change the training
trajectory) gives a different model. The study therefore trains the main model (``seed``) and
the models of ``training.extra_seeds`` on the same data, explains the same explanation set with
each, and reports a conclusion only where it holds for every model.

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

from . import metrics, study, training
from .config import Profile

__all__ = ["seed_profile", "seed_profiles", "train_extra_seeds", "explain_extra_seeds", "explained_rows"]


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
    data = dataclasses.replace(profile.data, root=str(profile.data_root))
    recipe = dataclasses.replace(profile.training, seed=seed, extra_seeds=())
    return dataclasses.replace(profile, name=f"{profile.name}-seed{seed}", data=data, training=recipe,
                               publish_figures=False)


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

METRICS: dict[str, str] = {"miou_all": "mIoU (full set)", "miou_tp": "mIoU (true-positive slice)",
                           "hit_rate": "hit rate", "hit_rate_ties": "tie-aware hit rate"}


def _values(score, metric: str) -> np.ndarray:
    if metric == "miou_all":
        return score.selected_iou("all")
    if metric == "miou_tp":
        return score.selected_iou("true_positive")
    return score.hits if metric == "hit_rate" else score.hits_tie_aware


def score_seeds(profile: Profile, *, signed: str = "positive") -> dict[int, dict[str, tuple[np.ndarray, object]]]:
    """Segment and score every model's cached heatmaps: ``{seed: {method: (rows, Localisation)}}``.

    ``rows`` are the explanation-set rows a method explained under *every* model (all of them for
    Grad-CAM and LRP; ``explain.seed_images`` rows for LIME and SHAP when there are extra seeds), so
    each method is compared across seeds on the same images.
    """
    from .evaluation import score_method
    from .models import load_trained_model

    result = {}
    for variant in seed_profiles(profile):
        model, _ = load_trained_model(variant)
        explanation = study.explanation_set(variant)
        by_method = {}
        for name, method in study.METHODS.items():
            # with extra seeds, every model is scored on the rows the extra seeds explained
            rows = explained_rows(profile, method, len(explanation), main=not profile.training.extra_seeds)
            maps = study.load_heatmaps(variant, model, explanation, method, rows=rows)
            by_method[name] = (rows, score_method(name, explanation.subset(rows), maps, signed=signed))
        result[variant.training_seed] = by_method
    return result


def _stacked(scores: dict, method: str, metric: str, rows: np.ndarray | None = None) -> np.ndarray:
    """``[S, n, 10]`` values of one method and metric under every seed (restricted to ``rows``)."""
    arrays = []
    for by_method in scores.values():
        own_rows, score = by_method[method]
        values = _values(score, metric)
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


def seed_ranking_table(scores: dict, *, metrics_to_rank=("miou_all", "hit_rate", "hit_rate_ties"),
                       n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Paired differences between every two methods, per seed, on the images both explained.

    One row per metric, pair and seed (difference, 95 % paired bootstrap interval over images),
    plus, per metric and pair, ``same_sign_seeds`` (how many seeds agree with the sign of the mean
    difference) and ``holds`` (every seed has the same sign *and* an interval that excludes zero).
    """
    from itertools import combinations

    from . import metrics
    from .evaluation import class_mean

    methods = list(next(iter(scores.values())))
    rows = []
    for metric in metrics_to_rank:
        for first, second in combinations(methods, 2):
            common = np.intersect1d(next(iter(scores.values()))[first][0], next(iter(scores.values()))[second][0])
            a, b = _stacked(scores, first, metric, common), _stacked(scores, second, metric, common)
            for k, training_seed in enumerate(scores):
                result = metrics.paired_bootstrap_difference(a[k], b[k], statistic=class_mean,
                                                             n_resamples=n_resamples, seed=seed)
                rows.append({"metric": metric, "method_a": first, "method_b": second, "seed": training_seed,
                             "images": len(common), "difference": float(result.difference),
                             "low": float(result.low), "high": float(result.high)})
    table = pd.DataFrame(rows)
    table["excludes_zero"] = (table["low"] > 0) | (table["high"] < 0)
    grouped = table.groupby(["metric", "method_a", "method_b"], sort=False)
    table["mean_difference"] = grouped["difference"].transform("mean")
    table["same_sign_seeds"] = grouped["difference"].transform(lambda d: max((d > 0).sum(), (d < 0).sum()))
    one_sign = grouped["difference"].transform(lambda d: bool((d > 0).all() or (d < 0).all()))
    table["holds"] = grouped["excludes_zero"].transform("all").astype(bool) & one_sign.astype(bool)
    return table


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


def seeds_narrative(table: pd.DataFrame, ranking: pd.DataFrame) -> str:
    """Markdown sentences stating only what holds for every seed (written from the tables)."""
    seeds = sorted(ranking["seed"].unique())
    if len(seeds) == 1:
        return ("Only one model was trained (`training.extra_seeds` is empty), so nothing here shows whether "
                "the conclusions survive another training run.")
    overall = table[table["class"] == "all classes"]
    lines = [f"**Across {len(seeds)} training seeds** ({', '.join(map(str, seeds))}; intervals cover the "
             "seeds and the images):", ""]
    for method, group in overall.groupby("method", sort=False):
        parts = []
        for metric in ("miou_all", "hit_rate", "hit_rate_ties"):
            row = group[group["metric"] == metric].iloc[0]
            parts.append(f"{METRICS[metric]} {row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}] "
                         f"(seeds {row['seed_min']:.3f}-{row['seed_max']:.3f})")
        lines.append(f"- {method}: " + "; ".join(parts))
    pairs = ranking.drop_duplicates(["metric", "method_a", "method_b"])
    for metric in ("miou_all", "hit_rate_ties", "hit_rate"):
        subset = pairs[pairs["metric"] == metric]
        holding = subset[subset["holds"]]
        claims = [f"{row['method_a']} > {row['method_b']}" if row["mean_difference"] > 0
                  else f"{row['method_b']} > {row['method_a']}" for _, row in holding.iterrows()]
        unseparated = [f"{row['method_a']} / {row['method_b']}" for _, row in subset[~subset["holds"]].iterrows()]
        text = f"- **{METRICS[metric]}**: " + ("; ".join(claims) + " in every seed, each interval excluding zero"
                                               if claims else "no ordering holds in every seed")
        if unseparated:
            text += f". Not separated (sign or interval changes with the seed): {', '.join(unseparated)}."
        lines += ["", text]
    return "\n".join(lines)
