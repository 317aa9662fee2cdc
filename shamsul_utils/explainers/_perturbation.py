"""Shared machinery of the perturbation explainers (LIME and Kernel SHAP).

Both methods explain an image through its superpixels: they switch segments on and off,
evaluate the model on the masked images and fit one weight per segment. This module holds the
parts they share:

* :func:`check_seed` refuses a seed that is not an int;
* :func:`explain_images` runs a per-image segment explanation over a batch and paints the maps;
* :func:`fill_image` turns a fill option ("mean", "black", "paper", a number) into a fill image;
* :class:`CoalitionModel` evaluates ``sigmoid(model(x))`` for coalition rows of one image, every
  requested class from the same model calls: by building the masked images in torch,
  ``batch_size`` at a time (never all samples at once), or by its first-layer shortcut, which
  evaluates the model's first convolution from per-segment responses and builds no image;
* :func:`paint_segments` spreads per-segment weights back to pixels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ._common import check_inputs, evaluation_mode, model_device, model_dtype

__all__ = [
    "SHORTCUT_MAX_BYTES",
    "CoalitionModel",
    "SegmentExplanation",
    "check_inputs",
    "check_seed",
    "explain_images",
    "inference_evaluation_mode",
    "fill_image",
    "model_device",
    "model_dtype",
    "paint_segments",
    "relabel_segments",
]


class SegmentExplanation(NamedTuple):
    """One image explained per segment.

    Attributes
    ----------
    segments : ndarray of int64, shape (H, W)
        Segment index of every pixel, ``0 .. M-1``.
    weights : ndarray of float64, shape (C, M)
        One weight per class and segment (LIME coefficient or Shapley value).
    base : ndarray of float64, shape (C,)
        LIME: the intercept of the local linear model. SHAP: ``f(all segments hidden)``.
    """

    segments: np.ndarray
    weights: np.ndarray
    base: np.ndarray


@contextlib.contextmanager
def inference_evaluation_mode(model: nn.Module) -> Iterator[None]:
    """:func:`~shamsul_utils.explainers._common.evaluation_mode` (eval mode, every module's own
    training flag restored afterwards) inside ``torch.inference_mode`` (no gradients: the
    perturbation methods only run the model forward)."""
    with evaluation_mode(model), torch.inference_mode():
        yield


def check_seed(seed) -> int:
    """``seed`` as an int; a one-line ``ValueError`` for anything else (bools included)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return int(seed)


def explain_images(explain_segments, model: nn.Module, images: torch.Tensor, classes: Sequence[int],
                   **options) -> np.ndarray:
    """Maps ``[N, C, H, W]`` (float32): ``explain_segments(model, image, classes, **options)``
    for every image, in inference mode, each segment's weight painted on its pixels."""
    height, width = images.shape[2:]
    maps = np.empty((images.shape[0], len(classes), height, width), dtype=np.float32)
    with inference_evaluation_mode(model):
        for index, image in enumerate(images):
            result = explain_segments(model, image, classes, **options)
            maps[index] = paint_segments(result.weights, result.segments)
    return maps


def relabel_segments(segments: np.ndarray) -> np.ndarray:
    """Segment labels renumbered to ``0 .. M-1`` in increasing order of the original labels."""
    _, inverse = np.unique(segments, return_inverse=True)
    return inverse.reshape(segments.shape).astype(np.int64)


def fill_image(fill: str | float, unit_image: np.ndarray, segments: np.ndarray | None = None) -> np.ndarray:
    """The image that hidden segments show, float64 ``[H, W, 3]`` in [0, 1] RGB space.

    Parameters
    ----------
    fill : {"mean", "black", "paper", "segment_mean"} or float
        ``"mean"``: the image's per-channel mean colour (a flat grey for an X-ray).
        ``"black"``: 0. ``"paper"``: 1.0, i.e. 255 in 0-255 space, white as in the SHAMSUL code.
        ``"segment_mean"``: each segment's own mean colour (LIME's ``hide_color=None``).
        A number: that value in every channel.
    unit_image : ndarray, shape (H, W, 3)
        The image in [0, 1] RGB space.
    segments : ndarray, shape (H, W), optional
        Needed only for ``"segment_mean"``.
    """
    if isinstance(fill, str):
        if fill == "mean":
            return np.broadcast_to(unit_image.mean(axis=(0, 1)), unit_image.shape).copy()
        if fill == "black":
            return np.zeros_like(unit_image)
        if fill == "paper":
            return np.ones_like(unit_image)
        if fill == "segment_mean" and segments is not None:
            # lime_image.LimeImageExplainer.explain_instance with hide_color=None
            out = unit_image.copy()
            for label in np.unique(segments):
                where = segments == label
                out[where] = unit_image[where].mean(axis=0)
            return out
        raise ValueError(f"fill must be 'mean', 'black', 'paper' or a number, got {fill!r}")
    if (
        isinstance(fill, bool)
        or not isinstance(fill, (int, float, np.integer, np.floating))
        or not np.isfinite(fill)
    ):
        raise ValueError(f"fill must be 'mean', 'black', 'paper' or a finite number, got {fill!r}")
    return np.full_like(unit_image, float(fill))


# The first-layer shortcut keeps at most this many bytes of per-segment responses.
SHORTCUT_MAX_BYTES = 512 * 2**20


def _blend_batches(
    image: torch.Tensor, fill: torch.Tensor, segments: torch.Tensor, coalitions: np.ndarray, batch_size: int
) -> Iterator[torch.Tensor]:
    """The masked images of ``coalitions``, ``batch_size`` at a time, ``[B, 3, H, W]`` channels_last."""
    _, height, width = image.shape
    # Built as [B, H, W, C] and handed over as its NCHW view, i.e. channels_last. The blend
    # keep * image + (1 - keep) * fill with keep in {0, 1} is exact, and ~2x faster than torch.where.
    image_hwc = image.permute(1, 2, 0).contiguous()
    fill_hwc = fill.permute(1, 2, 0).contiguous()
    pixel_segment = segments.reshape(-1)
    for start in range(0, coalitions.shape[0], batch_size):
        chunk = np.ascontiguousarray(coalitions[start : start + batch_size]) != 0
        rows = torch.from_numpy(chunk).to(device=image.device, dtype=image.dtype)
        keep = torch.index_select(rows, 1, pixel_segment).view(rows.shape[0], height, width, 1)
        batch = torch.mul(keep, image_hwc)
        batch.addcmul_(1.0 - keep, fill_hwc)
        yield batch.permute(0, 3, 1, 2)


class _CoalitionStem(nn.Module):
    """Stands in for the model's first convolution: coalition rows ``[B, M]`` -> its output.

    The convolution is linear in its input, and a masked image is ``fill + sum_j z_j D_j`` with
    ``D_j = (image - fill)`` on segment ``j`` and 0 elsewhere; so its output is
    ``conv(fill) + sum_j z_j conv_nobias(D_j)``: one matrix product with the precomputed
    per-segment responses instead of building the image and convolving it.
    """

    def __init__(self, base: torch.Tensor, responses: torch.Tensor, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.base, self.responses, self.shape = base, responses, shape  # shape = (H', W', C)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:  # noqa: D102 - see the class
        out = torch.addmm(self.base, rows, self.responses)
        return out.view(rows.shape[0], *self.shape).permute(0, 3, 1, 2)  # channels_last


class _InputConvolution:
    """Finds, during one forward, the first Conv2d and whether it consumes the model's input."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.names = {module: name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}
        self.inputs: list[torch.Tensor] = []
        self.first: tuple[nn.Module, object] | None = None

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        def model_hook(module: nn.Module, args: tuple) -> None:
            self.inputs.append(args[0] if args else None)

        def conv_hook(module: nn.Module, args: tuple) -> None:
            if self.first is None:
                self.first = (module, args[0] if len(args) == 1 else None)

        handles = [self.model.register_forward_pre_hook(model_hook)]
        handles += [module.register_forward_pre_hook(conv_hook) for module in self.names]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def found(self) -> tuple[nn.Module, str, nn.Conv2d] | None:
        """``(parent, name, conv)`` if the first Conv2d saw exactly the model's (first) input."""
        if self.first is None or not self.inputs or self.first[1] is not self.inputs[0]:
            return None
        conv = self.first[0]
        parent_name, _, name = self.names[conv].rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        if not name or getattr(parent, name, None) is not conv:
            return None
        return parent, name, conv


class CoalitionModel:
    """``sigmoid(model(x_z))[:, classes]`` for coalition rows ``z`` of one image, float64 ``[S, C]``.

    The masked image ``x_z`` keeps the pixels of the segments where ``z == 1`` and shows
    ``fill`` elsewhere. Two routes give the same numbers (up to float rounding, about 1e-7
    relative):

    * **plain**: masked images are built in torch on the model's device ``batch_size`` at a
      time (memory holds one batch, never all ``S`` images), in ``channels_last`` memory format
      (same values; DenseNet convolutions run faster on CPU than with NCHW input);
    * **first-layer shortcut** (``shortcut=True``, when it applies): the model's first
      convolution, which sees the image directly, is linear, so its output for a coalition is
      ``conv(fill) + z @ R`` with ``R`` its response to each segment's difference
      ``image - fill`` (computed once per image: ``M`` convolutions of that one layer). The
      model then runs with that convolution replaced by the matrix product: no masked image is
      built and the first convolution never runs on the ``S`` samples. It applies when the
      model's first Conv2d consumes the input tensor itself, ``M`` is below that convolution's
      multiply-adds per output value (``3 * k * k``) and ``R`` fits in
      :data:`SHORTCUT_MAX_BYTES`. The first call decides: its first coalition runs by both
      routes (one extra model evaluation per image), and the shortcut is kept only if they
      agree (``rtol=1e-4``); otherwise everything runs the plain route. Like any change of
      batch composition, the route changes the float rounding (about 1e-7), nothing else.

    Call inside :func:`inference_evaluation_mode`.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (logits).
    image, fill : Tensor, shape (3, H, W)
        The normalised image and the normalised fill image, on the model's device and dtype.
    segments : Tensor of int64, shape (H, W)
        Segment index ``0 .. M-1`` of every pixel, on the model's device.
    classes : sequence of int
        Outputs returned, all from the same model calls.
    batch_size : int
        Coalitions per model call.
    shortcut : bool
        Allow the first-layer shortcut.
    """

    def __init__(
        self,
        model: nn.Module,
        image: torch.Tensor,
        fill: torch.Tensor,
        segments: torch.Tensor,
        classes: Sequence[int],
        *,
        batch_size: int,
        shortcut: bool = True,
    ) -> None:
        self.model, self.image, self.fill, self.segments = model, image, fill, segments
        self.batch_size = int(batch_size)
        self.index = torch.as_tensor(list(classes), device=image.device)
        self.num_segments = int(segments.max()) + 1
        self.stem: tuple[nn.Module, str, nn.Conv2d, _CoalitionStem] | None = None
        self._undecided = bool(shortcut)

    @property
    def uses_shortcut(self) -> bool:
        """Whether the first-layer shortcut is in use (decided by the first call)."""
        return self.stem is not None

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        """The probabilities of every coalition row (1 = segment shown, 0 = hidden), ``[S, C]``."""
        coalitions = np.asarray(coalitions)
        if self._undecided and coalitions.shape[0] > 0:
            self._undecided = False
            check = coalitions[:1]
            finder = _InputConvolution(self.model)
            with finder.watching():
                plain = self._plain(check)
            found = finder.found()
            stem = None if found is None else self._build_stem(*found)
            if stem is not None:
                self.stem = stem
                try:  # a model that uses its input after the first layer fails here or disagrees
                    fast = self._shortcut(check)
                except (RuntimeError, ValueError, TypeError, IndexError):
                    fast = None
                if fast is not None and np.allclose(fast, plain, rtol=1e-4, atol=1e-6):
                    return np.concatenate([fast, self._shortcut(coalitions[1:])])
                self.stem = None
            return np.concatenate([plain, self._plain(coalitions[1:])])
        if self.stem is not None:
            return self._shortcut(coalitions)
        return self._plain(coalitions)

    def _build_stem(
        self, parent: nn.Module, name: str, conv: nn.Conv2d
    ) -> tuple[nn.Module, str, nn.Conv2d, _CoalitionStem] | None:
        multiply_adds = conv.in_channels // conv.groups * int(np.prod(conv.kernel_size))
        if conv.in_channels != self.image.shape[0] or self.num_segments >= multiply_adds:
            return None
        fill_output = conv(self.fill[None].contiguous(memory_format=torch.channels_last))
        out_shape = (fill_output.shape[2], fill_output.shape[3], fill_output.shape[1])  # H', W', C
        size = int(np.prod(out_shape))
        if self.num_segments * size * fill_output.element_size() > SHORTCUT_MAX_BYTES:
            return None
        difference = self.image - self.fill
        responses = fill_output.new_empty((self.num_segments, size))
        for start in range(0, self.num_segments, self.batch_size):
            labels = torch.arange(start, min(start + self.batch_size, self.num_segments), device=self.image.device)
            masks = (self.segments[None] == labels[:, None, None]).to(difference.dtype)
            parts = (masks[:, None] * difference[None]).contiguous(memory_format=torch.channels_last)
            response = conv(parts)
            if conv.bias is not None:
                response = response - conv.bias.view(1, -1, 1, 1)
            responses[start : start + len(labels)] = response.permute(0, 2, 3, 1).reshape(len(labels), size)
        base = fill_output.permute(0, 2, 3, 1).reshape(size)
        return parent, name, conv, _CoalitionStem(base, responses, out_shape)

    def _plain(self, coalitions: np.ndarray) -> np.ndarray:
        out = np.empty((coalitions.shape[0], len(self.index)), dtype=np.float64)
        start = 0
        for batch in _blend_batches(self.image, self.fill, self.segments, coalitions, self.batch_size):
            probabilities = torch.sigmoid(self.model(batch)).index_select(1, self.index)
            out[start : start + batch.shape[0]] = probabilities.to("cpu", torch.float64).numpy()
            start += batch.shape[0]
        return out

    def _shortcut(self, coalitions: np.ndarray) -> np.ndarray:
        assert self.stem is not None
        parent, name, conv, stem = self.stem
        out = np.empty((coalitions.shape[0], len(self.index)), dtype=np.float64)
        setattr(parent, name, stem)
        try:
            for start in range(0, coalitions.shape[0], self.batch_size):
                chunk = np.ascontiguousarray(coalitions[start : start + self.batch_size]) != 0
                rows = torch.from_numpy(chunk).to(device=stem.responses.device, dtype=stem.responses.dtype)
                probabilities = torch.sigmoid(self.model(rows)).index_select(1, self.index)
                out[start : start + rows.shape[0]] = probabilities.to("cpu", torch.float64).numpy()
        finally:
            setattr(parent, name, conv)
        return out


def paint_segments(weights: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Per-segment weights ``[C, M]`` spread to pixels: float32 ``[C, H, W]``."""
    return np.asarray(weights, dtype=np.float32)[:, segments]
