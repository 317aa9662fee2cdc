"""Integrated Gradients (Sundararajan et al. 2017) for every requested class, through captum.

For an input ``x``, a baseline ``x'`` and a class logit ``f_c``,

    IG_i(x) = (x_i - x'_i) * integral_0^1 d f_c(x' + a (x - x')) / d x_i  da,

which satisfies *completeness*: the attributions sum to ``f_c(x) - f_c(x')``. The integral is
captum's ``IntegratedGradients`` (Gauss-Legendre quadrature, ``n_steps`` points); this module only
batches it: every image is repeated once per requested class, so one ``attribute`` call explains
all classes, ``batch_size`` model passes at a time (``internal_batch_size``).

Not one of the paper's four methods: it is registered for the library and the workshop (a
gradient method whose maps obey an axiom participants can check), not compared in the study's
notebooks.

References
----------
Sundararajan, M., Taly, A. & Yan, Q. (2017). Axiomatic attribution for deep networks. ICML.
arXiv:1703.01365. Kokhlikyan, N. et al. (2020). Captum: a unified and generic model
interpretability library for PyTorch. arXiv:2009.07896.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..models import IMAGENET_MEAN, IMAGENET_STD
from ._common import check_inputs, evaluation_mode, model_device, model_dtype

__all__ = ["explain", "BASELINES"]

BASELINES: tuple[str, ...] = ("black", "mean")  # the image a path starts from


def explain(
    model: torch.nn.Module,
    images: torch.Tensor,
    classes: Sequence[int] | None = None,
    *,
    batch_size: int = 64,
    n_steps: int = 32,
    baseline: str = "black",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Integrated Gradients maps of every image for every requested class.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits ``[N, classes]``; run in eval mode (each module's flag restored).
    images : Tensor, shape (N, 3, H, W)
        ImageNet-normalised (``mean``, ``std``).
    classes : sequence of int, optional
        Output indices; ``None`` explains every output.
    batch_size : int
        Model passes at a time (captum's ``internal_batch_size``).
    n_steps : int
        Points of the Gauss-Legendre quadrature of the path integral.
    baseline : {"black", "mean"}
        ``"black"``: a black radiograph (gray value 0), the usual baseline for X-rays; ``"mean"``:
        the normalised zero (ImageNet's mean gray).

    Returns
    -------
    ndarray of float32, shape (N, len(classes), H, W)
        Signed attributions summed over the colour channels; each map sums to the logit's change
        from the baseline, up to the quadrature error (captum's convergence delta).
    """
    from captum.attr import IntegratedGradients

    class_list = check_inputs(model, images, classes, batch_size=batch_size)
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 2:
        raise ValueError(f"n_steps must be an int of at least 2, got {n_steps!r}")
    device, dtype = model_device(model), model_dtype(model)
    inputs = images.to(device=device, dtype=dtype)
    count, classes_count = len(inputs), len(class_list)
    repeated = inputs.repeat_interleave(classes_count, dim=0)  # image 0 for every class, then image 1 ...
    targets = list(class_list) * count
    if baseline == "black":
        value = (0.0 - torch.tensor(mean, dtype=dtype, device=device)) / torch.tensor(std, dtype=dtype, device=device)
        start = value.view(1, -1, 1, 1).expand_as(repeated).contiguous()
    else:
        start = torch.zeros_like(repeated)
    with evaluation_mode(model):
        attributions = IntegratedGradients(model).attribute(
            repeated, baselines=start, target=targets, n_steps=n_steps, method="gausslegendre",
            internal_batch_size=batch_size)
    maps = attributions.sum(dim=1).reshape(count, classes_count, *inputs.shape[-2:])
    return maps.detach().to(torch.float32).cpu().numpy()
