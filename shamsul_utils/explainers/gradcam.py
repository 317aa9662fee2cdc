"""Grad-CAM heatmaps (Selvaraju et al. 2017) for every requested class from one forward pass.

Grad-CAM weights the feature maps ``A_k`` of a target layer by the spatial mean of the
gradient of the class logit ``y_c``,

    alpha_k^c = mean_{i,j} d y_c / d A_k[i, j],      map_c = ReLU(sum_k alpha_k^c A_k),

and upsamples the map bilinearly to the input size. The result equals captum's
``LayerGradCam(model, layer).attribute(x, target=c, relu_attributions=True)`` followed by
``LayerAttribution.interpolate(attr, (H, W), "bilinear")`` (checked in ``tests/test_gradcam.py``).

All classes share one forward pass: a forward hook replaces the layer's output by a detached
copy ``A`` that requires grad, so the backward graph starts at the layer, and the gradients of
all ``C`` requested logits with respect to ``A`` come from one vectorised backward
(``torch.autograd.grad(..., is_grads_batched=True)``). For the default layer (the last dense
block) that backward only crosses ``norm5``, the global pooling and the classifier, so ``C``
classes cost about one forward pass.

References
----------
Selvaraju, R. R. et al. (2017). Grad-CAM: visual explanations from deep networks via
gradient-based localization. ICCV. arXiv:1610.02391.
Alam, M. U. et al. (2023). SHAMSUL: systematic holistic analysis to investigate medical
significance utilizing local interpretability methods in deep learning for chest radiography
pathology prediction. arXiv:2307.08003.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import last_dense_block
from ._common import check_inputs, chunks, evaluation_mode, model_device, model_dtype

__all__ = ["explain", "layer_maps"]


def _resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    if layer is None:
        return last_dense_block(model)
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise ValueError(f"layer {layer!r} is not a submodule of the model") from None
    if not isinstance(layer, nn.Module):
        raise ValueError(f"layer must be a module, a submodule name or None, got {type(layer).__name__}")
    if not any(module is layer for module in model.modules()):
        raise ValueError(f"layer {type(layer).__name__} is not a submodule of the model")
    return layer


def layer_maps(
    model: nn.Module, images: torch.Tensor, classes: Sequence[int], layer: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer activations and class-weighted sums (before ReLU) for one batch.

    The lower-level half of :func:`explain`: no validation, no upsampling; call it with the
    model in eval mode.

    Returns
    -------
    activation : Tensor, shape (N, K, h, w)
        The target layer's output ``A``.
    cams : Tensor, shape (N, C, h, w)
        ``sum_k alpha_k^c A_k`` for every requested class ``c``.
    """
    captured: dict[str, torch.Tensor] = {}

    def capture(module: nn.Module, args: object, output: object) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim < 3:
            raise ValueError(
                f"Grad-CAM layer must output one tensor [N, K, h, w], got {type(output).__name__}"
            )
        leaf = output.detach().requires_grad_(True)
        captured["A"] = leaf
        # a non-leaf copy, so that later in-place operations of the model stay legal
        return leaf.clone()

    handle = layer.register_forward_hook(capture)
    try:
        with torch.enable_grad():
            logits = model(images)
    finally:
        handle.remove()
    if "A" not in captured:
        raise ValueError("the Grad-CAM layer was not called in the model's forward pass")
    if logits.ndim != 2:
        raise ValueError(f"model must return logits of shape [N, classes], got {list(logits.shape)}")
    activation = captured["A"]
    selected = logits[:, list(classes)]  # [N, C]
    n_classes = selected.shape[1]
    if not selected.requires_grad:  # the layer does not influence the logits
        grads = torch.zeros((n_classes, *activation.shape), dtype=activation.dtype, device=activation.device)
    elif n_classes == 1:
        (grad,) = torch.autograd.grad(selected, activation, torch.ones_like(selected), allow_unused=True)
        grads = (torch.zeros_like(activation) if grad is None else grad)[None]
    else:
        # one-hot cotangents [C, N, C]: row c asks for d y_c / d A, all C in one batched backward
        eye = torch.eye(n_classes, dtype=selected.dtype, device=selected.device)
        cotangents = eye[:, None, :].expand(n_classes, *selected.shape).contiguous()
        (grads,) = torch.autograd.grad(
            selected, activation, cotangents, is_grads_batched=True, allow_unused=True
        )
        if grads is None:
            grads = torch.zeros(
                (n_classes, *activation.shape), dtype=activation.dtype, device=activation.device
            )
    with torch.no_grad():
        spatial = tuple(range(3, grads.ndim))
        alphas = grads.mean(dim=spatial, keepdim=True)  # [C, N, K, 1, 1]
        cams = (alphas * activation.detach()[None]).sum(dim=2)  # [C, N, h, w]
    return activation.detach(), cams.transpose(0, 1)


def explain(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[int] | None = None,
    *,
    batch_size: int = 32,
    layer: nn.Module | str | None = None,
    relu: bool = True,
    upsample: bool = True,
) -> np.ndarray:
    """Grad-CAM heatmaps of every image for every requested class.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits ``[N, classes]``; run in eval mode here (each module's
        training flag is restored afterwards). CUDA is used when the model is on CUDA.
    images : Tensor, shape (N, 3, H, W)
        ImageNet-normalised images.
    classes : sequence of int, optional
        Indices into the model's outputs; ``None`` explains every output.
    batch_size : int
        Images per forward pass (all classes share it).
    layer : torch.nn.Module or str, optional
        The target layer (a submodule or its dotted name); default: the last dense block
        (``features.denseblockN``, the paper's choice).
    relu : bool
        Apply the ReLU of the original method (captum's ``relu_attributions=True``).
    upsample : bool
        Resize the maps bilinearly to ``(H, W)`` (``align_corners=False``, as captum's
        ``LayerAttribution.interpolate``). With ``False`` the maps keep the layer's size.

    Returns
    -------
    ndarray of float32, shape (N, len(classes), H, W)
        One map per image and class (``(h, w)`` of the layer when ``upsample=False``).

    Raises
    ------
    ValueError
        Bad images (ndim, channels, dtype, non-finite values), class index out of range,
        a layer that is not part of the model or does not output one 4-D tensor.

    Notes
    -----
    Deviations from / choices beyond Selvaraju et al. (2017):

    * The target layer is the **output of the last dense block**, i.e. before the final
      ``norm5`` BatchNorm + ReLU of the DenseNet (captum's default
      ``attribute_to_layer_input=False`` on that block; the SHAMSUL paper names "the last dense
      block"). Pass ``layer="features.norm5"`` for the post-BN-ReLU features.
    * The ReLU is optional (``relu``), as in captum; with ``relu=False`` maps are signed.
    * The gradient is that of the **logit**, not of the sigmoid probability (Grad-CAM's
      "score before the softmax"); for a multi-label sigmoid head this is the usual choice.
    * Upsampling is bilinear with ``align_corners=False``; the original uses bilinear
      upsampling without fixing the corner convention.

    Examples
    --------
    >>> import torch
    >>> from shamsul_utils.models import build_model
    >>> model = build_model("densenet_small", growth_rate=8, block_config=(2, 2, 2))
    >>> maps = explain(model, torch.randn(2, 3, 64, 64), classes=[2, 5])
    >>> maps.shape, maps.dtype
    ((2, 2, 64, 64), dtype('float32'))
    """
    class_list = check_inputs(model, images, classes, batch_size=batch_size)
    target = _resolve_layer(model, layer)
    device, dtype = model_device(model), model_dtype(model)
    n, _, height, width = images.shape
    results: list[np.ndarray] = []
    with evaluation_mode(model):
        for part in chunks(n, int(batch_size)):
            batch = images[part].to(device=device, dtype=dtype)
            _, cams = layer_maps(model, batch, class_list, target)
            if relu:
                cams = F.relu(cams)
            if upsample:
                cams = F.interpolate(cams, size=(height, width), mode="bilinear", align_corners=False)
            results.append(cams.to("cpu", torch.float32).numpy())
    return np.concatenate(results, axis=0)
