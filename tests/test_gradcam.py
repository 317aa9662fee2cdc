"""Grad-CAM: equal to captum's LayerGradCam for every class, from one forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_checks import module_state

from shamsul_utils.explainers import gradcam
from shamsul_utils.models import build_model, last_dense_block


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("densenet_small", growth_rate=8, block_config=(2, 2, 2))
    # non-trivial BatchNorm statistics and weights, as after training
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(6, 3, 64, 64) * 1.3 + 0.2)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _model()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _captum(model, images, layer, classes, relu):
    from captum.attr import LayerAttribution, LayerGradCam

    explainer = LayerGradCam(model, layer)
    maps = []
    for c in classes:
        attr = explainer.attribute(images, target=c, relu_attributions=relu)
        attr = LayerAttribution.interpolate(attr, tuple(images.shape[2:]), "bilinear")
        maps.append(attr[:, 0].detach().numpy())
    return np.stack(maps, axis=1)


@pytest.mark.parametrize("relu", [True, False])
def test_equals_captum_for_every_class(model, images, relu):
    classes = [0, 4, 9, 13]
    ours = gradcam.explain(model, images, classes, relu=relu)
    reference = _captum(model, images, last_dense_block(model), classes, relu)
    assert ours.shape == (3, 4, 64, 64) and ours.dtype == np.float32
    assert np.abs(reference).max() > 0
    np.testing.assert_allclose(ours, reference, atol=1e-5 * np.abs(reference).max(), rtol=0)


def test_other_layer_by_name_equals_captum(model, images):
    classes = [2, 7]
    ours = gradcam.explain(model, images, classes, layer="features.transition1.conv")
    reference = _captum(model, images, model.features.transition1.conv, classes, True)
    np.testing.assert_allclose(ours, reference, atol=1e-5 * np.abs(reference).max(), rtol=0)


def test_all_classes_batches_and_layer_size(model, images):
    everything = gradcam.explain(model, images)
    assert everything.shape == (3, 14, 64, 64)
    in_twos = gradcam.explain(model, images, batch_size=2)
    np.testing.assert_allclose(in_twos, everything, atol=1e-6, rtol=1e-5)
    small = gradcam.explain(model, images, [1], upsample=False)
    assert small.shape == (3, 1, 4, 4)  # stride 16 at 64 px
    assert (everything >= 0).all()


def test_model_left_as_it_was(images):
    model = _model(seed=3)
    model.train()  # explain must use eval mode and restore the flag
    before = module_state(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gradcam.explain(model, images[:2], [0, 1])
    assert module_state(model) == before
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_bad_input_is_one_line_value_error(model, images):
    with pytest.raises(ValueError, match="shape"):
        gradcam.explain(model, images[0])
    with pytest.raises(ValueError, match="shape"):
        gradcam.explain(model, images[:, :1])
    with pytest.raises(ValueError, match="classes"):
        gradcam.explain(model, images, [14])
    with pytest.raises(ValueError, match="classes"):
        gradcam.explain(model, images, [-1])
    with pytest.raises(ValueError, match="layer"):
        gradcam.explain(model, images, [0], layer=torch.nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="layer"):
        gradcam.explain(model, images, [0], layer="features.nope")
