"""Claims that are test results: one paired test per comparison, corrected for multiplicity, generated.

A claim such as "LRP localises better than Grad-CAM by mIoU" is stated only when its test says so:

* the **family** of comparisons is declared before any score exists: every pair of the study's
  methods under each of :data:`FAMILY_METRICS` (6 pairs x 3 metrics = 18 tests for four methods);
* each comparison is one **pooled two-level paired bootstrap** (:func:`pooled_paired_bootstrap`):
  the models (training seeds) are resampled and, independently of them, the images; the images are
  *crossed* with the models (every model explains the same images), so one image resample serves
  every drawn model (the "pigeonhole" bootstrap of crossed data, Owen 2007); the statistic is the
  mean over models of the mean over a **fixed class set** of the per-class mean paired difference;
* the p-values are **Holm-corrected** over the family (:func:`holm`); a claim holds where the
  corrected p is below 0.05;
* the claims table and its sentences (:func:`claims_table`, :func:`claims_markdown`) are written by
  notebook 07 from these results, and README quotes them; nothing states a ranking by hand.

The power of each comparison is printed beside it: the minimum detectable difference
(:func:`minimum_detectable_difference`) at the family's strictest level and 80 % power, from the
observed spread of the bootstrap.

References
----------
Efron, B. & Tibshirani, R. (1993). An Introduction to the Bootstrap, ch. 16 (hypothesis tests).
Davison, A. C. & Hinkley, D. V. (1997). Bootstrap Methods and their Application, 3.8 (hierarchical data).
Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scand. J. Statistics 6, 65-70.
Owen, A. B. (2007). The pigeonhole bootstrap. Annals of Applied Statistics 1(2), 386-411.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from .metrics.localisation import LOCALISATION_METRICS

__all__ = ["FAMILY_METRICS", "METRIC_NAMES", "ALPHA", "PairedTest", "UntestableError", "pooled_paired_bootstrap",
           "pooled_mean", "pooled_group_difference", "holm", "best_verdict", "minimum_detectable_difference", "claims_table", "claims_markdown",
           "group_table", "paper_comparison", "values_markdown", "report_markdown", "publish",
           "readme_block"]

# Declared before the scores: the metrics the claims are tested on, and the family's level.
FAMILY_METRICS: tuple[str, ...] = ("miou_all", "hit_rate", "hit_rate_ties")
METRIC_NAMES: dict[str, str] = {**LOCALISATION_METRICS,
                                "plausibility": "anatomical plausibility"}  # notebook 08's proxy
ALPHA = 0.05
POWER = 0.8


class PairedTest:
    """One comparison's result (see :func:`pooled_paired_bootstrap`)."""

    __slots__ = ("difference", "low", "high", "p_value", "standard_error", "models", "images", "classes")

    def __init__(self, difference, low, high, p_value, standard_error, models, images, classes):
        self.difference, self.low, self.high, self.p_value = difference, low, high, p_value
        self.standard_error, self.models, self.images, self.classes = standard_error, models, images, classes

    def __repr__(self) -> str:
        return (f"PairedTest(difference={self.difference:.4f}, interval=[{self.low:.4f}, {self.high:.4f}], "
                f"p={self.p_value:.4f}, models={self.models}, images={self.images}, classes={self.classes})")


def _class_means(differences: np.ndarray, indices: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per resample the mean over ``classes`` of the per-class mean difference of the drawn images
    ``indices`` ``[R, N]``, and whether every class had a defined pair ``[R]``."""
    drawn = differences[indices][:, :, classes]  # [R, N, K]
    defined = ~np.isnan(drawn)
    counts = defined.sum(axis=1)
    sums = np.where(defined, drawn, 0.0).sum(axis=1)
    valid = (counts > 0).all(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / np.maximum(counts, 1)).mean(axis=1), valid


class UntestableError(ValueError):
    """Too few pairs for a comparison's fixed class set (a class needs pairs in every resample)."""


def _two_level(per_model_statistic, models: int, images: int, n_resamples: int, seed: int) -> np.ndarray:
    """The pooled two-level bootstrap distribution ``[R]`` for crossed data: each resample draws
    ``models`` models with replacement and, independently, one set of ``images`` images with
    replacement that every drawn model shares (they explained the same images). Resampling the
    images independently per model would average the images' own effect, which every model shares,
    over the models, and understate the variance by up to a factor ``models`` (a simulation with a
    shared image effect rejected a true null 32 % of the time at 5 %). ``per_model_statistic(k,
    indices [r, N]) -> (values [r], valid [r])``; an image resample that leaves a class of the fixed
    set without the pairs it needs under some model is drawn again (conditioning on the class set,
    so that every mean covers the same classes)."""
    rng = np.random.default_rng([seed, models, images])
    drawn = rng.integers(0, models, size=(n_resamples, models))
    values = np.empty((models, n_resamples))
    todo = np.arange(n_resamples)
    for _ in range(1000):
        indices = rng.integers(0, images, size=(len(todo), images))
        results = [per_model_statistic(k, indices) for k in range(models)]
        valid = np.logical_and.reduce([ok for _, ok in results])
        for k, (value, _) in enumerate(results):
            values[k, todo[valid]] = value[valid]
        todo = todo[~valid]
        if not len(todo):
            return values[drawn, np.arange(n_resamples)[:, None]].mean(axis=1)
    raise UntestableError("a class of the fixed set is too rare to resample (its pairs are missing from nearly "
                          "every resample)")


def _test_result(estimate: float, samples: np.ndarray, confidence: float, models: int, images: int,
                 classes: int) -> PairedTest:
    alpha = 1 - confidence
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    count = len(samples)
    below = (np.count_nonzero(samples <= 0) + 1) / (count + 1)
    above = (np.count_nonzero(samples >= 0) + 1) / (count + 1)
    return PairedTest(float(estimate), float(low), float(high), float(min(1.0, 2 * min(below, above))),
                      float(samples.std(ddof=1)), models, images, classes)


def pooled_paired_bootstrap(a, b, *, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95,
                            min_pairs: int = 2) -> PairedTest:
    """Pooled two-level paired bootstrap of ``statistic(a) - statistic(b)`` over models and images.

    Parameters
    ----------
    a, b : array-like, shape (S, N, C)
        Per-image, per-class scores of two methods on the same N images under S models (training
        seeds), NaN where a score is undefined; a pair counts where both are defined.
    n_resamples, seed, confidence : int, int, float

    Returns
    -------
    PairedTest
        ``difference``: the mean over models of the mean over the fixed class set (the classes with
        at least ``min_pairs`` defined pairs under every model: a class of one pair cannot be
        resampled) of the per-class mean paired difference. ``low``,
        ``high``: percentile interval. ``p_value``: two-sided, ``2 min(P*(d <= 0), P*(d >= 0))``
        with the ``(k + 1) / (R + 1)`` correction, from the bootstrap distribution shifted by
        nothing (the percentile test). ``standard_error``: the bootstrap distribution's standard
        deviation.

    Notes
    -----
    Level 1 draws S models with replacement; level 2 draws N images with replacement, once per
    resample, shared by the drawn models: the images are crossed with the models, and an image's
    difficulty is shared by every model that explains it (see :func:`_two_level`). A resample that
    leaves a class of the fixed set without any pair is drawn again. With one model the test is the
    paired image bootstrap. The images are the resampling unit (an image's pairs for several classes
    stay together), as in CheXlocalize's bootstrap.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((3, 40, 2)); b = a - 0.2  # a is better by 0.2 on every pair
    >>> result = pooled_paired_bootstrap(a, b, n_resamples=200)
    >>> round(result.difference, 3), result.p_value < 0.01
    (0.2, True)
    """
    first, second = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if first.shape != second.shape or first.ndim != 3:
        raise ValueError(f"a {first.shape} and b {second.shape} must both be [models, images, classes]")
    differences = first - second  # NaN where either is undefined
    models, images = differences.shape[:2]
    defined = ~np.isnan(differences)
    classes = np.flatnonzero((defined.sum(axis=1) >= min_pairs).all(axis=0))
    if not len(classes):
        raise UntestableError(f"no class has {min_pairs} defined pairs under every model")
    with np.errstate(invalid="ignore"):
        estimate = np.mean([np.nanmean(np.nanmean(differences[k][:, classes], axis=0)) for k in range(models)])
    samples = _two_level(lambda k, indices: _class_means(differences[k], indices, classes), models, images,
                         n_resamples, seed)
    return _test_result(estimate, samples, confidence, models, images, len(classes))


def pooled_mean(values, *, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95,
                min_pairs: int = 2) -> PairedTest:
    """One method's value with the pooled two-level interval of :func:`pooled_paired_bootstrap`:
    the mean over models of the mean over the fixed class set of the per-class mean of ``values``
    ``[S, N, C]`` (NaN: undefined). Returned as a :class:`PairedTest` whose ``difference`` is the
    value (its ``p_value`` tests the value against 0)."""
    array = np.asarray(values, dtype=float)
    return pooled_paired_bootstrap(array, np.where(np.isnan(array), np.nan, 0.0), n_resamples=n_resamples, seed=seed,
                                   confidence=confidence, min_pairs=min_pairs)


def pooled_group_difference(values, first_group, *, min_pairs: int = 2, n_resamples: int = 2000, seed: int = 0,
                            confidence: float = 0.95) -> PairedTest:
    """One method's score in one group of pairs minus another, within class, pooled over models.

    Parameters
    ----------
    values : array-like, shape (S, N, C)
        Per-image, per-class scores under S models, NaN where undefined.
    first_group : array-like of bool, shape (S, N, C) or (N, C)
        Which pairs are in the first group (e.g. single-label images, or a predicted probability of
        at least 0.5); the others are in the second.
    min_pairs : int
        A class enters the fixed class set when every model has at least this many pairs in each
        group (too small a group is merged away, not estimated from one pair).

    Returns
    -------
    PairedTest
        ``difference``: the mean over models of the mean over the class set of (mean of the first
        group - mean of the second); interval and two-sided p from the pooled two-level bootstrap of
        :func:`pooled_paired_bootstrap` (models drawn, one image resample shared by them).
    """
    array = np.asarray(values, dtype=float)
    group = np.broadcast_to(np.asarray(first_group, dtype=bool), array.shape)
    first = np.where(group, array, np.nan)
    second = np.where(~group, array, np.nan)
    counts = np.minimum((~np.isnan(first)).sum(axis=1), (~np.isnan(second)).sum(axis=1))  # [S, C]
    classes = np.flatnonzero((counts >= min_pairs).all(axis=0))
    if not len(classes):
        raise UntestableError(f"no class has {min_pairs} pairs in both groups under every model")
    models, images = array.shape[:2]

    def per_model(k: int, indices: np.ndarray):
        a, valid_a = _class_means(first[k], indices, classes)  # the groups' own class means (not differences)
        b, valid_b = _class_means(second[k], indices, classes)
        return a - b, valid_a & valid_b

    with np.errstate(invalid="ignore"):
        estimate = np.mean([np.nanmean(np.nanmean(first[k][:, classes], axis=0) - np.nanmean(second[k][:, classes], axis=0))
                            for k in range(models)])
    samples = _two_level(per_model, models, images, n_resamples, seed)
    return _test_result(estimate, samples, confidence, models, images, len(classes))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate), in the input's order.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03, 0.005]).round(3).tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    count = len(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate((count - np.arange(count)) * p[order]))
    result = np.empty(count)
    result[order] = adjusted
    return result


def minimum_detectable_difference(standard_error: float, *, alpha: float, power: float = POWER) -> float:
    """The smallest true difference a two-sided test at level ``alpha`` detects with ``power``,
    given the estimate's standard error: ``(z_{1 - alpha/2} + z_{power}) SE`` (normal approximation)."""
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * standard_error)


def claims_table(scores: dict[str, np.ndarray], *, metrics=FAMILY_METRICS, n_resamples: int = 2000,
                 seed: int = 0, family: str = "primary") -> pd.DataFrame:
    """Every declared comparison tested, Holm-corrected, and the claims that hold.

    Parameters
    ----------
    scores : dict
        ``{(method, metric): values [S, N, C]}`` for every method and metric of the family.
    metrics : sequence of str
        The family's metrics (default :data:`FAMILY_METRICS`).
    family : str
        A label for the table (``"primary"`` or the name of a secondary analysis).

    Returns
    -------
    pandas.DataFrame
        One row per comparison: ``family, metric, method_a, method_b, difference`` (a - b),
        ``low, high`` (95 %), ``p, p_holm, holds, better, models, images, classes`` and
        ``mdd`` (minimum detectable difference at the family's strictest level, ``ALPHA / m``,
        and 80 % power) and ``mdd_nominal`` (at ``ALPHA``).
    """
    methods = list(dict.fromkeys(method for method, _ in scores))
    if len(methods) < 2:
        raise ValueError(f"a claims table compares methods: got {len(methods)}")
    rows = []
    for metric in metrics:
        for first, second in combinations(methods, 2):
            row = {"family": family, "metric": metric, "method_a": first, "method_b": second}
            a, b = scores[(first, metric)], scores[(second, metric)]
            try:
                result = pooled_paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed)
            except UntestableError:  # too few pairs to resample: reported, counted in the family, never a claim
                rows.append(row | {"difference": np.nan, "low": np.nan, "high": np.nan, "p": 1.0,
                                   "standard_error": np.nan, "models": a.shape[0], "images": a.shape[1],
                                   "classes": 0})
                continue
            rows.append(row | {"difference": result.difference, "low": result.low, "high": result.high,
                               "p": result.p_value, "standard_error": result.standard_error, "models": result.models,
                               "images": result.images, "classes": result.classes})
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p"])
    table["holds"] = table["p_holm"] < ALPHA
    table["better"] = np.where(table["difference"] > 0, table["method_a"], table["method_b"])
    strictest = ALPHA / len(table)
    table["mdd"] = [minimum_detectable_difference(se, alpha=strictest) for se in table["standard_error"]]
    table["mdd_nominal"] = [minimum_detectable_difference(se, alpha=ALPHA) for se in table["standard_error"]]
    return table


def claims_markdown(table: pd.DataFrame) -> str:
    """The sentences of a claims table: each claim that holds, then the comparisons that do not
    (with their minimum detectable difference), one bullet each, grouped by metric."""
    lines = []
    for metric, group in table.groupby("metric", sort=False):
        name = METRIC_NAMES.get(metric, metric)
        for _, row in group[group["holds"]].iterrows():
            worse = row["method_b"] if row["better"] == row["method_a"] else row["method_a"]
            sign = 1 if row["better"] == row["method_a"] else -1
            low, high = sorted((sign * row["low"], sign * row["high"]))
            lines.append(f"- **{row['better']} > {worse}** by {name}: {sign * row['difference']:+.3f} "
                         f"[{low:+.3f}, {high:+.3f}], Holm-adjusted p = {row['p_holm']:.3f}")
        unseparated = group[~group["holds"] & (group["classes"] > 0)]
        if len(unseparated):
            pairs = ", ".join(f"{row['method_a']} / {row['method_b']} ({row['difference']:+.3f}, detectable "
                              f"{row['mdd']:.3f})" for _, row in unseparated.iterrows())
            lines.append(f"- not separated by {name}: {pairs}")
    models, images = int(table["models"].max()), int(table["images"].max())
    untested = int((table["classes"] == 0).sum())
    header = (f"{int(table['holds'].sum())} of {len(table)} declared comparisons hold ({models} models x "
              f"{images} images; pooled two-level paired bootstrap, Holm-corrected at {ALPHA}"
              + (f"; {untested} untestable: too few pairs to resample" if untested else "") + "):")
    return "\n".join([header, "", *lines])


def group_table(scores: dict[tuple[str, str], np.ndarray], groups: dict[str, np.ndarray], *,
                metrics=FAMILY_METRICS, min_pairs: int = 2, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each method's score in one group of pairs minus another (:func:`pooled_group_difference`), for
    every named grouping, method and metric, Holm-corrected over the whole table (one family).

    ``groups`` maps a comparison's name (``"single- minus multi-label"``) to the first group's mask,
    ``[S, N, C]`` or ``[N, C]``. A row whose class set would be empty says so (``classes`` 0, NaN).
    """
    rows = []
    methods = list(dict.fromkeys(method for method, _ in scores))
    for comparison, mask in groups.items():
        for metric in metrics:
            for method in methods:
                row = {"comparison": comparison, "metric": metric, "method": method}
                try:
                    result = pooled_group_difference(scores[(method, metric)], mask, min_pairs=min_pairs,
                                                     n_resamples=n_resamples, seed=seed)
                except UntestableError:
                    rows.append(row | {"difference": np.nan, "low": np.nan, "high": np.nan, "p": np.nan,
                                       "models": 0, "images": 0, "classes": 0})
                    continue
                rows.append(row | {"difference": result.difference, "low": result.low, "high": result.high,
                                   "p": result.p_value, "models": result.models, "images": result.images,
                                   "classes": result.classes})
    table = pd.DataFrame(rows, columns=["comparison", "metric", "method", "difference", "low", "high", "p", "models",
                                        "images", "classes"])
    tested = table["p"].notna()
    table["p_holm"] = np.nan
    table.loc[tested, "p_holm"] = holm(table.loc[tested, "p"])
    table["holds"] = table["p_holm"] < ALPHA
    return table


# The paper's own claims (its abstract; Alam et al., Nordic Machine Intelligence 3(1):27-47, 2023,
# doi:10.5617/nmi.10471), held as data: the methods it names, and what it says of them.
PAPER_QUANTITATIVE_BEST = "Grad-CAM"  # "demonstrates the most favorable performance in quantitative evaluation"
PAPER_MEDICAL_BEST = "LIME"  # "heatmap score segmentation visualization exhibits the highest level of medical significance"


def best_verdict(table: pd.DataFrame, method: str) -> str:
    """What a claims table says of "``method`` is best", metric by metric (metrics with the same
    verdict named together)."""
    verdicts: dict[str, list[str]] = {}
    for metric, group in table.groupby("metric", sort=False):
        mine = group[(group["method_a"] == method) | (group["method_b"] == method)]
        if mine.empty:
            continue
        won = mine[mine["holds"] & (mine["better"] == method)]
        lost = mine[mine["holds"] & (mine["better"] != method)]
        if len(won) == len(mine):
            verdict = f"confirmed ({method} > every other method)"
        elif len(lost):
            verdict = f"contradicted ({', '.join(sorted(lost['better']))} > {method})"
        elif len(won):
            beaten = sorted((set(won["method_a"]) | set(won["method_b"])) - {method})
            verdict = f"not confirmed ({method} > {', '.join(beaten)} only)"
        else:
            verdict = "not separated"
        verdicts.setdefault(verdict, []).append(METRIC_NAMES.get(metric, metric))
    return "; ".join(f"{verdict} by {', '.join(metrics)}" for verdict, metrics in verdicts.items()) or "not tested"


def paper_comparison(primary: pd.DataFrame, secondary: dict[str, pd.DataFrame],
                     labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's claims beside this run's verdicts, generated from the claims tables.

    Parameters
    ----------
    primary : pandas.DataFrame
        :func:`claims_table` of the primary (paper-protocol) analysis.
    secondary : dict
        ``{name: claims_table}`` of the labelled secondary analyses.
    labels : pandas.DataFrame, optional
        :func:`group_table` with a ``"single- minus multi-label"`` comparison.

    Notes
    -----
    The phantom's values are not CheXpert's: verdicts compare methods by rank, never a value of
    this run with one of the paper's.
    """
    rows = [{"paper (abstract)": f"{PAPER_QUANTITATIVE_BEST} localises best in the quantitative evaluation",
             "primary protocol (this run)": best_verdict(primary, PAPER_QUANTITATIVE_BEST),
             "secondary analyses": "; ".join(f"{name}: {best_verdict(table, PAPER_QUANTITATIVE_BEST)}"
                                             for name, table in secondary.items())},
            {"paper (abstract)": f"{PAPER_MEDICAL_BEST}'s segmentations have the highest medical significance",
             "primary protocol (this run)": "tested by notebook 08 on a proxy, anatomical plausibility (its "
                                            "generated verdict is in README's medical-significance block); "
                                            "clinicians' blinded ratings: notebook 08's rating sheet",
             "secondary analyses": ""}]
    if labels is not None and len(labels):
        part = labels[labels["comparison"] == "single- minus multi-label"]
        texts = []
        for (metric, method), row in part.set_index(["metric", "method"]).iterrows():
            if row["holds"]:
                texts.append(f"{method}, {METRIC_NAMES.get(metric, metric)}: "
                             f"{'single' if row['difference'] > 0 else 'multi'}-label higher "
                             f"({row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}])")
        untested = int((part["classes"] == 0).sum())
        if texts:
            verdict = "; ".join(texts)
        elif untested == len(part):
            verdict = "not testable here: no class has two pairs of each kind under every model"
        else:
            verdict = ("no method scores differently on single- and multi-label images (every difference's "
                       "Holm-corrected p >= 0.05)" + (f"; {untested} of {len(part)} untestable" if untested else ""))
        rows.append({"paper (abstract)": "single- and multi-label predictions are both analysed (the abstract "
                                         "states no direction)",
                     "primary protocol (this run)": verdict, "secondary analyses": ""})
    return pd.DataFrame(rows)


README_START = "<!-- claims: generated by notebook 07 (figures/07_claims.md); make reproduce rewrites this block -->"
README_END = "<!-- /claims -->"
# Other generated blocks of README: name -> (start marker, end marker, published file in figures/)
README_BLOCKS = {
    "claims": (README_START, README_END, "07_claims.md"),
    "replication": ("<!-- replication: generated by make replicate (figures/07_replication.md) -->",
                    "<!-- /replication -->", "07_replication.md"),
    "shortcut": ("<!-- shortcut: generated by notebook 10 (figures/10_shortcut.md) -->", "<!-- /shortcut -->",
                 "10_shortcut.md"),
    "significance": ("<!-- significance: generated by notebook 08 (figures/08_significance.md) -->",
                     "<!-- /significance -->", "08_significance.md"),
}


def publish(profile, markdown: str, *, block: str = "claims") -> Path:
    """Write generated markdown as ``runs/<profile>/tables/<block>.md``; for the default run
    (``publish_figures``) also as its file in ``figures/`` (:data:`README_BLOCKS`) and into README's block of that name
    (between its markers, :data:`README_BLOCKS`), so that README quotes this run's text and states
    nothing else there. Written atomically; returns the run's copy."""
    from .config import REPOSITORY_ROOT
    from .files import atomic_write_text

    start, end, published = README_BLOCKS[block]
    text = markdown.rstrip() + "\n"
    target = profile.paths.tables / f"{block}.md"
    atomic_write_text(target, text)
    if profile.publish_figures:
        atomic_write_text(REPOSITORY_ROOT / "figures" / published, text)
        readme = REPOSITORY_ROOT / "README.md"
        content = readme.read_text(encoding="utf-8")
        if start in content and end in content.split(start, 1)[1]:
            head, rest = content.split(start, 1)
            _, tail = rest.split(end, 1)
            atomic_write_text(readme, f"{head}{start}\n{text}{end}{tail}")
    return target


def readme_block(readme_text: str, block: str = "claims") -> str | None:
    """The text of one generated block of README (None without its markers)."""
    start, end, _ = README_BLOCKS[block]
    if start not in readme_text or end not in readme_text:
        return None
    return readme_text.split(start, 1)[1].split(end, 1)[0].strip("\n") + "\n"


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "/").replace("\n", " ")

    lines = ["| " + " | ".join(cell(column) for column in table.columns) + " |",
             "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _holding(table: pd.DataFrame) -> str:
    claims = []
    for _, row in table[table["holds"]].iterrows():
        worse = row["method_b"] if row["better"] == row["method_a"] else row["method_a"]
        claims.append(f"{row['better']} > {worse} by {METRIC_NAMES.get(row['metric'], row['metric'])} "
                      f"({abs(row['difference']):.3f}, p_Holm = {row['p_holm']:.3f})")
    return "; ".join(claims) if claims else "no comparison holds"


def values_markdown(across: pd.DataFrame, metrics=FAMILY_METRICS) -> str:
    """The primary values as a markdown table: per method and metric the mean over the models, its
    95 % interval over models and images, and the range of the models' own values
    (:func:`shamsul_utils.seeds.across_seeds_table`, its ``"all classes"`` rows)."""
    overall = across[across["class"] == "all classes"]
    columns = {"method": [], **{METRIC_NAMES[metric]: [] for metric in metrics}}
    for method, group in overall.groupby("method", sort=False):
        columns["method"].append(method)
        for metric in metrics:
            row = group[group["metric"] == metric].iloc[0]
            columns[METRIC_NAMES[metric]].append(f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}] "
                                                 f"({row['seed_min']:.3f}-{row['seed_max']:.3f})")
    return _markdown_table(pd.DataFrame(columns))


def report_markdown(primary: pd.DataFrame, secondary: dict[str, pd.DataFrame], paper: pd.DataFrame,
                    groups: pd.DataFrame | None = None, across: pd.DataFrame | None = None) -> str:
    """Everything the study concludes, as markdown generated from its tables: the primary values and
    claims, the paper's claims beside this run's verdicts, the secondary analyses and the strata."""
    lines = []
    if across is not None:
        lines += ["**Primary values** (mean over the localised classes and the models; 95 % interval over models "
                  "and images; the models' range in brackets):", "", values_markdown(across), ""]
    lines += ["**Primary analysis** (the paper's protocol: epsilon LRP, CheXlocalize's min-max of the raw map, "
              "Otsu; every method on the same images under every model). " + claims_markdown(primary), "",
             "**The paper's claims and this run** (methods compared by rank on the phantom, whose values are not "
             "CheXpert's):", "", _markdown_table(paper), ""]
    if secondary:
        lines += ["**Secondary analyses** (labelled, not the paper's protocol; each its own family of tests, "
                  "Holm-corrected):", ""]
        lines += [f"- *{name}*: {int(table['holds'].sum())} of {len(table)} hold: {_holding(table)}"
                  for name, table in secondary.items()]
        lines.append("")
    if groups is not None and len(groups):
        lines += ["**Strata** (a method's score in one group of pairs minus the other, within class, pooled over "
                  "the models; Holm over the whole table):", ""]
        for comparison, part in groups.groupby("comparison", sort=False):
            holding = part[part["holds"]]
            found = "; ".join(f"{row['method']}, {METRIC_NAMES.get(row['metric'], row['metric'])}: "
                              f"{row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"
                              for _, row in holding.iterrows())
            untested = int((part["classes"] == 0).sum())
            lines.append(f"- *{comparison}*: {found or 'no difference holds'}"
                         + (f" ({untested} of {len(part)} rows with too few pairs to test)" if untested else ""))
    return "\n".join(lines).rstrip() + "\n"
