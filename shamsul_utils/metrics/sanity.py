"""Sanity checks of explanations: how much a map changes when the model is randomised.

References
----------
Adebayo, J. et al. (2018). Sanity checks for saliency maps. NeurIPS.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy import stats

__all__ = ["parameter_randomisation_similarity", "randomise_model"]


def parameter_randomisation_similarity(
    maps_trained, maps_random, *, measure: str = "spearman", absolute: bool = False
) -> np.ndarray:
    """Similarity of each map before and after model randomisation (Adebayo et al. 2018).

    Parameters
    ----------
    maps_trained, maps_random : array-like, shape (N, C, h, w)
    measure : {"spearman", "ssim"}
        Spearman rank correlation of the pixels (mid-ranks, as ``scipy.stats.spearmanr``), or
        SSIM (``skimage.metrics.structural_similarity``, 7 x 7 window or the largest odd window
        that fits) of the min-max normalised maps.
    absolute : bool
        Compare ``|map|`` (Adebayo et al. report both).

    Returns
    -------
    ndarray, shape (N, C)
        High similarity means the explanation does not depend on what the model learned;
        NaN for constant maps.
    """
    first = np.asarray(maps_trained, dtype=float)
    second = np.asarray(maps_random, dtype=float)
    if first.shape != second.shape:
        raise ValueError(f"maps_trained {first.shape} and maps_random {second.shape} differ in shape")
    if absolute:
        first, second = np.abs(first), np.abs(second)
    leading = first.shape[:-2]
    first = first.reshape(-1, first.shape[-2] * first.shape[-1])
    second = second.reshape(first.shape)
    if measure == "spearman":
        ranks_a = stats.rankdata(first, axis=1)
        ranks_b = stats.rankdata(second, axis=1)
        ranks_a -= ranks_a.mean(axis=1, keepdims=True)
        ranks_b -= ranks_b.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            result = (ranks_a * ranks_b).sum(axis=1) / np.sqrt(
                (ranks_a**2).sum(axis=1) * (ranks_b**2).sum(axis=1)
            )
    elif measure == "ssim":
        from skimage.metrics import structural_similarity

        shape = np.asarray(maps_trained).shape[-2:]
        window = min(7, min(shape) - (1 - min(shape) % 2))  # skimage's 7, or the largest odd side
        result = np.full(first.shape[0], np.nan)
        for i, (x, y) in enumerate(zip(first, second, strict=True)):
            if np.ptp(x) > 0 and np.ptp(y) > 0:
                x, y = (x - x.min()) / np.ptp(x), (y - y.min()) / np.ptp(y)
                result[i] = structural_similarity(
                    x.reshape(shape), y.reshape(shape), data_range=1.0, win_size=window
                )
    else:
        raise ValueError(f"measure must be 'spearman' or 'ssim', got {measure!r}")
    return result.reshape(leading)


def randomise_model(
    model: torch.nn.Module, seed: int = 0, *, top_modules: int | None = None
) -> torch.nn.Module:
    """A deep copy of ``model`` with re-initialised parameters (Adebayo et al. 2018).

    Parameters
    ----------
    model : torch.nn.Module
        Left unchanged.
    seed : int
        Seeds the re-initialisation; the global random state is restored afterwards.
    top_modules : int, optional
        None (default): full randomisation, every module with ``reset_parameters``. An integer
        ``k``: only the last ``k`` such modules in registration order, which for DenseNet is the
        forward order, i.e. one step of Adebayo's cascading randomisation from the classifier down.

    Notes
    -----
    Each module is reset with its own ``reset_parameters`` (PyTorch's default initialisation):
    convolutions and linear layers get new random weights; batch-norm layers return to weight 1,
    bias 0 and fresh running statistics. Adebayo et al. draw weights from a truncated normal;
    the test (does the map change?) does not depend on that choice. Parameters of modules
    without ``reset_parameters`` keep their values.
    """
    randomised = copy.deepcopy(model)
    modules = [m for m in randomised.modules() if callable(getattr(m, "reset_parameters", None))]
    if top_modules is not None:
        modules = modules[len(modules) - top_modules :] if top_modules > 0 else []
    devices = sorted({p.device.index or 0 for p in randomised.parameters() if p.is_cuda})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with torch.no_grad():
            for module in modules:
                module.reset_parameters()
    return randomised
