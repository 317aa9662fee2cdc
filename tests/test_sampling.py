"""The fast estimators (issue: fewer model calls): designs and solvers checked against independent truth
(Shapley values known by hand, shap's KernelExplainer run its own way, LIME's sampling distribution)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binom

from shamsul_utils.explainers import lime as lime_explainer
from shamsul_utils.explainers import shap as shap_explainer
from shamsul_utils.explainers._perturbation import inference_evaluation_mode
from shamsul_utils.explainers.sampling import lime_design, shapley_design, shapley_values
from shamsul_utils.models import build_model


def _known_game(num_players: int):
    """Three outputs whose Shapley values are known by hand: a linear game (value = its weights),
    a unanimity game on T (1/|T| for each member of T, 0 elsewhere), and their sum."""
    weights = np.linspace(-1.0, 2.0, num_players)
    members = [member for member in (1, 3, 4) if member < num_players]

    def game(coalitions):
        z = np.asarray(coalitions, dtype=float)
        linear = z @ weights
        unanimity = z[:, members].all(axis=1).astype(float)
        return np.column_stack([linear, unanimity, linear + unanimity])

    unanimity_values = np.zeros(num_players)
    unanimity_values[members] = 1 / len(members)
    return game, np.stack([weights, unanimity_values, weights + unanimity_values])


@pytest.mark.parametrize("num_players", [2, 5, 8])
def test_a_budget_that_covers_every_coalition_gives_the_exact_shapley_values(num_players):
    game, exact = _known_game(num_players)
    coalitions, weights = shapley_design(num_players, 2**num_players, np.random.default_rng(0))
    assert len({row.tobytes() for row in coalitions}) == len(coalitions) == 2**num_players
    np.testing.assert_allclose(shapley_values(coalitions, weights, game(coalitions)), exact, atol=1e-12)


def test_linear_games_are_recovered_exactly_from_any_sample():
    """Kernel SHAP's regression is exact on an additive game: every design with at least as many
    coalition pairs as players (a pair spans z and 1) must give its weights (a check of the constrained solve and of the
    weights, not of the sampling)."""
    game, exact = _known_game(50)
    for budget in (102, 120, 400):
        coalitions, weights = shapley_design(50, budget, np.random.default_rng(budget))
        assert len(coalitions) <= budget
        np.testing.assert_allclose(shapley_values(coalitions, weights, game(coalitions))[0], exact[0], atol=1e-9)


def test_the_design_pairs_samples_without_replacement_and_carries_each_size_its_kernel_mass():
    players, budget = 50, 400
    coalitions, weights = shapley_design(players, budget, np.random.default_rng(3))
    assert coalitions[0].sum() == 0 and coalitions[1].sum() == players and weights[:2].tolist() == [0.0, 0.0]
    assert len({row.tobytes() for row in coalitions}) == len(coalitions) > budget - 3
    rest, rest_weights = coalitions[2:], weights[2:]
    np.testing.assert_array_equal(rest[0::2] + rest[1::2], 1)  # each coalition with its complement
    sizes = rest.sum(axis=1)
    assert np.count_nonzero(sizes == 1) == players and np.count_nonzero(sizes == players - 1) == players  # enumerated
    for size in range(1, players):  # the Shapley kernel's mass of each size, (M - 1) / (s (M - s))
        mass = (players - 1) / (size * (players - size))
        assert rest_weights[sizes == size].sum() == pytest.approx(mass, rel=1e-12), size
    counts = np.bincount(sizes, minlength=players)
    # equal shares of the sampled strata {s, M - s} (equal leverage); the middle size's stratum
    # holds both rows of each of its pairs
    shares = [*counts[2:players // 2], counts[players // 2] // 2]
    assert max(shares) - min(shares) <= 1 and counts[players // 2] % 2 == 0


def test_the_sampled_regression_sums_are_unbiased_for_the_full_kernel_shap_sums():
    """Averaged over seeds, a partial design's weighted Gram matrix and moment vector equal those of
    the full Kernel SHAP regression over all 2^M coalitions with the Shapley kernel's weights (the
    independent truth: the kernel of Lundberg & Lee, enumerated), so each stratum's weight is right."""
    from math import comb

    players, budget, seeds = 10, 100, 400  # sizes 1 and 9 enumerated, 2-8 sampled (5 an even middle)
    codes = np.arange(1, 2**players - 1)
    everything = ((codes[:, None] >> np.arange(players)) & 1).astype(float)
    sizes = everything.sum(axis=1).astype(int)
    kernel = (players - 1) / (np.array([comb(players, int(k)) for k in sizes]) * sizes * (players - sizes))
    values = np.sin(everything @ np.linspace(0.1, 1.0, players))  # any function of the coalition
    exact_gram = (everything * kernel[:, None]).T @ everything
    exact_moment = (everything * kernel[:, None]).T @ values
    grams, moments = [], []
    for seed in range(seeds):
        coalitions, weights = shapley_design(players, budget, np.random.default_rng(seed))
        z, w = coalitions[2:].astype(float), weights[2:]
        grams.append((z * w[:, None]).T @ z)
        moments.append((z * w[:, None]).T @ np.sin(z @ np.linspace(0.1, 1.0, players)))
    for estimates, exact in ((np.array(grams), exact_gram), (np.array(moments), exact_moment)):
        standard_error = estimates.std(axis=0) / np.sqrt(seeds)
        assert (np.abs(estimates.mean(axis=0) - exact) <= 4 * standard_error + 1e-12).all()


def test_partial_budgets_agree_with_shap_on_average_and_beat_it_per_sample():
    """On a non-additive 12-player game at 100 evaluations, the estimates centre on the exact values
    (which shap's KernelExplainer gives when it enumerates all 4096 coalitions) and err less than
    shap's own sampling at the same budget."""
    import shap

    players = 12
    rng = np.random.default_rng(0)
    weights = rng.normal(size=players)
    pairs = rng.normal(size=(players, players)) / players

    def game(coalitions):
        z = np.asarray(coalitions, dtype=float)
        return np.column_stack([z @ weights + np.einsum("si,ij,sj->s", z, pairs, z) + np.sin(z.sum(axis=1))])

    np.random.seed(0)
    explainer = shap.KernelExplainer(game, np.zeros((1, players)))
    exact = np.asarray(explainer.shap_values(np.ones((1, players)), nsamples=2**players, l1_reg=False,
                                             silent=True)).reshape(players)
    ours, theirs = [], []
    for seed in range(60):
        coalitions, design_weights = shapley_design(players, 100, np.random.default_rng(seed))
        ours.append(shapley_values(coalitions, design_weights, game(coalitions))[0])
        np.random.seed(seed)
        theirs.append(np.asarray(explainer.shap_values(np.ones((1, players)), nsamples=98, l1_reg=False,
                                                       silent=True)).reshape(players))
    ours, theirs = np.array(ours), np.array(theirs)
    spread = ours.std(axis=0).max()
    assert np.abs(ours.mean(axis=0) - exact).max() < 4 * spread / np.sqrt(len(ours)) + 1e-3
    error = lambda estimates: np.linalg.norm(estimates - exact, axis=1).mean()  # noqa: E731
    assert error(ours) < error(theirs)


def test_lime_design_keeps_limes_distribution():
    players, budget = 40, 2001
    design = lime_design(players, budget, np.random.default_rng(1))
    assert design.shape == (budget, players) and design[0].all()
    np.testing.assert_array_equal(design[1::2] + design[2::2], 1)  # antithetic pairs
    assert (design[1:].mean(axis=0) == 0.5).all()  # every superpixel kept in exactly half the rows
    sizes = design[1:].sum(axis=1)
    # stratified sizes: the empirical distribution of |z| is Binomial(M, 1/2) up to one draw per slice
    empirical = np.array([np.mean(sizes <= k) for k in range(players + 1)])
    assert np.abs(empirical - binom.cdf(np.arange(players + 1), players, 0.5)).max() < 2 / len(sizes) + 1e-9
    # and within a size every superpixel is equally likely: columns balanced within 3 sd of a binomial
    first_half = design[1::2]
    kept = first_half.sum(axis=0)
    assert np.abs(kept - len(first_half) / 2).max() < 3 * np.sqrt(len(first_half) / 4) + 1


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("densenet_small", growth_rate=8, block_config=(2, 2, 2)).eval()


def _image():
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    unit = np.stack([0.5 + 0.5 * np.sin(6 * xx), 0.5 + 0.5 * np.cos(5 * yy), xx * yy])
    mean, std = np.array([0.485, 0.456, 0.406])[:, None, None], np.array([0.229, 0.224, 0.225])[:, None, None]
    return torch.from_numpy((unit - mean) / std).float()


def _six_segments(unit):
    rows, columns = np.mgrid[0:unit.shape[0], 0:unit.shape[1]]
    return (rows * 2 // unit.shape[0]) * 3 + columns * 3 // unit.shape[1]


def test_fast_kernel_shap_on_an_image_equals_shaps_enumeration_and_is_efficient(model):
    image = _image()
    with inference_evaluation_mode(model):
        fast = shap_explainer.explain_segments(model, image, [2, 5], nsamples=64, estimator="fast",
                                               segmentation_fn=_six_segments)
        paper = shap_explainer.explain_segments(model, image, [2, 5], nsamples=62, l1_reg=False,
                                                segmentation_fn=_six_segments)
    np.testing.assert_allclose(fast.weights, paper.weights, atol=1e-7)  # both exact: all 64 coalitions
    maps = shap_explainer.explain(model, image[None], classes=[2, 5], nsamples=40, estimator="fast")
    again = shap_explainer.explain(model, image[None], classes=[2, 5], nsamples=40, estimator="fast")
    np.testing.assert_array_equal(maps, again)  # seeded
    with torch.inference_mode():
        probabilities = torch.sigmoid(model(image[None]))[0, [2, 5]].double().numpy()
    with inference_evaluation_mode(model):
        result = shap_explainer.explain_segments(model, image, [2, 5], nsamples=40, estimator="fast")
    efficiency = result.weights.sum(axis=1) + result.base
    np.testing.assert_allclose(efficiency, probabilities, rtol=1e-5)


def _eight_segments(unit):
    rows, columns = np.mgrid[0:unit.shape[0], 0:unit.shape[1]]
    return (rows * 2 // unit.shape[0]) * 4 + columns * 4 // unit.shape[1]


def _lime_expected_weights(model, image, classes, segments, num_samples) -> np.ndarray:
    """What LIME at ``num_samples`` estimates, without its sampling noise, for 8 segments: under its
    distribution (each segment kept with probability 1/2) all 256 coalitions are equally likely, so
    the expectation of its objective ``sum_i w_i (y_i - b - beta z_i)^2 + |beta|^2`` over the
    samples is the same sum over the 256 coalitions, each carrying ``(num_samples - 1) / 256`` rows
    (the first row is always the unperturbed image), with
    its kernel on the cosine distance to the unperturbed image (weighted ridge, ``alpha=1``). Masked
    images are built here by hand (black fill), not by the library."""
    from shamsul_utils.models import IMAGENET_MEAN, IMAGENET_STD

    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    codes = np.arange(256)
    coalitions = ((codes[:, None] >> np.arange(8)) & 1).astype(float)
    unit = image * std + mean
    keep = torch.from_numpy(coalitions[:, segments]).float()[:, None]  # [256, 1, H, W]
    with torch.inference_mode():
        outputs = torch.sigmoid(model((keep * unit - mean) / std))[:, classes].double().numpy()
    distance = 1 - np.sqrt(coalitions.sum(axis=1) / 8)  # cosine distance to the all-ones row (1 if empty)
    # num_samples - 1 random rows spread over the 256 coalitions, plus LIME's fixed first row (all
    # ones, at distance 0: weight 1)
    weight = np.sqrt(np.exp(-distance**2 / 0.25**2)) * (num_samples - 1) / 256
    weight[-1] += 1.0
    centred = coalitions - np.average(coalitions, axis=0, weights=weight)  # the intercept, unpenalised
    target = outputs - np.average(outputs, axis=0, weights=weight)
    gram = centred.T @ (centred * weight[:, None]) + np.eye(8)
    return np.linalg.solve(gram, centred.T @ (target * weight[:, None])).T


def test_fast_lime_estimates_limes_quantity_with_less_error_than_lime_at_the_same_count(model):
    image = _image()
    segments = _eight_segments(np.zeros((32, 32)))
    truth = _lime_expected_weights(model, image, [1, 3], segments, 101)
    errors = {"fast": [], "paper": []}
    with inference_evaluation_mode(model):
        for seed in range(40):
            for estimator in errors:
                result = lime_explainer.explain_segments(model, image, [1, 3], num_samples=101, seed=seed,
                                                         estimator=estimator, segmentation_fn=_eight_segments)
                errors[estimator].append(np.linalg.norm(result.weights - truth) / np.linalg.norm(truth))
        everything = lime_explainer.explain_segments(model, image, [1, 3], num_samples=301, estimator="fast",
                                                     segmentation_fn=_eight_segments)
    assert np.mean(errors["fast"]) < 0.8 * np.mean(errors["paper"]), {key: np.mean(value) for key, value in errors.items()}
    # 300 rows cover all 256 coalitions: enumerated once each, LIME's expected estimate at 301 samples
    # (the design's rows weigh 301/257 each, the expectation's 300/256: 0.06 % apart)
    expected = _lime_expected_weights(model, image, [1, 3], segments, 301)
    np.testing.assert_allclose(everything.weights, expected, atol=0.005 * np.abs(expected).max())
    with inference_evaluation_mode(model):
        twice = [lime_explainer.explain_segments(model, image, [1, 3], num_samples=101, seed=5, estimator="fast",
                                                 segmentation_fn=_eight_segments).weights for _ in range(2)]
    np.testing.assert_array_equal(*twice)  # seeded
    with pytest.raises(ValueError, match="estimator must be one of"):
        lime_explainer.explain(model, image[None], estimator="faster")
    with pytest.raises(ValueError, match="estimator must be one of"):
        shap_explainer.explain(model, image[None], estimator="faster")
