"""Fewer model calls for the same estimate: sampling designs and solvers of the perturbation methods.

LIME and Kernel SHAP both regress a model's outputs on random coalitions of superpixels; the
model calls are the cost (one forward pass each), the regression is free. This module chooses
*which* coalitions to evaluate so that a few hundred calls estimate what the libraries estimate
from a thousand, and solves the regressions for every class at once:

* :func:`shapley_design` and :func:`shapley_values`: Kernel SHAP with leverage-score sampling,
  after Musco & Witter (2025, "Provably accurate Shapley value estimation via leverage score
  sampling"): coalition sizes sampled in proportion to their leverage (equal for every size), each
  coalition paired with its complement, sampled without replacement, the smallest and largest
  sizes enumerated exactly while the budget allows (as shap's KernelExplainer and R's kernelshap
  do), the empty and full coalitions handled exactly through the efficiency constraint;
* :func:`lime_design`: LIME's own sampling distribution (every superpixel kept with probability
  1/2, the unperturbed image first) drawn as antithetic pairs ``(z, 1 - z)`` with stratified
  coalition sizes, which keeps the distribution, and so the quantity LIME estimates, and removes
  most of the design's sampling noise (Owen 2013, ch. 8: antithetic and stratified sampling).

The model is never called here: a design is a coalition matrix ``[S, M]`` of 0/1 rows, evaluated
by :class:`~shamsul_utils.explainers._perturbation.CoalitionModel`; the solvers take its outputs.

References
----------
.. [1] C. Musco, R. T. Witter, "Provably accurate Shapley value estimation via leverage score
   sampling", ICLR 2025. https://arxiv.org/abs/2410.01917
.. [2] I. Covert, S.-I. Lee, "Improving KernelSHAP: practical Shapley value estimation via linear
   regression", AISTATS 2021 (paired sampling). https://arxiv.org/abs/2012.01536
.. [3] S. M. Lundberg, S.-I. Lee, "A unified approach to interpreting model predictions", NeurIPS 2017.
.. [4] A. B. Owen, "Monte Carlo theory, methods and examples", 2013, ch. 8 (variance reduction).
"""

from __future__ import annotations

from math import comb

import numpy as np

__all__ = ["ESTIMATORS", "shapley_design", "shapley_values", "lime_design", "exact_shapley_values"]

# The estimators a profile chooses between (explain.estimator): the libraries' own sampling at the
# paper's sample counts, or the designs of this module at their own budgets.
ESTIMATORS: tuple[str, ...] = ("paper", "fast")


def _kernel_mass(num_players: int, size: int) -> float:
    """The Shapley kernel's total weight on the coalitions of one size, ``(M - 1) / (s (M - s))``
    (each of the ``C(M, s)`` coalitions weighs ``(M - 1) / (C(M, s) s (M - s))``)."""
    return (num_players - 1) / (size * (num_players - size))


def _random_coalitions(num_players: int, size: int, count: int, rng: np.random.Generator,
                       taken: set[bytes]) -> list[np.ndarray]:
    """``count`` coalitions of one size, uniform among those that are not in ``taken`` and whose
    complement is not either; each drawn one and its complement are added to ``taken``."""
    rows: list[np.ndarray] = []
    while len(rows) < count:
        row = np.zeros(num_players, dtype=np.uint8)
        row[rng.choice(num_players, size=size, replace=False)] = 1
        key = row.tobytes()
        if key not in taken:
            taken.update((key, (1 - row).tobytes()))
            rows.append(row)
    return rows


def shapley_design(num_players: int, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions for Kernel SHAP and their regression weights, within ``budget`` model calls.

    Parameters
    ----------
    num_players : int
        ``M`` (superpixels), at least 2.
    budget : int
        Model evaluations in all, the empty and the full coalition included (at least 4).
    rng : numpy.random.Generator

    Returns
    -------
    coalitions : ndarray of uint8, shape (S, M)
        Row 0 is the empty coalition, row 1 the full one; then the sampled ones, in pairs
        ``(z, 1 - z)`` (``S <= budget``).
    weights : ndarray of float64, shape (S,)
        Regression weight of each row: 0 for the two ends (they enter through the efficiency
        constraint), else the row's share of its size's kernel mass, ``W_s / n_s`` for the
        ``n_s`` rows of size ``s`` (the stratified estimate of the full regression's sums).

    Notes
    -----
    Sizes ``s`` and ``M - s`` are served together (a coalition and its complement). From the
    outside in (1 and M-1, then 2 and M-2, ...) a pair of sizes is **enumerated** when all its
    coalitions fit in what is left of the budget; the rest of the budget is spread in equal shares
    of pairs over the remaining strata ``{s, M - s}``, i.e. in proportion to their leverage scores,
    which Musco & Witter show are equal for every size (the middle size of an even ``M`` is its own
    stratum and gets both rows of each of its pairs, twice a size's share: no bias, the weights
    account for it); within a size, coalitions are drawn uniformly without replacement.
    Deviation from Leverage SHAP: sizes get deterministic equal shares (stratification) instead
    of independent Bernoulli draws with those expected counts, and the outer sizes are enumerated
    (the hybrid of shap and R's kernelshap) - both only reduce the variance.

    Examples
    --------
    >>> coalitions, weights = shapley_design(6, 16, np.random.default_rng(0))
    >>> coalitions.shape, coalitions[:2].sum(axis=1).tolist(), float(weights[:2].sum())
    ((16, 6), [0, 6], 0.0)
    """
    if num_players < 2 or budget < 4:
        raise ValueError(f"need at least 2 players and a budget of 4, got {num_players} and {budget}")
    rows = [np.zeros(num_players, np.uint8), np.ones(num_players, np.uint8)]
    weights = [0.0, 0.0]
    left = budget - 2
    sizes = list(range(1, num_players // 2 + 1))  # s, served with M - s
    exact = 0
    for size in sizes:
        count = comb(num_players, size) * (1 if 2 * size == num_players else 2)
        if count > left:
            break
        for members in _all_subsets(num_players, size):
            rows.append(members)
            weights.append(_kernel_mass(num_players, size) / comb(num_players, size))
            if 2 * size != num_players:
                rows.append(1 - members)
                weights.append(_kernel_mass(num_players, size) / comb(num_players, size))
        left -= count
        exact += 1
    remaining = sizes[exact:]
    pairs = left // 2
    if remaining and pairs:
        taken: set[bytes] = set()
        # sizes s and M - s in one stratum: the same leverage, so equal shares per size
        shares = np.full(len(remaining), pairs // len(remaining))
        shares[rng.permutation(len(remaining))[: pairs - shares.sum()]] += 1
        for size, share in zip(remaining, shares, strict=True):
            share = int(min(share, comb(num_players, size) // (2 if 2 * size == num_players else 1)))
            if share == 0:
                continue
            drawn = _random_coalitions(num_players, size, share, rng, taken)
            # n_s rows of size s and n_s of size M - s, each size carrying its kernel mass
            mass = _kernel_mass(num_players, size)
            for members in drawn:
                rows.append(members)
                rows.append(1 - members)
                if 2 * size == num_players:  # the complement has the same size: 2 n_s rows share it
                    weights += [mass / (2 * share)] * 2
                else:
                    weights += [mass / share] * 2
    return np.stack(rows), np.asarray(weights, dtype=np.float64)


def _all_subsets(num_players: int, size: int):
    from itertools import combinations

    for members in combinations(range(num_players), size):
        row = np.zeros(num_players, np.uint8)
        row[list(members)] = 1
        yield row


def shapley_values(coalitions: np.ndarray, weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Kernel SHAP's constrained weighted least squares for every output at once.

    Parameters
    ----------
    coalitions : ndarray, shape (S, M)
        From :func:`shapley_design`: row 0 empty, row 1 full.
    weights : ndarray, shape (S,)
    values : ndarray, shape (S, C)
        The model's outputs on the coalitions.

    Returns
    -------
    ndarray of float64, shape (C, M)
        Shapley value estimates; per output they sum to ``v(full) - v(empty)`` exactly
        (efficiency, imposed as the constraint of Lundberg & Lee's estimator).
    """
    z = np.asarray(coalitions, dtype=np.float64)[2:]
    w = np.asarray(weights, dtype=np.float64)[2:]
    values = np.asarray(values, dtype=np.float64)
    empty, full = values[0], values[1]
    target = values[2:] - empty  # [S, C]
    gram = (z * w[:, None]).T @ z  # [M, M]
    moment = (z * w[:, None]).T @ target  # [M, C]
    ones = np.ones(z.shape[1])
    solve = np.linalg.lstsq(gram, np.column_stack([moment, ones]), rcond=None)[0]
    unconstrained, direction = solve[:, :-1], solve[:, -1]
    excess = (ones @ unconstrained - (full - empty)) / (ones @ direction)  # [C]
    return (unconstrained - direction[:, None] * excess[None, :]).T


def exact_shapley_values(game, num_players: int) -> np.ndarray:
    """Exact Shapley values ``[C, M]`` of ``game`` (coalitions ``[S, M]`` -> values ``[S, C]``)
    by the definition, enumerating all ``2^M`` coalitions: the reference for small ``M``."""
    if num_players > 16:
        raise ValueError("exact Shapley values enumerate 2^M coalitions; M <= 16 here")
    codes = np.arange(2**num_players)
    coalitions = ((codes[:, None] >> np.arange(num_players)) & 1).astype(np.uint8)
    values = np.asarray(game(coalitions), dtype=np.float64)
    sizes = coalitions.sum(axis=1)
    result = np.zeros((values.shape[1], num_players))
    for player in range(num_players):
        without = np.flatnonzero(coalitions[:, player] == 0)
        with_player = without + (1 << player)
        s = sizes[without]
        weight = np.array([1.0 / (num_players * comb(num_players - 1, int(k))) for k in s])
        result[:, player] = weight @ (values[with_player] - values[without])
    return result


def lime_design(num_players: int, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Coalitions for LIME with its own distribution, drawn as distinct, stratified antithetic pairs.

    LIME keeps each superpixel with probability 1/2, independently, and puts the unperturbed
    image first (``lime_image``): every coalition of ``{0, 1}^M`` is equally likely. Here the
    number kept, ``|z| ~ Binomial(M, 1/2)``, is drawn by stratified sampling (one draw from each of
    ``n`` equal-probability slices of its distribution), the kept set uniformly among the sets of
    that size **not drawn yet**, and each row comes with its complement ``1 - z`` (the binomial is
    symmetric). Every coalition keeps the same chance of being in the design, so the regression
    estimates what LIME's does; what goes is most of the sampling noise: every superpixel is kept in
    exactly half of the pairs' rows, the sizes follow their distribution up to one draw per slice,
    and no coalition is evaluated twice (LIME's independent draws repeat coalitions when ``M`` is
    small: quickshift finds about 10 superpixels on a 128-pixel radiograph). When the budget covers
    all ``2^M`` coalitions they are all used, once each: LIME's estimate without sampling error.

    Parameters
    ----------
    num_players : int
        ``M`` superpixels.
    budget : int
        Rows in all, the unperturbed image included (at least 3).

    Returns
    -------
    ndarray of uint8, shape (S, M)
        Row 0 all ones; then pairs ``(z, 1 - z)`` (``S <= budget``).

    Examples
    --------
    >>> design = lime_design(8, 9, np.random.default_rng(0))
    >>> design.shape, bool(design[0].all()), (design[1] + design[2]).tolist()
    ((9, 8), True, [1, 1, 1, 1, 1, 1, 1, 1])
    >>> len({row.tobytes() for row in lime_design(4, 100, np.random.default_rng(0))[1:]})  # all 16, once
    16
    """
    from scipy.stats import binom

    if num_players < 1 or budget < 3:
        raise ValueError(f"need at least 1 player and a budget of 3, got {num_players} and {budget}")
    rows = [np.ones(num_players, np.uint8)]
    if budget - 1 >= 2**num_players:  # every coalition, once
        codes = np.arange(2**num_players // 2)
        half = ((codes[:, None] >> np.arange(num_players)) & 1).astype(np.uint8)
        return np.stack(rows + [row for member in half for row in (member, 1 - member)])
    pairs = (budget - 1) // 2
    quantiles = (np.arange(pairs) + rng.random(pairs)) / pairs  # one uniform draw per slice
    sizes = binom.ppf(quantiles, num_players, 0.5).astype(int)
    # pairs still free for each size s (the pair {z, 1 - z} is counted under min(s, M - s))
    free = {size: comb(num_players, size) // (2 if 2 * size == num_players else 1)
            for size in range(num_players // 2 + 1)}
    taken: set[bytes] = set()
    for size in rng.permutation(sizes):
        size = int(size)
        low = min(size, num_players - size)
        if free[low] == 0:  # every pair of this size drawn: the nearest size with pairs left
            low = min((candidate for candidate in free if free[candidate]), key=lambda candidate: abs(candidate - low))
            size = low if rng.random() < 0.5 else num_players - low
        free[low] -= 1
        (row,) = _random_coalitions(num_players, size, 1, rng, taken)
        rows += [row, 1 - row]
    return np.stack(rows)
