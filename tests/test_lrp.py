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


def _with_batchnorm_statistics(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random BN affine parameters (either sign) and running statistics: every kind of unit occurs
    (active, inactive, negative scale, zero scale), as in a trained network but without training."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            module.weight.data = torch.randn(c, generator=generator) * 0.8
            module.weight.data[0] = 0.0  # a dead channel: its constant goes into the next bias
            module.bias.data = torch.randn(c, generator=generator) * 0.5
            module.running_mean = torch.randn(c, generator=generator) * 0.3
            module.running_var = torch.rand(c, generator=generator) + 0.5
    return model


@pytest.fixture(scope="module")
def bn_model() -> torch.nn.Module:
    """Float64 DenseNet with non-trivial BatchNorm statistics (exact claims are tested in float64)."""
    return _with_batchnorm_statistics(_fresh(11), seed=12).double().eval()


@pytest.fixture(scope="module")
def images64(images) -> torch.Tensor:
    return images.double()


def _gradient_times_input(model, images, classes) -> torch.Tensor:
    inputs = images.clone().requires_grad_(True)
    logits = model(inputs)
    rows = [torch.autograd.grad(logits[:, c].sum(), inputs, retain_graph=True)[0] * images for c in classes]
    return torch.stack(rows, dim=1)  # [N, C, 3, H, W]


def _lrp0_error(model, images, classes) -> float:
    composite = lrp.make_composite("z", stabilizer=1e-30)  # exact LRP-0 (no stabiliser to speak of)
    ours = lrp.relevance(model, composite, images, classes)
    truth = _gradient_times_input(model, images, classes)
    return float((ours - truth).abs().max() / truth.abs().max())


@pytest.mark.parametrize("which", ["batchnorm statistics", "trained"])
def test_lrp0_equals_gradient_times_input(bn_model, images64, which):
    """The independent truth: on a ReLU network whose BatchNorms are folded, LRP-0 relevance is
    gradient x input (each unit's relevance is its activation times the logit's gradient there;
    Ancona et al. 2018). It holds only if inactive units of the canonized network get no relevance."""
    model = bn_model if which == "batchnorm statistics" else _trained(6).double().eval()
    assert _lrp0_error(model, images64, [0, 5, 13]) <= 1e-6


def test_lrp0_identity_fails_when_inactive_units_get_relevance(bn_model, images64, monkeypatch):
    """The identity test can fail: the pre-fix composite (zennit's BatchNorm rule, Pass, on each
    canonized norm, which overrides its ThresholdReLU and hands relevance to inactive units as if
    they were active) breaks it by orders of magnitude."""
    classes = [0, 5]
    original = lrp.make_composite

    def pass_on_norms(*args, **kwargs):
        composite = original(*args, **kwargs)
        composite.layer_map = [entry for entry in composite.layer_map if entry[1] is not None]
        return composite

    monkeypatch.setattr(lrp, "make_composite", pass_on_norms)
    assert _lrp0_error(bn_model, images64, classes) > 1e-2


def _mostly_active(seed: int) -> torch.nn.Module:
    """Float64 DenseNet with positive BN scales and shifts: non-trivial statistics under which every
    unit that receives relevance has a non-zero rule denominator (the premise of conservation)."""
    model = _fresh(11)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            module.weight.data = torch.rand(c, generator=generator) + 0.5
            module.bias.data = torch.rand(c, generator=generator) * 0.5
            module.running_mean = torch.randn(c, generator=generator) * 0.3
            module.running_var = torch.rand(c, generator=generator) + 0.5
    return model.double().eval()


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize(("rule", "first_layer"), [("z", None), ("deep_taylor", "same"), ("deep_taylor", None)])
def test_conservation_without_bias_absorption(images64, rule, first_layer, seed):
    """With biases (and so the BatchNorm shifts) left out of the rules, LRP-0, z+ and z+ with a
    z^B first layer conserve the logit exactly: through the canonized BatchNorms, the
    ThresholdReLUs, the concatenations and the poolings. Float64 without a stabiliser: measured
    errors are 1e-15 (z+) to 1e-8 (LRP-0, whose denominators without biases come close to zero,
    so intermediate relevance reaches 1e7 and cancels).

    The premise: every unit that receives relevance has a non-zero denominator. A unit whose
    inputs are all zero (every BN unit feeding it inactive) carries only its bias; it receives
    relevance for that value but cannot pass it on, so conservation under ``ignore_bias`` is not
    a property of arbitrary statistics (with random-sign shifts we measured up to 2e-4 of the
    relevance lost this way)."""
    model = _mostly_active(seed)
    classes = [0, 5, 13]
    composite = lrp.make_composite(rule, first_layer=first_layer, stabilizer=1e-30, ignore_bias=True)
    sums = lrp.relevance(model, composite, images64, classes).sum(dim=(2, 3, 4))
    logits = _logits(model, images64)[:, classes]
    torch.testing.assert_close(sums, logits, rtol=1e-6, atol=1e-12)


def test_conservation_fresh_model_float32(images):
    """Fresh DenseNet in float32 (BNs are identities, biases zero): LRP-0 conserves the logit up
    to float32 rounding, bounded by the relevance that cancels on the way (sum of |R|)."""
    model = _fresh(1)
    classes = [0, 6, 13]
    relevance = lrp.relevance(model, lrp.make_composite("z"), images, classes)
    sums, magnitude = relevance.sum(dim=(2, 3, 4)), relevance.abs().sum(dim=(2, 3, 4))
    logits = _logits(model, images)[:, classes]
    assert torch.all((sums - logits).abs() <= 1e-4 * magnitude)


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
def test_all_classes_equal_plain_zennit_per_class(bn_model, images64, rule):
    """The class-batched engine equals zennit's own per-class loop with the same composite
    (float64: the two routes differ by rounding only)."""
    classes = [0, 5, 13]
    reference = _zennit_per_class(bn_model, lrp.make_composite(rule), images64, classes)
    ours = lrp.relevance(bn_model, lrp.make_composite(rule), images64, classes).sum(dim=2).numpy()
    assert ours.shape == reference.shape
    scale = np.abs(reference).max()
    assert scale > 0
    np.testing.assert_allclose(ours, reference, atol=1e-9 * scale, rtol=0)


@pytest.mark.parametrize("shift", lrp.SHIFT_RULES)
def test_both_shift_rules_equal_plain_zennit(bn_model, images64, shift):
    reference = _zennit_per_class(bn_model, lrp.make_composite("epsilon", shift=shift), images64, [2, 9])
    ours = lrp.relevance(bn_model, lrp.make_composite("epsilon", shift=shift), images64, [2, 9]).sum(dim=2).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-9 * np.abs(reference).max(), rtol=0)


def test_explain_returns_float32_maps(trained, images):
    maps = lrp.explain(trained, images, [0, 5], rule="epsilon_plus_flat")
    assert maps.shape == (2, 2, 64, 64) and maps.dtype == np.float32 and np.isfinite(maps).all()


@pytest.mark.parametrize("rule", ["epsilon", "alpha2beta1"])
def test_channels_last_model_equals_plain_zennit(images64, rule):
    # a channels_last model sends channels_last relevance through the transposed convolutions
    model = _with_batchnorm_statistics(_fresh(3), seed=4).double().eval().to(memory_format=torch.channels_last)
    images_cl = images64.contiguous(memory_format=torch.channels_last)
    composite = lrp.make_composite(rule)
    reference = _zennit_per_class(model, composite, images_cl, [1, 8])
    ours = lrp.relevance(model, composite, images_cl, [1, 8]).sum(dim=2).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-9 * np.abs(reference).max(), rtol=0)


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


def test_shape_all_classes_and_batching(bn_model, images64):
    everything = lrp.explain(bn_model, images64, rule="epsilon")
    assert everything.shape == (2, 14, 64, 64) and everything.dtype == np.float32
    in_pieces = lrp.explain(bn_model, images64, rule="epsilon", batch_size=3)  # 3 classes x 1 image
    # float64 inside: a different batch composition changes rounding far below the float32 output's
    np.testing.assert_allclose(in_pieces, everything, atol=1e-6 * np.abs(everything).max(), rtol=0)


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


@pytest.mark.parametrize("rule", ["epsilon", "epsilon_plus_flat"])
def test_the_zennit_engine_is_the_plain_route(bn_model, images64, rule):
    """``engine="zennit"`` (zennit's attributor, public API only) equals the test's own zennit loop
    and the class-batched engine."""
    classes = [0, 5, 13]
    reference = _zennit_per_class(bn_model, lrp.make_composite(rule), images64, classes)
    plain = lrp.explain(bn_model, images64, classes, rule=rule, engine="zennit")
    batched = lrp.explain(bn_model, images64, classes, rule=rule)
    scale = np.abs(reference).max()
    np.testing.assert_allclose(plain, reference, rtol=0, atol=1e-6 * scale)  # explain returns float32
    np.testing.assert_allclose(batched, plain, rtol=0, atol=1e-6 * scale)
    with pytest.raises(ValueError, match="engine must be"):
        lrp.explain(bn_model, images64, classes, engine="fast")
