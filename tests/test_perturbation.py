"""The perturbation explainers' model function: the first-layer shortcut against the plain route."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_checks import module_state
from torch import nn

from shamsul_utils.explainers import _perturbation
from shamsul_utils.explainers._perturbation import CoalitionModel, inference_evaluation_mode
from shamsul_utils.models import build_model

CLASSES = list(range(14))


@pytest.fixture(scope="module")
def densenet() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("densenet_small", growth_rate=8, block_config=(2, 2, 2)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics and a bias on the first convolution
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        model.features.conv0.bias = nn.Parameter(torch.linspace(-1, 1, model.features.conv0.out_channels))
    return model


def _problem(num_segments: int = 9, size: int = 48, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(3, size, size, generator=generator)
    fill = torch.randn(3, 1, 1, generator=generator).expand(3, size, size).contiguous()
    # irregular segments: label = a random field quantised, so segments are not blocks
    field = torch.rand(size // 8, size // 8, generator=generator) * num_segments
    segments = torch.nn.functional.interpolate(field[None, None], size=(size, size), mode="nearest")[0, 0]
    segments = segments.long().clamp_max(num_segments - 1)
    segments = torch.from_numpy(np.unique(segments.numpy(), return_inverse=True)[1].reshape(size, size))
    coalitions = np.random.default_rng(seed).integers(0, 2, size=(37, int(segments.max()) + 1))
    coalitions[0] = 1
    coalitions[1] = 0
    return image, fill, segments, coalitions


def _masked_reference(model, image, fill, segments, coalitions):
    """Independent reference: every masked image built with torch.where, the model run on it."""
    keep = torch.from_numpy(coalitions != 0)[:, segments]  # [S, H, W]
    masked = torch.where(keep[:, None], image[None], fill[None])
    with torch.inference_mode():
        return torch.sigmoid(model(masked)).double().numpy()


def test_shortcut_equals_the_masked_images(densenet):
    image, fill, segments, coalitions = _problem()
    reference = _masked_reference(densenet, image, fill, segments, coalitions)
    with inference_evaluation_mode(densenet):
        fast = CoalitionModel(densenet, image, fill, segments, CLASSES, batch_size=10)
        plain = CoalitionModel(densenet, image, fill, segments, CLASSES, batch_size=10, shortcut=False)
        fast_out, plain_out = fast(coalitions), plain(coalitions)
        assert fast.uses_shortcut and not plain.uses_shortcut
        again = fast(coalitions)  # later calls keep the route
    np.testing.assert_allclose(plain_out, reference, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast_out, reference, rtol=0, atol=1e-5)
    # the first call checked row 0 in a batch of its own: batch composition moves the rounding
    np.testing.assert_allclose(again, fast_out, rtol=0, atol=1e-6)
    assert fast_out.shape == (37, 14) and fast_out.dtype == np.float64


def test_shortcut_leaves_the_model_as_it_was(densenet):
    image, fill, segments, coalitions = _problem(seed=2)
    before = module_state(densenet)
    with inference_evaluation_mode(densenet):
        CoalitionModel(densenet, image, fill, segments, [3], batch_size=8)(coalitions)
    assert module_state(densenet) == before


class _InputSkip(nn.Module):
    """Its first convolution sees the input, but the input is also used after it: not linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(7, 14)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.cat([torch.relu(self.conv(x)), x], dim=1)
        return self.head(features.mean(dim=(2, 3)))


class _NormalisingStem(nn.Module):
    """Rescales its input before the first convolution: the convolution never sees the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 14)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x * 0.5)).mean(dim=(2, 3)))


@pytest.mark.parametrize("model_class", [_InputSkip, _NormalisingStem])
def test_models_it_does_not_fit_run_the_plain_route(model_class):
    torch.manual_seed(1)
    model = model_class().eval()
    image, fill, segments, coalitions = _problem(seed=3)
    reference = _masked_reference(model, image, fill, segments, coalitions)
    with inference_evaluation_mode(model):
        predictor = CoalitionModel(model, image, fill, segments, CLASSES, batch_size=16)
        out = predictor(coalitions)
    assert not predictor.uses_shortcut
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-6)


def test_too_many_segments_or_too_little_memory_run_the_plain_route(densenet, monkeypatch):
    image, fill, segments, coalitions = _problem(seed=4)
    with inference_evaluation_mode(densenet):
        monkeypatch.setattr(_perturbation, "SHORTCUT_MAX_BYTES", 1024)
        small_budget = CoalitionModel(densenet, image, fill, segments, CLASSES, batch_size=16)
        small_budget(coalitions)
        monkeypatch.undo()
        # 3 x 7 x 7 = 147 multiply-adds per output value: 150 segments are more work than the convolution
        many = (torch.arange(48 * 48).view(48, 48) % 150).long()
        too_many = CoalitionModel(densenet, image, fill, many, CLASSES, batch_size=16)
        too_many(np.ones((3, 150)))
    assert not small_budget.uses_shortcut and not too_many.uses_shortcut
