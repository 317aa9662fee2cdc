"""Kernel SHAP explainer: equals a plain shap.KernelExplainer run, efficient, batched, seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_checks import counting_calls

from shamsul_utils.explainers import shap as shap_explainer
from shamsul_utils.explainers._perturbation import inference_evaluation_mode
from shamsul_utils.models import IMAGENET_MEAN, IMAGENET_STD, build_model, denormalize

NSAMPLES = 200
MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None]
STD = torch.tensor(IMAGENET_STD)[:, None, None]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("densenet_small", growth_rate=8, block_config=(2, 2, 2)).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    first = np.stack([0.5 + 0.5 * np.sin(6 * xx), 0.5 + 0.5 * np.cos(5 * yy), xx * yy])
    second = np.stack([xx, yy, 0.5 + 0.4 * np.sin(9 * xx * yy)])
    unit = torch.from_numpy(np.stack([first, second])).float()
    unit = unit + 0.05 * torch.rand(unit.shape, generator=torch.Generator().manual_seed(1))
    return (unit.clamp(0, 1) - MEAN) / STD


def _plain_shap(model, image, segments, fill_value, seed, l1_reg):
    """The straightforward use of shap: coalition rows -> masked numpy images -> probabilities."""
    import shap

    unit = denormalize(image[None])[0]
    num_segments = int(segments.max()) + 1

    def f(coalitions: np.ndarray) -> np.ndarray:
        masked = np.repeat(unit[None], coalitions.shape[0], axis=0)
        for i, row in enumerate(coalitions):
            for j in np.flatnonzero(row == 0):
                masked[i][segments == j] = fill_value
        x = (torch.from_numpy(masked).permute(0, 3, 1, 2).float() - MEAN) / STD
        with torch.inference_mode():
            return torch.sigmoid(model(x)).double().numpy()

    np.random.seed(seed)
    explainer = shap.KernelExplainer(f, np.zeros((1, num_segments)))
    values = explainer.shap_values(np.ones((1, num_segments)), nsamples=NSAMPLES, l1_reg=l1_reg, silent=True)
    return values[0].T, f(np.ones((1, num_segments)))[0] - f(np.zeros((1, num_segments)))[0]


@pytest.mark.parametrize(("fill", "l1_reg", "seed"), [("mean", "aic", 0), ("paper", False, 4)])
def test_equals_plain_kernel_explainer_and_is_efficient(model, images, fill, l1_reg, seed):
    image = images[0]
    with inference_evaluation_mode(model):
        result = shap_explainer.explain_segments(
            model,
            image,
            list(range(14)),
            seed=seed,
            nsamples=NSAMPLES,
            fill=fill,
            l1_reg=l1_reg,
            batch_size=16,
        )
    segments = result.segments
    assert segments.min() == 0 and segments.max() >= 20
    np.testing.assert_array_equal(
        segments, shap_explainer.slic_segments(np.clip(denormalize(image[None])[0], 0, 1))
    )
    unit = denormalize(image[None])[0]
    fill_value = unit.mean(axis=(0, 1)) if fill == "mean" else 1.0
    expected, difference = _plain_shap(model, image, segments, fill_value, seed, l1_reg)
    np.testing.assert_allclose(result.weights, expected, rtol=0, atol=1e-5)

    maps = shap_explainer.explain(model, image[None], seed=seed, nsamples=NSAMPLES, fill=fill, l1_reg=l1_reg)
    assert maps.shape == (1, 14, 64, 64) and maps.dtype == np.float32
    np.testing.assert_allclose(maps[0], expected[:, segments], rtol=0, atol=1e-5)
    # efficiency: the segments' values add up to f(image) - f(all hidden), per class
    per_segment_sums = np.stack(
        [maps[0][:, segments == j][:, 0] for j in range(segments.max() + 1)], axis=1
    ).sum(1)
    np.testing.assert_allclose(per_segment_sums, difference, rtol=0, atol=1e-4)


def test_deterministic_batched_seed_local(model, images):
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    with counting_calls(model) as calls:
        first = shap_explainer.explain(model, images, seed=2, nsamples=NSAMPLES, batch_size=16)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # global RNG restored
    # per image: samples + image + all-hidden, and the all-hidden one once more by the plain route
    # (the first-layer shortcut's check)
    assert max(calls) <= 16 and sum(calls) == 2 * (NSAMPLES + 3)
    with counting_calls(model) as calls:
        plain = shap_explainer.explain(
            model, images, seed=2, nsamples=NSAMPLES, batch_size=16, first_layer_shortcut=False
        )
    assert sum(calls) == 2 * (NSAMPLES + 2)
    np.testing.assert_allclose(plain, first, rtol=0, atol=1e-5)
    again = shap_explainer.explain(model, images, seed=2, nsamples=NSAMPLES, batch_size=64)
    np.testing.assert_allclose(again, first, rtol=0, atol=1e-5)
    subset = shap_explainer.explain(model, images[1:], [11, 3], seed=2, nsamples=NSAMPLES)
    np.testing.assert_allclose(subset, first[1:, [11, 3]], rtol=0, atol=1e-5)
    other = shap_explainer.explain(model, images[:1], [3], seed=3, nsamples=NSAMPLES)
    assert not np.allclose(other, first[:1, [3]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": torch.zeros(2, 3, 16)}, "shape"),
        ({"images": "image"}, "Tensor"),
        ({"classes": [-1]}, "classes"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"nsamples": 0}, "nsamples"),
        ({"fill": "white"}, "fill"),
        ({"seed": None}, "seed"),
        ({"l1_reg": "lasso"}, "l1_reg"),
        ({"nsamples": 5}, "too small"),
    ],
)
def test_bad_input_raises_value_error(model, kwargs, message):
    arguments = {"images": torch.zeros(1, 3, 16, 16), "classes": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        shap_explainer.explain(model, arguments.pop("images"), arguments.pop("classes"), **arguments)
