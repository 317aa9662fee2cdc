"""Kernel SHAP over superpixels (Lundberg & Lee 2017), driven through ``shap.KernelExplainer``.

As in the SHAMSUL study (and shap's "explain an image with KernelExplainer" example), the
players are 50 SLIC superpixels and the explainer sees a coalition vector ``z`` in {0, 1}^M;
the model function maps coalitions to masked images and to the 14 sigmoid probabilities.
shap itself samples the coalitions and solves the constrained weighted least squares; this
module only supplies a fast, memory-light model function: it builds the masked images in torch,
``batch_size`` at a time (shap would otherwise hold all ``nsamples`` images: 4.4 GB at 224 px),
and returns every class from the same model calls.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..models import IMAGENET_MEAN, IMAGENET_STD, denormalize
from ._perturbation import (
    CoalitionModel,
    SegmentExplanation,
    check_inputs,
    check_seed,
    explain_images,
    fill_image,
    model_device,
    model_dtype,
    relabel_segments,
)
from .sampling import ESTIMATORS, shapley_design, shapley_values

__all__ = ["FILLS", "explain", "explain_segments", "slic_segments"]

FILLS: tuple[str, ...] = ("mean", "black", "paper")  # named fills (a number is also accepted)


def slic_segments(
    unit_image: np.ndarray, *, n_segments: int = 50, compactness: float = 30.0, sigma: float = 3.0
) -> np.ndarray:
    """SHAMSUL's superpixels: ``skimage.segmentation.slic(image, n_segments=50, compactness=30,
    sigma=3, start_label=0)`` on the [0, 1] RGB image (Achanta et al. 2012).

    ``start_label=0`` is fixed because the coalition index ``j`` addresses segment ``j``, as in
    shap's image example written for skimage < 0.19 (whose default was 0); with skimage's
    current default (1) that example never hides the last segment. SLIC may return fewer than
    ``n_segments`` segments. Returns int64 labels ``0 .. M-1``.
    """
    from skimage.segmentation import slic

    segments = slic(unit_image, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0)
    return relabel_segments(np.asarray(segments))


@contextlib.contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (which shap.KernelExplainer samples from); restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _valid_l1_reg(l1_reg: object) -> bool:
    if isinstance(l1_reg, str):
        return l1_reg in ("aic", "bic", "auto") or bool(re.fullmatch(r"num_features\(\d+\)", l1_reg))
    return isinstance(l1_reg, (bool, int, float)) and (isinstance(l1_reg, bool) or l1_reg >= 0)


def explain_segments(
    model: nn.Module,
    image: torch.Tensor,
    classes: Sequence[int],
    *,
    batch_size: int = 50,
    seed: int = 0,
    nsamples: int = 1000,
    fill: str | float = "mean",
    l1_reg: str | float | bool = "aic",
    segmentation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    first_layer_shortcut: bool = True,
    estimator: str = "paper",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SegmentExplanation:
    """Kernel SHAP values of one normalised image ``[3, H, W]`` per class and segment.

    The lower-level half of :func:`explain` (which validates the arguments); it returns the
    segments, the Shapley values ``[C, M]`` and ``f(all hidden)`` ``[C]``. Call it inside
    :func:`~shamsul_utils.explainers._perturbation.inference_evaluation_mode`.
    """
    with warnings.catch_warnings():  # shap's import warns about matplotlib colormap API changes
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        import shap
    from threadpoolctl import threadpool_limits

    device, dtype = model_device(model), model_dtype(model)
    unit = denormalize(image[None], mean, std)[0]
    unit_clipped = np.clip(unit, 0.0, 1.0)
    if segmentation_fn is None:
        segments = slic_segments(unit_clipped)
    else:
        segments = np.asarray(segmentation_fn(unit_clipped))
        if segments.shape != unit.shape[:2]:
            raise ValueError(
                f"segmentation_fn must return labels of shape {unit.shape[:2]}, got {segments.shape}"
            )
        segments = relabel_segments(segments)
    num_segments = int(segments.max()) + 1
    evaluated = min(nsamples, 2**num_segments - 2) if num_segments <= 30 else nsamples
    if estimator == "paper" and l1_reg in ("aic", "bic", "auto") and num_segments > 1 and 2 * evaluated <= num_segments + 1:
        # shap's LassoLarsIC needs more rows (2 per sample) than columns; say so in one line
        raise ValueError(
            f"nsamples={nsamples} is too small for l1_reg={l1_reg!r} with {num_segments} segments; "
            f"use nsamples > {(num_segments + 1) // 2} or l1_reg=False"
        )

    normalised_fill = (fill_image(fill, unit) - np.asarray(mean)) / np.asarray(std)
    fill_t = torch.from_numpy(normalised_fill.transpose(2, 0, 1)).to(device, dtype)
    image_t = image.to(device, dtype)
    segments_t = torch.from_numpy(segments).to(device)

    predict = CoalitionModel(
        model, image_t, fill_t, segments_t, classes, batch_size=batch_size, shortcut=first_layer_shortcut
    )

    if estimator == "fast":
        if num_segments < 2:  # one segment: its value is f(image) - f(all hidden), nothing to sample
            ends = predict(np.stack([np.zeros(num_segments), np.ones(num_segments)]))
            return SegmentExplanation(segments=segments, weights=(ends[1] - ends[0])[:, None], base=ends[0].copy())
        budget = max(4, min(nsamples, 2**num_segments))
        coalitions, weights = shapley_design(num_segments, budget, np.random.default_rng(seed))
        outputs = predict(coalitions)
        values = shapley_values(coalitions, weights, outputs)
        return SegmentExplanation(segments=segments, weights=values, base=outputs[0].copy())

    # f(all hidden) and f(image) in one call; shap asks for them separately (background at
    # construction, the instance in explain), so serve those two rows from this cache.
    ends = np.stack([np.zeros(num_segments), np.ones(num_segments)])
    end_outputs = predict(ends)

    def model_function(coalitions: np.ndarray) -> np.ndarray:
        coalitions = np.asarray(coalitions)
        if coalitions.shape[0] == 1:
            if not coalitions.any():
                return end_outputs[:1].copy()
            if coalitions.all():
                return end_outputs[1:].copy()
        return predict(coalitions)

    # One BLAS thread for shap's small least-squares problems (a 2 nsamples x M lasso path per
    # class): multi-threaded BLAS made them several times slower on a busy machine. The model
    # (torch) keeps its own threads.
    with _seeded_global_numpy(seed), threadpool_limits(1, user_api="blas"):
        explainer = shap.KernelExplainer(model_function, ends[:1])
        values = explainer.shap_values(ends[1:], nsamples=nsamples, l1_reg=l1_reg, silent=True)
    values = np.asarray(values, dtype=np.float64).reshape(num_segments, len(classes))
    return SegmentExplanation(segments=segments, weights=values.T.copy(), base=end_outputs[0].copy())


def explain(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[int] | None = None,
    *,
    batch_size: int = 50,
    seed: int = 0,
    nsamples: int = 1000,
    fill: str | float = "mean",
    l1_reg: str | float | bool = "aic",
    segmentation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    first_layer_shortcut: bool = True,
    estimator: str = "paper",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Kernel SHAP heatmaps: every pixel gets its superpixel's Shapley value, per class.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits ``[N, K]``. The explained function is
        ``torch.sigmoid(model(x))`` (probabilities, shap's identity link). The model is run in
        eval mode under ``torch.inference_mode()`` on its own device.
    images : Tensor, shape (N, 3, H, W)
        Images normalised with ``mean`` and ``std``.
    classes : sequence of int, optional
        Output indices to explain; ``None`` = all ``K``. All are computed from the same samples.
    batch_size : int
        Masked images per model call.
    seed : int
        ``shap.KernelExplainer`` samples coalitions from numpy's *global* RNG; it is seeded with
        ``seed`` for each image and restored afterwards (not thread-safe). Every image starts
        from the same seed, so an image's map does not depend on the others.
    nsamples : int
        ``estimator="paper"``: coalitions evaluated per image (shap's ``nsamples``), besides the
        image and the all-hidden image. ``estimator="fast"``: model evaluations per image in all.
    fill : {"mean", "black", "paper"} or float
        What hidden superpixels show, in the un-normalised [0, 1] RGB image (then normalised).
        ``"mean"`` (default): the image's mean colour, a flat mid-grey for a radiograph.
        ``"paper"``: 1.0 = 255 = white, as in the SHAMSUL code. ``"black"``: 0, as LIME.
        A number: that value in [0, 1] space.
    l1_reg : str, float or bool
        shap's feature selection before the constrained least squares. Default ``"aic"``: what
        shap's former default ``"auto"`` did here (the SHAMSUL era, shap < 0.47: AIC-selected
        LassoLars when under 20 % of the 2^M coalitions are evaluated). ``False``: the plain
        Kernel SHAP estimator of Lundberg & Lee, every segment gets a value. shap >= 0.47's own
        default is ``"num_features(10)"``.
    segmentation_fn : callable, optional
        Maps the [0, 1] RGB image ``[H, W, 3]`` (float64) to integer labels (renumbered to
        ``0 .. M-1``); default :func:`slic_segments` (50 SLIC segments, compactness 30, sigma 3).
    first_layer_shortcut : bool
        Evaluate the model's first convolution as a matrix product over per-segment responses
        (exact up to float rounding; see
        :class:`~shamsul_utils.explainers._perturbation.CoalitionModel`). ``False``: build
        every masked image and run the whole model on it.
    estimator : {"paper", "fast"}
        ``"paper"`` (default): shap's ``KernelExplainer`` with ``l1_reg``, the SHAMSUL route.
        ``"fast"``: Kernel SHAP with leverage-score sampling
        (:func:`~shamsul_utils.explainers.sampling.shapley_design`: sizes in proportion to their
        leverage, paired, without replacement, outer sizes enumerated; the same constrained
        least squares, :func:`~shamsul_utils.explainers.sampling.shapley_values`), which reaches
        shap's accuracy at 1000 samples with a fraction of them (``benchmarks/README.md``);
        every segment gets a value (no ``l1_reg`` selection), and the ``seed`` seeds its own
        generator (numpy's global state is untouched).
    mean, std : sequence of 3 float
        The normalisation of ``images`` (ImageNet by default).

    Returns
    -------
    ndarray of float32, shape (N, len(classes), H, W)
        Shapley value of each pixel's superpixel (signed). Per image and class the values of
        the segments sum to ``f(image) - f(all hidden)`` (efficiency).

    Raises
    ------
    ValueError
        For malformed images, classes, or options.

    Notes
    -----
    The estimator is shap's own ``KernelExplainer`` (0.51): it enumerates whole coalition sizes
    while the budget allows (for M = 50 and 1000 samples: the 100 coalitions of size 1 and 49),
    samples the rest from the Shapley kernel, and solves the weighted least squares under the
    constraint ``sum(phi) = f(x) - f(baseline)``, one solve per class on the same samples.
    Deviations from the SHAMSUL code, and why:

    * fill: the SHAMSUL code hid segments with white (255). On a chest radiograph white is
      bone, fluid or a device: painting a segment white can *add* evidence of an effusion,
      opacity or support device instead of removing information, so attributions mix both.
      The image's mean colour removes the segment's content without mimicking a finding, and
      is the usual neutral baseline; ``fill="paper"`` restores the original.
    * SLIC runs on the [0, 1] RGB image (the example fed 0-255 floats to CIELAB conversion,
      which expects [0, 1]) with ``start_label=0`` (see :func:`slic_segments`).
    * The images are built in torch, ``batch_size`` at a time, inside the model function that
      shap calls with the coalition matrix; ``f(all hidden)`` and ``f(image)`` are computed in
      one call and served from a cache. Same numbers as the plain use of shap
      (``tests/test_shap.py``), at the cost of about ``nsamples + 2`` forward passes. The
      batches are in ``channels_last`` memory format (same values, faster convolutions on CPU).
      By default the model's first convolution is evaluated from per-segment responses
      instead (``first_layer_shortcut``): the same function of the coalition, float rounding
      aside.
    * shap's small least-squares problems run with one BLAS thread (threadpoolctl); with
      multi-threaded BLAS they were several times slower on a busy machine (benchmarks/README.md).

    References
    ----------
    .. [1] S. M. Lundberg, S.-I. Lee, "A unified approach to interpreting model predictions",
       NeurIPS 2017. https://arxiv.org/abs/1705.07874
    .. [2] R. Achanta et al., "SLIC superpixels compared to state-of-the-art superpixel
       methods", IEEE TPAMI 34(11), 2012.
    .. [3] M. U. Alam et al., "SHAMSUL: Systematic holistic analysis to investigate medical
       significance utilizing local interpretability methods in deep learning for chest
       radiography pathology prediction", 2023. https://arxiv.org/abs/2307.08003

    Examples
    --------
    >>> import torch
    >>> from shamsul_utils.models import build_model
    >>> from shamsul_utils.explainers import shap
    >>> model = build_model("densenet_small", growth_rate=8, block_config=(2, 2, 2))
    >>> maps = shap.explain(model, torch.randn(1, 3, 32, 32), classes=[2, 5], nsamples=20)
    >>> maps.shape, maps.dtype
    ((1, 2, 32, 32), dtype('float32'))
    """
    classes = check_inputs(model, images, classes, batch_size=batch_size, mean=mean, std=std)
    if isinstance(nsamples, bool) or not isinstance(nsamples, int) or nsamples < 1:
        raise ValueError(f"nsamples must be a positive int, got {nsamples!r}")
    if isinstance(fill, str) and fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS} or a number, got {fill!r}")
    seed = check_seed(seed)
    if not _valid_l1_reg(l1_reg):
        raise ValueError(f"l1_reg must be 'aic', 'bic', 'num_features(k)', a number or False, got {l1_reg!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    return explain_images(explain_segments, model, images, classes, batch_size=batch_size, seed=seed,
                          nsamples=nsamples, fill=fill, l1_reg=l1_reg, segmentation_fn=segmentation_fn,
                          first_layer_shortcut=bool(first_layer_shortcut), estimator=estimator, mean=mean, std=std)
