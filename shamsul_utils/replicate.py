"""Replication built in: do the main run's claims hold for models it never saw?

``make replicate`` (``python -m shamsul_utils.replicate --profile demo``) trains models with held-out
training seeds (default 5, 6, 7) on the same data with the same recipe, explains the same explanation
set with every method under the primary protocol, and tests the same declared family of comparisons
on them (:mod:`shamsul_utils.claims`):

* pooled over the held-out models (the main run's test, on new models), and
* on each held-out model alone (its image bootstrap, Holm over the family): the **replication rate**
  of a claim is the share of held-out models on which it holds in the same direction;
* pooled over the main run's models *and* the held-out ones, when their training seeds differ (the
  same declared family on more independent models: what the study concludes with more power).

``--tag kernels --seeds 0 1 2`` under ``ATEN_CPU_CAPABILITY=default`` (``make replicate-kernels``)
retrains the main run's own seeds with torch's scalar kernels: another CPU's arithmetic on this one.

Each held-out model has its own run folder, ``runs/<profile>-<tag><seed>/`` (checkpoints, predictions,
heatmaps; all cached, so a rerun recomputes nothing); the result is
``runs/<profile>/tables/replication_<tag>.csv`` and its markdown, which for the default run is also
published (``figures/07_replication.md`` and README's replication block). The main run's claims
(``tables/claims.csv``, notebook 07) must exist.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import pandas as pd

from . import claims, seeds, study, training
from .config import Profile, load_profile
from .errors import DataError
from .files import remove_stale_temporaries, write_table

__all__ = ["held_out_profile", "replicate", "replication_table", "replication_markdown", "main"]


def held_out_profile(profile: Profile, seed: int, tag: str = "replicate") -> Profile:
    """The profile of a held-out model: ``profile`` with ``training.seed`` = ``seed``, its own run
    folder ``<name>-<tag><seed>`` and ``profile``'s data.

    Examples
    --------
    >>> variant = held_out_profile(load_profile("smoke"), 5)
    >>> variant.name, variant.training_seed, variant.seed
    ('smoke-replicate5', 5, 0)
    """
    return seeds.model_profile(profile, seed, f"{profile.name}-{tag}{seed}")


def _prepare(profile: Profile, variants: list[Profile], *, workers: int) -> None:
    """Train (or reuse) every held-out model, write its test predictions, explain the explanation set
    with every method under the primary protocol (all cached)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from .datasets import read_split
    from .models import load_trained_model

    for variant in variants:
        remove_stale_temporaries(variant.paths.run)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(seeds._train_single_threaded, variants))  # one thread each: weights independent of cores
    test = read_split(profile, "test")
    for variant in variants:
        model, _ = load_trained_model(variant)
        training.predict_split(variant, model, test)
        explanation = study.explanation_set(variant)
        for method in study.METHODS.values():
            study.explain_cached(variant, model, explanation, method, progress=False)
        print(f"[replicate] {variant.name}: trained and explained", flush=True)


def replication_table(main: pd.DataFrame, pooled: pd.DataFrame, per_model: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Per declared comparison: the main run's verdict, the pooled held-out verdict and the share of
    held-out models on which the main run's claim holds in the same direction."""
    keys = ["metric", "method_a", "method_b"]
    table = main[keys + ["holds", "better", "difference"]].rename(
        columns={"holds": "main_holds", "better": "main_better", "difference": "main_difference"})
    pooled_part = pooled[keys + ["holds", "better", "difference", "p_holm"]].rename(
        columns={"holds": "held_out_holds", "better": "held_out_better", "difference": "held_out_difference",
                 "p_holm": "held_out_p_holm"})
    table = table.merge(pooled_part, on=keys)
    agreeing = pd.Series(0, index=table.index)
    for seed, result in per_model.items():
        part = table[keys].merge(result[keys + ["holds", "better"]], on=keys, how="left")
        same = part["holds"].fillna(False).astype(bool) & (part["better"] == table["main_better"])
        table[f"holds_seed_{seed}"] = same
        agreeing += same.astype(int)
    table["replication_rate"] = agreeing / max(1, len(per_model))
    table["pooled_replicates"] = table["held_out_holds"] & (table["held_out_better"] == table["main_better"])
    return table


def replication_markdown(table: pd.DataFrame, seeds_used: Sequence[int], tag: str) -> str:
    """The replication result as sentences: each main claim with its replication, then any comparison
    the held-out models separate that the main run did not."""
    lines = [f"**Replication** on {len(seeds_used)} held-out models (training seeds "
             f"{', '.join(map(str, seeds_used))}, `{tag}`; same data, recipe, images and tests):", ""]
    claimed = table[table["main_holds"]]
    if claimed.empty:
        lines.append("- the main run makes no claim to replicate")
    for _, row in claimed.iterrows():
        worse = row["method_b"] if row["main_better"] == row["method_a"] else row["method_a"]
        verdict = "replicates" if row["pooled_replicates"] else "does not replicate"
        lines.append(f"- **{row['main_better']} > {worse}** by {claims.METRIC_NAMES.get(row['metric'], row['metric'])}: "
                     f"{verdict} pooled over the held-out models (Holm-adjusted p = {row['held_out_p_holm']:.3f}); "
                     f"holds on {row['replication_rate']:.0%} of them one by one")
    new = table[~table["main_holds"] & table["held_out_holds"]]
    for _, row in new.iterrows():
        worse = row["method_b"] if row["held_out_better"] == row["method_a"] else row["method_a"]
        lines.append(f"- not claimed by the main run, but held out: {row['held_out_better']} > {worse} by "
                     f"{claims.METRIC_NAMES.get(row['metric'], row['metric'])}")
    return "\n".join(lines) + "\n"


def replicate(profile: Profile, seeds_used: Sequence[int], *, tag: str = "replicate", workers: int = 2,
              n_resamples: int | None = None) -> pd.DataFrame:
    """Train, explain and test the held-out models; compare with the main run's claims; write and
    (for the default run) publish the result. Returns :func:`replication_table`."""
    main_claims = profile.paths.tables / "claims.csv"
    if not main_claims.is_file():
        raise DataError(f"{main_claims}: the main run's claims are missing; run make reproduce (notebook 07) first")
    variants = [held_out_profile(profile, seed, tag) for seed in seeds_used]
    _prepare(profile, variants, workers=workers)
    resamples = n_resamples or 2 * profile.evaluation.bootstrap
    scores = seeds.score_models(profile, variants, signed=profile.evaluation.signed)
    pooled = claims.claims_table(seeds.family_scores(scores), family=f"held out ({tag})",
                                 n_resamples=resamples, seed=profile.seed)
    per_model = {seed: claims.claims_table(seeds.family_scores({seed: scores[seed]}), family=f"seed {seed}",
                                           n_resamples=resamples, seed=profile.seed)
                 for seed in scores}
    table = replication_table(pd.read_csv(main_claims), pooled, per_model)
    write_table(table, profile.paths.tables / f"replication_{tag}.csv")
    from .files import atomic_write_text

    text = replication_markdown(table, list(seeds_used), tag)
    main_seeds = [variant.training_seed for variant in seeds.seed_profiles(profile)]
    if set(main_seeds) & set(seeds_used):  # the same seeds under other arithmetic: not independent models
        text += ("\nNot pooled with the main run's models: the same training seeds retrained are not independent "
                 "models.\n")
    else:
        every = seeds.score_seeds(profile, signed=profile.evaluation.signed) | scores
        combined = claims.claims_table(seeds.family_scores(every), family=f"main + held out ({tag})",
                                       n_resamples=resamples, seed=profile.seed)
        write_table(combined, profile.paths.tables / f"pooled_{tag}.csv")
        text += (f"\n**Pooled** over the main run's {len(main_seeds)} models and these {len(seeds_used)} (training seeds "
                 f"{', '.join(map(str, [*main_seeds, *seeds_used]))}; the same declared family and test): "
                 + claims.claims_markdown(combined))
    atomic_write_text(profile.paths.tables / f"replication_{tag}.md", text)
    # README's block holds every replication made so far (held-out seeds, other kernels), in tag order
    texts = [path.read_text(encoding="utf-8") for path in sorted(profile.paths.tables.glob("replication_*.md"))]
    claims.publish(profile, "\n".join(texts), block="replication")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shamsul_utils.replicate", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7], help="held-out training seeds")
    parser.add_argument("--tag", default="replicate", help="run folders <profile>-<tag><seed>")
    parser.add_argument("--workers", type=int, default=2, help="models trained at once (one thread each)")
    arguments = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        profile = load_profile(arguments.profile)
        table = replicate(profile, arguments.seeds, tag=arguments.tag, workers=arguments.workers)
    except DataError as error:
        print(f"[replicate] stopped: {error}", file=sys.stderr)
        return 1
    print(replication_markdown(table, arguments.seeds, arguments.tag))
    print(f"[replicate] {arguments.profile}: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
