"""LIME for images (Ribeiro et al. 2016), batched and fitted for all classes at once.

The result equals ``lime.lime_image.LimeImageExplainer(random_state=seed).explain_instance(...)``
with the package's defaults (quickshift superpixels, cosine distance, kernel width 0.25, Ridge
with ``alpha=1``) and ``hide_color=0``, ``num_samples=1000``, all labels, as in the SHAMSUL study:
same segments, same random coalitions, same weights (``tests/test_lime.py`` checks this to 1e-6).
What differs is the cost: the perturbed images are built in torch, ``batch_size`` at a time, and
every class is fitted from the same model calls with one multi-target ridge solve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
from .sampling import ESTIMATORS, lime_design

__all__ = ["explain", "explain_segments", "quickshift_segments"]


def quickshift_segments(unit_image: np.ndarray, *, rng: int = 42) -> np.ndarray:
    """LIME's default image segmentation: quickshift superpixels (Vedaldi & Soatto 2008).

    Calls ``skimage.segmentation.quickshift(image, kernel_size=4, max_dist=200, ratio=0.2,
    rng=42)``, which is what ``LimeImageExplainer.explain_instance`` runs with the pinned
    packages: lime 0.2.0.1 passes ``random_seed=...``, but its ``SegmentationAlgorithm`` silently
    drops arguments the skimage function does not accept, and skimage (>= 0.21) renamed that
    argument to ``rng`` (default 42). The seed only breaks ties between equal densities.
    ``unit_image`` is the RGB image in [0, 1] (quickshift converts it to CIELAB, which expects
    that range). Returns int64 labels ``0 .. M-1``.
    """
    from skimage.segmentation import quickshift

    segments = quickshift(unit_image, kernel_size=4, max_dist=200, ratio=0.2, rng=rng)
    return np.asarray(segments, dtype=np.int64)


def _kernel(distances: np.ndarray, kernel_width: float) -> np.ndarray:
    # lime_image.LimeImageExplainer's default kernel
    return np.sqrt(np.exp(-(distances**2) / kernel_width**2))


def explain_segments(
    model: nn.Module,
    image: torch.Tensor,
    classes: Sequence[int],
    *,
    batch_size: int = 50,
    seed: int = 0,
    num_samples: int = 1000,
    hide_color: float | None = 0.0,
    kernel_width: float = 0.25,
    segmentation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    first_layer_shortcut: bool = True,
    estimator: str = "paper",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SegmentExplanation:
    """LIME weights of one normalised image ``[3, H, W]`` per class and segment.

    The lower-level half of :func:`explain` (which validates the arguments); it returns the
    segments, the ridge coefficients ``[C, M]`` and the intercepts ``[C]``. Call it inside
    :func:`~shamsul_utils.explainers._perturbation.inference_evaluation_mode`.
    """
    import sklearn.metrics
    from sklearn.linear_model import Ridge

    device, dtype = model_device(model), model_dtype(model)
    unit = denormalize(image[None], mean, std)[0]
    unit_clipped = np.clip(unit, 0.0, 1.0)
    # The same random stream as LimeImageExplainer(random_state=seed).explain_instance: it draws the
    # segmentation seed first (even when a segmentation_fn is given), then the coalitions.
    random_state = np.random.RandomState(seed)
    random_state.randint(0, high=1000)  # lime's segmentation seed, unused (see quickshift_segments)
    if segmentation_fn is None:
        segments = quickshift_segments(unit_clipped)
    else:
        segments = np.asarray(segmentation_fn(unit_clipped))
        if segments.shape != unit.shape[:2]:
            raise ValueError(
                f"segmentation_fn must return labels of shape {unit.shape[:2]}, got {segments.shape}"
            )
        segments = relabel_segments(segments)
    num_segments = int(segments.max()) + 1

    if estimator == "fast":  # LIME's distribution, as stratified antithetic pairs
        data = lime_design(num_segments, num_samples, np.random.default_rng(seed)).astype(np.int64)
    else:
        data = random_state.randint(0, 2, num_samples * num_segments).reshape((num_samples, num_segments))
        data[0, :] = 1
    fill = fill_image("segment_mean" if hide_color is None else float(hide_color), unit, segments)
    normalised_fill = (fill - np.asarray(mean)) / np.asarray(std)
    fill_t = torch.from_numpy(normalised_fill.transpose(2, 0, 1)).to(device, dtype)
    image_t = image.to(device, dtype)
    segments_t = torch.from_numpy(segments).to(device)
    predictor = CoalitionModel(
        model, image_t, fill_t, segments_t, classes, batch_size=batch_size, shortcut=first_layer_shortcut
    )
    labels = predictor(data)

    distances = sklearn.metrics.pairwise_distances(data, data[0].reshape(1, -1), metric="cosine").ravel()
    weights = _kernel(distances, kernel_width)
    # lime fits Ridge(alpha=1) per label on the features chosen by feature_selection='auto'; with
    # explain_instance's num_features=100000 > M that is 'highest_weights' keeping all M features
    # (in another column order, which does not change a ridge solution). One multi-target ridge
    # solve gives every label's coefficients at once.
    # The fast design may hold fewer rows than num_samples (all 2^M coalitions, once each, when they
    # are fewer): the penalty is then scaled so that it weighs against the data as against
    # num_samples of LIME's rows, i.e. the estimate is LIME's at num_samples, less its sampling noise.
    penalty = len(data) / num_samples if estimator == "fast" else 1.0
    ridge = Ridge(alpha=penalty, fit_intercept=True).fit(data, labels, sample_weight=weights)
    coefficients = np.asarray(ridge.coef_, dtype=np.float64).reshape(len(classes), num_segments)
    intercept = np.asarray(ridge.intercept_, dtype=np.float64).reshape(len(classes))
    return SegmentExplanation(segments=segments, weights=coefficients, base=intercept)


def explain(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[int] | None = None,
    *,
    batch_size: int = 50,
    seed: int = 0,
    num_samples: int = 1000,
    hide_color: float | None = 0.0,
    kernel_width: float = 0.25,
    segmentation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    first_layer_shortcut: bool = True,
    estimator: str = "paper",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """LIME heatmaps: every pixel gets its superpixel's local linear weight, per class.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits ``[N, K]``. The explained function is
        ``torch.sigmoid(model(x))``: the multi-label probabilities, as LIME sees them. The model
        is run in eval mode under ``torch.inference_mode()`` on its own device.
    images : Tensor, shape (N, 3, H, W)
        Images normalised with ``mean`` and ``std``.
    classes : sequence of int, optional
        Output indices to explain; ``None`` = all ``K``.
    batch_size : int
        Perturbed images per model call (lime's ``batch_size``).
    seed : int
        Seeds a ``numpy.random.RandomState`` per image, used exactly as
        ``LimeImageExplainer(random_state=seed)``: one draw for lime's segmentation seed (which
        the pinned packages ignore, see :func:`quickshift_segments`), then the coalitions.
        Every image starts from the same seed, so an image's map does not depend on the others.
    num_samples : int
        Perturbed samples per image, the first one being the unperturbed image.
    hide_color : float or None
        Value of hidden superpixels in the un-normalised [0, 1] RGB image: 0 = black (LIME's
        ``hide_color=0``, the SHAMSUL setting), i.e. ``-mean / std`` in the normalised input.
        ``None``: each superpixel's mean colour (lime's ``hide_color=None``).
    kernel_width : float
        Width of the exponential kernel on the cosine distance between coalitions.
    segmentation_fn : callable, optional
        Maps the [0, 1] RGB image ``[H, W, 3]`` (float64) to integer labels (renumbered to
        ``0 .. M-1`` in increasing order, which lime itself assumes); default
        :func:`quickshift_segments` with LIME's parameters.
    first_layer_shortcut : bool
        Evaluate the model's first convolution as a matrix product over per-segment responses
        (exact up to float rounding; see
        :class:`~shamsul_utils.explainers._perturbation.CoalitionModel`). ``False``: build
        every masked image and run the whole model on it.
    estimator : {"paper", "fast"}
        ``"paper"`` (default): lime's own coalitions (independent draws), the SHAMSUL route.
        ``"fast"``: the same distribution drawn as stratified antithetic pairs
        (:func:`~shamsul_utils.explainers.sampling.lime_design`, the unperturbed image first,
        ``num_samples - 1`` rounded down to pairs), then the same weights and ridge fit; it
        estimates LIME's weights with a fraction of the samples (``benchmarks/README.md``).
    mean, std : sequence of 3 float
        The normalisation of ``images`` (ImageNet by default).

    Returns
    -------
    ndarray of float32, shape (N, len(classes), H, W)
        Ridge coefficient of each pixel's superpixel (signed).

    Raises
    ------
    ValueError
        For malformed images, classes, or options.

    Notes
    -----
    Follows ``lime.lime_image`` 0.2.0.1 step by step: coalitions ``z ~ Bernoulli(0.5)^M`` with
    ``z_0 = 1``; proximity ``sqrt(exp(-d^2 / 0.25^2))`` with ``d`` the cosine distance to ``z_0``;
    a weighted ``Ridge(alpha=1)`` per label on all superpixels. Deviations, none of which change
    the weights:

    * the perturbed images are built in torch ``batch_size`` at a time (lime builds each on
      the CPU with a Python loop over segments); all classes come from the same model calls and
      one multi-target ridge solve (lime's ``local_exp`` per label is the same solve); the
      batches are in ``channels_last`` memory format (same values, faster convolutions on CPU);
    * by default the model's first convolution is evaluated from per-segment responses
      (``first_layer_shortcut``): the same function of the coalition, float rounding aside;
    * quickshift sees the [0, 1] RGB image clipped to [0, 1] (the test gives lime the same).

    Deviations from the paper that lime (and so SHAMSUL) already makes: the paper's K-Lasso
    keeps K features; ``explain_instance``'s ``num_features=100000`` keeps every superpixel and
    fits a ridge, which this function does (``num_features`` is not exposed). The distance is
    lime_image's plain cosine distance (lime_text scales it by 100; lime_image does not).

    References
    ----------
    .. [1] M. T. Ribeiro, S. Singh, C. Guestrin, "Why should I trust you? Explaining the
       predictions of any classifier", KDD 2016. https://arxiv.org/abs/1602.04938
    .. [2] M. U. Alam et al., "SHAMSUL: Systematic holistic analysis to investigate medical
       significance utilizing local interpretability methods in deep learning for chest
       radiography pathology prediction", 2023. https://arxiv.org/abs/2307.08003

    Examples
    --------
    >>> import torch
    >>> from shamsul_utils.models import build_model
    >>> from shamsul_utils.explainers import lime
    >>> model = build_model("densenet_small", growth_rate=8, block_config=(2, 2, 2))
    >>> maps = lime.explain(model, torch.randn(1, 3, 32, 32), classes=[2, 5], num_samples=20)
    >>> maps.shape, maps.dtype
    ((1, 2, 32, 32), dtype('float32'))
    """
    classes = check_inputs(model, images, classes, batch_size=batch_size, mean=mean, std=std)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
    if not isinstance(kernel_width, (int, float)) or not kernel_width > 0:
        raise ValueError(f"kernel_width must be a positive number, got {kernel_width!r}")
    if hide_color is not None and (isinstance(hide_color, bool) or not isinstance(hide_color, (int, float))):
        raise ValueError(f"hide_color must be a number or None, got {hide_color!r}")
    if estimator not in ESTIMATORS or (estimator == "fast" and num_samples < 3):
        raise ValueError(f"estimator must be one of {ESTIMATORS} (fast needs num_samples >= 3), got {estimator!r}")
    return explain_images(explain_segments, model, images, classes, batch_size=batch_size, seed=check_seed(seed),
                          num_samples=num_samples, hide_color=hide_color, kernel_width=float(kernel_width),
                          segmentation_fn=segmentation_fn, first_layer_shortcut=bool(first_layer_shortcut),
                          estimator=estimator, mean=mean, std=std)
