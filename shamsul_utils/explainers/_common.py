"""Shared machinery of every explainer.

* :func:`check_inputs` validates the common call shape
  ``explain(model, images, classes=None, *, batch_size, ...)`` (and the input normalisation of
  the perturbation methods) and returns the class list;
* :func:`evaluation_mode` puts a model in eval mode (gradients stay on) and restores every
  module's training flag afterwards, also on exceptions;
* :func:`model_device` / :func:`model_dtype` say where the model lives;
* :func:`chunks` splits ``range(n)`` into consecutive slices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..models import model_device  # noqa: F401 - re-exported for the explainers

__all__ = ["check_inputs", "chunks", "evaluation_mode", "model_device", "model_dtype"]


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the model's first floating parameter; float32 if none."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Put every module of ``model`` in eval mode; restore each one's own training flag afterwards.

    Unlike inference mode, gradients stay available (Grad-CAM and LRP need a backward pass).
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def check_inputs(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[int] | None,
    *,
    batch_size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> list[int]:
    """Validate the common explainer arguments; return the list of output indices to explain.

    The number of outputs is ``model.num_classes`` when the model has it (timm models do),
    otherwise the width of the logits of one probe image. ``mean`` and ``std``, the input
    normalisation of methods that perturb the image itself, are checked when given (3 values
    each, ``std`` positive).

    Raises
    ------
    ValueError
        With a one-line message naming the bad argument.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor [N, 3, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [N, 3, H, W], got {list(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] < 2 or images.shape[3] < 2:
        raise ValueError(
            f"images must hold at least one image of at least 2 x 2 pixels, got {list(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor, got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    for name, value in (("mean", mean), ("std", std)):
        if value is not None and len(value) != 3:
            raise ValueError(f"{name} must have 3 values (one per RGB channel), got {len(value)}")
    if std is not None and any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")

    num_outputs = getattr(model, "num_classes", None)
    if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
        with evaluation_mode(model), torch.no_grad():
            probe = model(images[:1].to(device=model_device(model), dtype=model_dtype(model)))
        if probe.ndim != 2:
            raise ValueError(f"model must return logits of shape [N, classes], got {list(probe.shape)}")
        num_outputs = int(probe.shape[1])
    if classes is None:
        return list(range(num_outputs))
    if isinstance(classes, (int, np.integer)):
        raise ValueError(f"classes must be a sequence of ints or None, got the single int {classes!r}")
    classes = list(classes)
    if not classes:
        raise ValueError("classes must not be empty (use None for all classes)")
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < num_outputs:
            raise ValueError(f"classes must be ints in [0, {num_outputs}), got {c!r}")
    return [int(c) for c in classes]


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of at most ``size`` elements."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
