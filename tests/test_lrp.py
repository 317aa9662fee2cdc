"""LRP: DenseNet canonizer, relevance conservation, equality with plain zennit, model hygiene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_checks import module_state
from zennit.attribution import Gradient

from shamsul_utils.explainers import lrp
from shamsul_utils.models import build_model


def _fresh(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("densenet_small", growth_rate=8, block_config=(2, 2, 2)).eval()


def _trained(seed: int = 0) -> torch.nn.Module:
    """A few Adam steps on random images with random labels: non-trivial weights, BN stats, biases."""
    model = _fresh(seed)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(4):
        x = torch.randn(8, 3, 64, 64, generator=generator) * 1.2 + 0.3
        y = (torch.rand(8, 14, generator=generator) > 0.5).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    return _trained()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))


def _parameters(model: torch.nn.Module) -> dict:
    return {name: (id(p), p.detach().clone()) for name, p in model.named_parameters()} | {
        name: (None, b.detach().clone()) for name, b in model.named_buffers()
    }


def _assert_unchanged(model, state, params):
    assert module_state(model) == state
    now = _parameters(model)
    assert now.keys() == params.keys()
    for name, (ident, value) in params.items():
        assert ident is None or id(dict(model.named_parameters())[name]) == ident, name
        assert torch.equal(now[name][1], value), name


def _logits(model, images):
    with torch.no_grad():
        return model(images)


def test_canonizer_keeps_the_function_and_undoes_itself(trained, images):
    state, params = module_state(trained), _parameters(trained)
    reference = _logits(trained, images)
    handles = lrp.DenseNetCanonizer().apply(trained)
    try:
        canonized = _logits(trained, images)
        names = [n for n, _ in trained.named_modules()]
        assert any(n.endswith("norm1.canonizer_threshold") for n in names)
        assert trained.features.denseblock1.denselayer1.conv1.bias is not None
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(canonized, reference, atol=1e-4, rtol=1e-4)
    _assert_unchanged(trained, state, params)


def test_canonizer_refuses_other_models():
    with pytest.raises(ValueError, match="DenseNet"):
        lrp.DenseNetCanonizer().apply(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))


def test_conservation_z_rule_random_model(images):
    """Fresh DenseNet: all BNs are identities, all biases zero, so LRP-0 conserves the logit."""
    model = _fresh(1)
    classes = [0, 6, 13]
    maps = lrp.explain(model, images, classes, rule="z")
    sums = maps.sum(axis=(2, 3))
    logits = _logits(model, images)[:, classes].numpy()
    np.testing.assert_allclose(sums, logits, rtol=0.01, atol=1e-6)


@pytest.mark.parametrize("rule", ["z", "deep_taylor"])
def test_conservation_trained_model_without_bias_absorption(trained, images, rule):
    """Trained DenseNet (non-trivial BN stats -> biases after canonization): with the biases
    left out of the rules (ignore_bias), LRP-0 and z+ / z^B conserve the logit through the
    canonized BN, the thresholded ReLUs, the concatenations and the poolings."""
    classes = [0, 5, 13]
    maps = lrp.explain(trained, images, classes, rule=rule, ignore_bias=True)
    sums = maps.sum(axis=(2, 3))
    logits = _logits(trained, images)[:, classes].numpy()
    np.testing.assert_allclose(sums, logits, rtol=0.01, atol=1e-3 * np.abs(logits).max())


def test_output_relevance_one_sums_to_one(images):
    maps = lrp.explain(_fresh(2), images, [3], rule="z", output_relevance="one")
    np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1.0, rtol=0.01)


def _zennit_per_class(model, composite, images, classes):
    """zennit's Gradient attributor once per class (relevance of the logit), summed over colours."""
    logits = _logits(model, images)
    reference = []
    for c in classes:
        one_hot = torch.zeros_like(logits)
        one_hot[:, c] = 1.0
        with Gradient(model, composite) as attributor:
            _, relevance = attributor(images, attr_output=lambda out, one_hot=one_hot: out * one_hot)
        reference.append(relevance.sum(dim=1))
    return torch.stack(reference, dim=1).numpy()


@pytest.mark.parametrize("rule", lrp.RULES)
def test_all_classes_equal_plain_zennit_per_class(trained, images, rule):
    classes = [0, 5, 13]
    reference = _zennit_per_class(trained, lrp.make_composite(rule), images, classes)
    ours = lrp.explain(trained, images, classes, rule=rule)
    assert ours.shape == reference.shape and ours.dtype == np.float32
    scale = np.abs(reference).max()
    assert scale > 0
    np.testing.assert_allclose(ours, reference, atol=1e-5 * scale, rtol=0)


@pytest.mark.parametrize("rule", ["epsilon", "alpha2beta1"])
def test_channels_last_model_equals_plain_zennit(images, rule):
    # a channels_last model sends channels_last relevance through the transposed convolutions
    model = _trained(seed=3).to(memory_format=torch.channels_last)
    images_cl = images.contiguous(memory_format=torch.channels_last)
    composite = lrp.make_composite(rule)
    reference = _zennit_per_class(model, composite, images_cl, [1, 8])
    ours = lrp.explain(model, images_cl, [1, 8], rule=rule)
    np.testing.assert_allclose(ours, reference, atol=1e-5 * np.abs(reference).max(), rtol=0)


class _GatedHead(torch.nn.Module):
    """conv -> x * sigmoid(x) written as tensor operations (no module, so no LRP rule) -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)
        self.linear = torch.nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        h = h * torch.sigmoid(h)  # its backward needs the values of h
        return self.linear(self.pool(h).flatten(1))


def test_value_dependent_operation_between_layers_gets_the_values():
    # the engine first replays shapes only; an operation whose gradient needs the values (here
    # x * sigmoid(x), unhooked) must make it replay the recorded values instead
    torch.manual_seed(0)
    model = _GatedHead().eval()
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    composite = lrp.make_composite("epsilon", canonize=False)
    reference = _zennit_per_class(model, composite, images, [0, 3, 4])
    ours = lrp.explain(model, images, [0, 3, 4], rule="epsilon", canonize=False)
    assert np.abs(reference).max() > 0
    np.testing.assert_allclose(ours, reference, atol=1e-5 * np.abs(reference).max(), rtol=0)


def test_shape_all_classes_and_batching(trained, images):
    everything = lrp.explain(trained, images, rule="epsilon")
    assert everything.shape == (2, 14, 64, 64) and everything.dtype == np.float32
    in_pieces = lrp.explain(trained, images, rule="epsilon", batch_size=3)  # 3 classes x 1 image
    # a different batch composition changes float rounding (convolution algorithms), nothing else
    np.testing.assert_allclose(in_pieces, everything, atol=1e-4 * np.abs(everything).max(), rtol=0)


def test_model_left_as_it_was(images):
    model = _trained(seed=4)
    model.train()
    state, params = module_state(model), _parameters(model)
    lrp.explain(model, images, [0, 1], rule="alpha2beta1")
    _assert_unchanged(model, state, params)


def test_model_restored_after_an_exception(images):
    model = _trained(seed=5)
    calls = []

    def fail_in_second_pass(module, args, output):
        calls.append(output.shape[0])
        if output.shape[0] > images.shape[0]:
            raise RuntimeError("boom")

    handle = model.classifier.register_forward_hook(fail_in_second_pass)
    state, params = module_state(model), _parameters(model)
    with pytest.raises(RuntimeError, match="boom"):
        lrp.explain(model, images, [0, 1], rule="deep_taylor")
    assert calls  # the failure happened inside explain
    _assert_unchanged(model, state, params)
    handle.remove()


def test_bad_options_are_one_line_value_errors(trained, images):
    with pytest.raises(ValueError, match="rule"):
        lrp.explain(trained, images, [0], rule="gamma")
    with pytest.raises(ValueError, match="first_layer"):
        lrp.explain(trained, images, [0], first_layer="box")
    with pytest.raises(ValueError, match="classes"):
        lrp.explain(trained, images, [14])
    with pytest.raises(ValueError, match="shape"):
        lrp.explain(trained, images[:, :2])
    with pytest.raises(ValueError, match="DenseNet"):
        lrp.explain(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten()), images, [0])
