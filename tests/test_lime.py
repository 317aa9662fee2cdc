"""LIME explainer: equals lime's LimeImageExplainer, batched, deterministic, validated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_checks import counting_calls

from shamsul_utils.explainers import lime as lime_explainer
from shamsul_utils.explainers._perturbation import inference_evaluation_mode
from shamsul_utils.models import IMAGENET_MEAN, IMAGENET_STD, build_model, denormalize

NUM_SAMPLES = 100
MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None]
STD = torch.tensor(IMAGENET_STD)[:, None, None]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("densenet_small", growth_rate=8, block_config=(2, 2, 2)).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two 64 x 64 images with smooth structure (so quickshift finds several segments), normalised."""
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    first = np.stack([0.5 + 0.5 * np.sin(6 * xx), 0.5 + 0.5 * np.cos(5 * yy), xx * yy])
    second = np.stack([xx, yy, 0.5 + 0.4 * np.sin(9 * xx * yy)])
    unit = torch.from_numpy(np.stack([first, second])).float()
    unit = unit + 0.05 * torch.rand(unit.shape, generator=torch.Generator().manual_seed(1))
    return (unit.clamp(0, 1) - MEAN) / STD


def _classifier_fn(model: torch.nn.Module):
    """lime's classifier_fn: un-normalised HWC float64 batch -> sigmoid probabilities."""

    def predict(batch: np.ndarray) -> np.ndarray:
        x = (torch.from_numpy(batch).permute(0, 3, 1, 2).float() - MEAN) / STD
        with torch.inference_mode():
            return torch.sigmoid(model(x)).double().numpy()

    return predict


def _lime_reference(model, image, seed, hide_color):
    from lime import lime_image

    unit = np.clip(denormalize(image[None])[0], 0.0, 1.0)
    explanation = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
        unit,
        _classifier_fn(model),
        top_labels=None,
        labels=range(14),
        hide_color=hide_color,
        num_samples=NUM_SAMPLES,
        batch_size=30,
    )
    weights = np.zeros((14, int(explanation.segments.max()) + 1))
    for label in range(14):
        for feature, weight in explanation.local_exp[label]:
            weights[label, feature] = weight
    return explanation.segments, weights


@pytest.mark.parametrize(("seed", "hide_color"), [(0, 0), (3, None)])
def test_equals_lime_local_exp(model, images, seed, hide_color):
    image = images[0]
    segments, expected = _lime_reference(model, image, seed, hide_color)
    with inference_evaluation_mode(model):
        result = lime_explainer.explain_segments(
            model,
            image,
            list(range(14)),
            seed=seed,
            num_samples=NUM_SAMPLES,
            hide_color=hide_color,
            batch_size=16,
        )
    assert expected.shape[1] >= 3
    np.testing.assert_array_equal(result.segments, segments)
    np.testing.assert_allclose(result.weights, expected, rtol=0, atol=1e-6)

    maps = lime_explainer.explain(
        model, image[None], seed=seed, num_samples=NUM_SAMPLES, hide_color=hide_color
    )
    assert maps.shape == (1, 14, 64, 64) and maps.dtype == np.float32
    np.testing.assert_allclose(maps[0], expected[:, segments], rtol=0, atol=1e-6)


def test_deterministic_batched_and_class_subset(model, images):
    with counting_calls(model) as calls:
        first = lime_explainer.explain(model, images, seed=5, num_samples=NUM_SAMPLES, batch_size=16)
    # per image: the samples, plus the first one once more by the plain route (first-layer shortcut check)
    assert max(calls) <= 16 and sum(calls) == 2 * (NUM_SAMPLES + 1)
    with counting_calls(model) as calls:
        plain = lime_explainer.explain(
            model, images, seed=5, num_samples=NUM_SAMPLES, batch_size=16, first_layer_shortcut=False
        )
    assert sum(calls) == 2 * NUM_SAMPLES  # no extra model calls on the plain route
    np.testing.assert_allclose(plain, first, rtol=0, atol=1e-6)
    again = lime_explainer.explain(model, images, seed=5, num_samples=NUM_SAMPLES, batch_size=64)
    np.testing.assert_allclose(again, first, rtol=0, atol=1e-6)
    subset = lime_explainer.explain(model, images, [9, 2], seed=5, num_samples=NUM_SAMPLES)
    np.testing.assert_allclose(subset, first[:, [9, 2]], rtol=0, atol=1e-6)
    other = lime_explainer.explain(model, images[:1], [2], seed=6, num_samples=NUM_SAMPLES)
    assert not np.allclose(other, first[:1, [2]])
    # every image uses the same seed: its map does not depend on the batch it came in
    np.testing.assert_allclose(
        lime_explainer.explain(model, images[1:], [2], seed=5, num_samples=NUM_SAMPLES),
        first[1:, [2]],
        atol=1e-6,
    )


def test_restores_every_modules_training_flag(model, images):
    """Each module's own flag comes back, not only the top-level one (a model with one BatchNorm
    frozen in eval mode, as in fine-tuning, stays that way)."""
    model.train()
    frozen = next(module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d))
    frozen.eval()
    before = [module.training for module in model.modules()]
    try:
        lime_explainer.explain(model, images[:1], [0], num_samples=10)
        assert [module.training for module in model.modules()] == before
    finally:
        model.eval()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": torch.zeros(3, 64, 64)}, "shape"),
        ({"images": torch.zeros(1, 1, 64, 64)}, "shape"),
        ({"images": torch.zeros(1, 3, 8, 8, dtype=torch.int64)}, "floating"),
        ({"images": torch.full((1, 3, 8, 8), float("nan"))}, "NaN"),
        ({"classes": [14]}, "classes"),
        ({"classes": []}, "classes"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_samples": 1}, "num_samples"),
        ({"hide_color": "white"}, "hide_color"),
    ],
)
def test_bad_input_raises_value_error(model, kwargs, message):
    arguments = {"images": torch.zeros(1, 3, 16, 16), "classes": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        lime_explainer.explain(model, arguments.pop("images"), arguments.pop("classes"), **arguments)
