"""Conclusions across training seeds: seed profiles, the two-level bootstrap, rankings that must hold."""

from __future__ import annotations

import numpy as np
import pytest

from shamsul_utils import metrics, seeds
from shamsul_utils.config import load_profile
from shamsul_utils.errors import DataError
from shamsul_utils.training import training_fingerprint


def test_seed_profile_changes_the_model_only():
    base = load_profile("smoke")
    variant = seeds.seed_profile(base, 5)
    assert variant.training_seed == 5 and variant.seed == base.seed  # same explanation set, same LIME/SHAP seed
    assert variant.data_root == base.data_root and variant.paths.run.name == "smoke-seed5"
    assert variant.training.extra_seeds == () and not variant.publish_figures
    assert seeds.seed_profile(base, base.training_seed) is base
    assert [p.training_seed for p in seeds.seed_profiles(base)] == [0, *base.training.extra_seeds]
    assert training_fingerprint(variant) != training_fingerprint(base)


def test_extra_seeds_do_not_change_the_main_models_fingerprint():
    # listing more seeds must not retrain the main model
    base = load_profile("smoke")
    more = load_profile("smoke", {"training": {"extra_seeds": [3, 4, 5]}})
    assert training_fingerprint(more) == training_fingerprint(base)


@pytest.mark.parametrize("seeds_value", [[0], [1, 1], [-2]])
def test_bad_extra_seeds_are_refused_at_load(seeds_value):
    with pytest.raises(DataError, match="extra_seeds"):
        load_profile("smoke", {"training": {"extra_seeds": seeds_value}})


def test_unknown_lrp_rule_is_refused_at_load():
    with pytest.raises(DataError, match="lrp_rule"):
        load_profile("smoke", {"explain": {"lrp_rule": "gamma"}})


def test_explained_rows_evenly_spaced_for_perturbation_methods_on_extra_seeds():
    profile = load_profile("smoke", {"explain": {"seed_images": 3}})
    assert seeds.explained_rows(profile, "lime", 9, main=False).tolist() == [0, 4, 8]
    assert seeds.explained_rows(profile, "lime", 9, main=True).tolist() == list(range(9))
    assert seeds.explained_rows(profile, "gradcam", 9, main=False).tolist() == list(range(9))


def test_seed_bootstrap_by_hand():
    """Three models that each score the same on every image (0, 1, 2): image resampling changes
    nothing, so the interval is that of the mean of 3 draws with replacement from {0, 1, 2}:
    P(mean = 0) = 1/27 > 2.5 %, so the 2.5 % quantile is 0 and the 97.5 % one is 2."""
    values = np.repeat(np.array([0.0, 1.0, 2.0])[:, None], 20, axis=1)
    estimate, low, high = metrics.seed_bootstrap_ci(values, n_resamples=4000, seed=1)
    assert (estimate, low, high) == (1.0, 0.0, 2.0)
    # one model alone: only the images vary (here not at all)
    assert metrics.seed_bootstrap_ci(values[:1], n_resamples=100)[1:] == (0.0, 0.0)


def test_seed_bootstrap_interval_covers_the_seed_spread():
    rng = np.random.default_rng(0)
    images = rng.random(60)
    values = np.stack([images + shift for shift in (0.0, 0.2, 0.4)])
    _, image_low, image_high = metrics.bootstrap_ci(values.mean(0), n_resamples=1000)
    estimate, low, high = metrics.seed_bootstrap_ci(values, n_resamples=1000)
    assert estimate == pytest.approx(values.mean())
    assert high - low > 1.5 * (image_high - image_low)


class _Scores:
    """A stand-in for evaluation.Localisation with given per-image values."""

    def __init__(self, values: np.ndarray) -> None:
        self.array = values
        self.hits = values
        self.hits_tie_aware = values
        self.sizes = [(16, 16)] * len(values)

    def selected_iou(self, variant: str) -> np.ndarray:
        return self.array

    def values(self, metric: str) -> np.ndarray:
        assert metric in seeds.METRICS
        return self.array


def _scores(rng, offsets: dict[str, list[float]]) -> dict:
    rows = np.arange(30)
    result = {}
    for k in range(3):
        result[k] = {method: (rows, _Scores(np.clip(rng.random((30, 10)) * 0.1 + shift[k], 0, 1)))
                     for method, shift in offsets.items()}
    return result


def test_claims_across_seeds_hold_only_where_the_pooled_test_says_so():
    """A beats B clearly under every model; C beats B under two models and loses under the third:
    the pooled test over models and images finds A > B and does not separate B and C."""
    from shamsul_utils import claims

    rng = np.random.default_rng(3)
    scores = _scores(rng, {"A": [0.6, 0.6, 0.6], "B": [0.3, 0.3, 0.3], "C": [0.5, 0.5, 0.1]})
    family = seeds.family_scores(scores)
    assert family[("A", "miou_all")].shape == (3, 30, 10)
    table = claims.claims_table(family, n_resamples=400).set_index(["metric", "method_a", "method_b"])
    assert table.loc[("miou_all", "A", "B"), "holds"] and table.loc[("miou_all", "A", "B"), "better"] == "A"
    assert not table.loc[("miou_all", "B", "C"), "holds"]
    across = seeds.across_seeds_table(scores, n_resamples=300)
    overall = across[(across["class"] == "all classes") & (across["metric"] == "miou_all")].set_index("method")
    assert overall.loc["C", "between_seed_sd"] > 5 * overall.loc["A", "between_seed_sd"]


class _Localisation(_Scores):
    pass
