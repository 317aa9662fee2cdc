"""Layer-wise Relevance Propagation (LRP) heatmaps with zennit, all classes in one pass.

LRP (Bach et al. 2015) starts from the explained logit ``R = f_c(x)`` and redistributes it
layer by layer to the input pixels. The SHAMSUL paper shows four rules; here each is a zennit
composite that applies the rule to every convolution and to the classifier, and a fifth is the
composite practitioners recommend for deep CNNs:

=================== ============================================ ===================================
``rule``            zennit rule on Conv2d / Linear                first layer (default)
=================== ============================================ ===================================
"z"                 ``Epsilon(epsilon=stabilizer)`` = LRP-0       same rule
"epsilon"           ``Epsilon(epsilon=1.0)``                      same rule
"alpha2beta1"       ``AlphaBeta(alpha=2, beta=1)``                same rule
"deep_taylor"       ``ZPlus()`` (the z+ rule)                     ``ZBox`` (z^B, pixel bounds)
"epsilon_plus_flat" ``ZPlus()`` on Conv2d, ``Epsilon(1.0)`` on    ``Flat``
                    the classifier (zennit's ``EpsilonPlusFlat``;
                    Kohlbrenner et al. 2020, Montavon et al. 2019)
=================== ============================================ ===================================

Pooling layers get zennit's ``Norm`` rule (sum pooling as LRP-0), max pooling passes relevance
to the maximum (its gradient), ReLUs pass relevance through (``Pass``).

**DenseNet canonization** (:class:`DenseNetCanonizer`, after Pahde et al. 2023). DenseNet's
BatchNorms sit *before* their convolution (``BN -> ReLU -> conv``, and BN acts on the
concatenation of many earlier outputs), so they cannot be merged into a preceding layer.
The canonizer rewrites the network into an equivalent one made of convolutions / linear layers
(with biases), ReLUs, gated shifts, concatenations and poolings only:

* ``conv -> BN`` (stem ``conv0 -> norm0``, dense layer ``conv1 -> norm2``): BN is merged into
  the convolution before it (``W' = s W``, ``b' = s b + t``, with ``s = gamma / sqrt(var + eps)``,
  ``t = beta - mean * s``); the module keeps only its ReLU.
* ``BN -> ReLU -> conv`` (dense layer ``norm1 -> conv1``, transition ``norm -> conv``, and
  ``norm5 -> ReLU -> average pool -> classifier``): ``ReLU(s x + t) = s T(x)`` with the gated
  shift ``T(x) = x - b`` on active units (``s x + t > 0``) and ``0`` on inactive ones, where
  ``b = -t / s`` (:class:`ThresholdReLU`). The scale ``s`` merges into the following 1 x 1
  convolution or (through the linear average pool) the classifier (``W' = W s``); the shift stays
  in ``T`` as the bias of an elementwise unit. The next layer therefore sees exactly the real
  network's contributions ``W_ij a_i``, and an inactive unit outputs 0 and receives no relevance.

**Deviation from Pahde et al.** Their ``ThreshReLUMergeBatchNorm`` lets ``T`` output the threshold
``-t / s`` on inactive units, moves ``W t`` into the next bias and gives ``T`` the activation rule
(``Pass``). An inactive unit then gets the relevance that the next layer assigns to that constant
and hands it down as if it were active, although in the real network it outputs 0; on a trained
DenseNet LRP-0 then differs from gradient x input by orders of magnitude. (zennit's base map also
gives every BatchNorm module ``Pass``, which overrides the rules of the modules inside it; the
composites here map the canonized BatchNorm containers to no rule.) The rule of ``T`` is
``shift`` in :func:`make_composite`: ``"absorb"`` treats the shift as a bias under LRP-0
(``R_x = x R / T(x)``: LRP-0 is then exactly gradient x input on the canonized network, the
identity the tests check in float64), ``"pass"`` hands an active unit's relevance down unchanged
(conservative; the default with ``ignore_bias`` only).

**Conservation.** Relevance is conserved through every concatenation, every re-used feature map
(relevance from all consumers adds up) and every pooling; a layer's **bias absorbs** its share
``b_j / z_j R_j`` (for ``T`` under ``"absorb"``, the shift's share), and ``epsilon`` absorbs more by
design. With ``ignore_bias=True`` (biases left out of the rules' denominators, zennit's
``zero_params=["bias"]``; the shifts pass), LRP-0, z+ and z^B conserve the logit exactly, provided
that no unit receiving relevance has a zero denominator (a unit whose inputs are all zero carries
only its bias and cannot pass its relevance on); the tests check this to 1e-6 in float64.
``alpha2beta1`` does not conserve in general (a neuron without negative inputs passes
``alpha R = 2 R``); ``epsilon_plus_flat`` loses the classifier's epsilon share.

**All classes at once.** A zennit composite hooks every layer and computes a layer's relevance
in a backward hook; one backward per class costs about ``C`` times one class. Here the
composite's rules are evaluated by a class-batched engine (:func:`relevance`): one ordinary
forward records every hooked layer's input and output (and the max-pool indices); a second,
cheap forward over the images repeated ``C`` times replays the hooked layers (no convolution
is recomputed) through custom autograd functions. That replay carries shapes only (zero-stride
zeros, no memory per class) when everything between the hooked layers has a backward that
needs no values (concatenations, poolings, reshapes: checked on the autograd graph), and the
recorded values otherwise. The backward then applies each layer's zennit rule to the
relevance of all ``C`` classes together, sharing the rule's modified forward passes (e.g.
``W+ x+`` for z+) across classes and batching the transposed convolutions (a 1x1 one is a
matrix product, a stride-1 one a convolution with the flipped kernel; one whose modified
input is all zero, such as ``x-`` after a ReLU, is skipped: the reducer multiplies it by
zero). The result equals zennit's ``Gradient`` attributor with the same composite, one class
at a time (tested to 1e-5). Each class still needs its own transposed pass through every
convolution, as many multiply-adds as a forward pass, while one class costs a recording and
a modified forward plus one transposed pass: so 14 classes cost about ``(2 + 14) / 3 ~ 5``
times one class when the arithmetic is the bottleneck (DenseNet121 at 224 px on a CPU), less
where one image leaves the hardware idle; zennit's loop costs about 14 times one class or more.
Measurements, with the machine they were made on: ``benchmarks/README.md``.

References
----------
Bach, S. et al. (2015). On pixel-wise explanations for non-linear classifier decisions by
layer-wise relevance propagation. PLoS ONE 10(7): e0130140.
Montavon, G. et al. (2017). Explaining nonlinear classification decisions with deep Taylor
decomposition. Pattern Recognition 65: 211-222.
Pahde, F. et al. (2023). Optimizing explanations by network canonization and hyperparameter
search. CVPR Workshops (SAIAD). arXiv:2211.17174.
Montavon, G. et al. (2019). Layer-wise relevance propagation: an overview. In Explainable AI,
LNCS 11700: 193-209.
Kohlbrenner, M. et al. (2020). Towards best practice in explaining neural network decisions
with LRP. IJCNN. arXiv:1910.09840.
Ancona, M. et al. (2018). Towards better understanding of gradient-based attribution methods
for deep neural networks. ICLR.
Anders, C. J. et al. (2021). Software for dataset-wide XAI: from local explanations to global
insights with Zennit, CoRelAy, and ViRelAy. arXiv:2106.13200.
Alam, M. U. et al. (2023). SHAMSUL. arXiv:2307.08003.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from zennit.canonizers import Canonizer
from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite, layer_map_base
from zennit.core import BasicHook, Composite, ParamMod, RemovableHandleList
from zennit.rules import AlphaBeta, Epsilon, Flat, Norm, Pass, WSquare, ZBox, ZPlus
from zennit.types import BatchNorm, Convolution

from ..models import IMAGENET_MEAN, IMAGENET_STD
from ._common import check_inputs, chunks, evaluation_mode, model_device, model_dtype

__all__ = [
    "FIRST_LAYER_RULES",
    "PAPER_RULES",
    "RULES",
    "SHIFT_RULES",
    "DenseNetCanonizer",
    "ThresholdReLU",
    "explain",
    "make_composite",
    "relevance",
    "zennit_relevance",
]

PAPER_RULES: tuple[str, ...] = ("z", "epsilon", "alpha2beta1", "deep_taylor")
RULES: tuple[str, ...] = PAPER_RULES + ("epsilon_plus_flat",)
FIRST_LAYER_RULES: tuple[str, ...] = ("same", "zbox", "flat", "wsquare")
SHIFT_RULES: tuple[str, ...] = ("absorb", "pass")
_DEFAULT_FIRST_LAYER = {"z": "same", "epsilon": "same", "alpha2beta1": "same", "deep_taylor": "zbox",
                        "epsilon_plus_flat": "flat"}
# zennit rules whose output modifiers are the identity and whose layers are linear maps, so
# that the engine may use the transposed operator directly
_LINEAR_RULES = (Epsilon, ZPlus, AlphaBeta, ZBox, Flat, WSquare, Norm)


# --------------------------------------------------------------------------- canonizer


class ThresholdReLU(nn.Module):
    """The gated shift ``T`` with ``ReLU(s x + t) = s T(x)`` (after Pahde et al. 2023).

    ``T(x) = x - b`` where the unit is active (``s x + t > 0``) and ``0`` where it is not,
    with the threshold ``b = -t / s``: the BatchNorm's scale ``s`` moves into the following
    linear layer and its shift stays here, as the bias of an elementwise unit. An inactive unit
    therefore outputs 0, as in the real network, and every LRP rule (which multiplies by the
    input) gives it no relevance. A channel with ``s = 0`` outputs 0 here and its constant
    ``ReLU(t)`` is merged into the next layer's bias. With ``relu=False`` (a BatchNorm without
    activation) every unit with ``s != 0`` is active.

    Not a ``torch.nn.ReLU`` subclass, so that zennit composites do not give it their activation
    rule (``Pass``); :func:`make_composite` maps it explicitly (see ``shift`` there).
    """

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, relu: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.shift = shift
        self.relu = relu
        nonzero = scale != 0
        self.threshold = torch.where(nonzero, -shift / torch.where(nonzero, scale, 1.0), 0.0)

    def active(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - torch's name
        """Boolean mask of the units that pass their input (broadcast over the batch)."""
        view = (1, -1) + (1,) * (input.ndim - 2)
        scale = self.scale.view(view).to(input.dtype)
        if not self.relu:
            return (scale != 0).expand_as(input)
        return input * scale + self.shift.view(view).to(input.dtype) > 0

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - torch's name
        view = (1, -1) + (1,) * (input.ndim - 2)
        shifted = input - self.threshold.view(view).to(input.dtype)
        return torch.where(self.active(input), shifted, shifted.new_zeros(()))

    def extra_repr(self) -> str:
        return f"channels={self.scale.numel()}, relu={self.relu}"


def _bn_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("DenseNetCanonizer needs BatchNorm running statistics (track_running_stats=True)")
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale.detach(), shift.detach()


def _act_only_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return self.act(self.drop(x))


def _threshold_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return self.canonizer_threshold(self.drop(x))


class DenseNetCanonizer(Canonizer):
    """zennit canonizer for timm's ``DenseNet``: every BatchNorm merged into a linear layer.

    ``conv -> BN`` pairs are merged as usual; ``BN -> ReLU -> conv/linear`` triples become
    ``ThresholdReLU -> conv/linear`` with BN merged into the following layer (Pahde et al.
    2023; see the module docstring). Also switches off the dense layers' gradient
    checkpointing while applied. Parameters are swapped for new ``Parameter`` objects and the
    originals put back by :meth:`remove`, so the model's own tensors are never modified.

    Raises
    ------
    ValueError
        On a model that is not a timm DenseNet or has a layout this canonizer does not know
        (a BatchNorm that cannot be merged is an error, never silently passed).
    """

    def __init__(self) -> None:
        super().__init__()
        self._undo: list[Callable[[], None]] = []

    def copy(self) -> DenseNetCanonizer:
        return DenseNetCanonizer()

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        instance = self.copy()
        instance.register(root_module)
        return [instance]

    def register(self, model: nn.Module) -> None:  # type: ignore[override]
        try:
            self._canonize(model)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()

    # -- helpers that record how to undo themselves
    def _set_forward(self, module: nn.Module, function: Callable) -> None:
        previous = module.__dict__.get("forward")
        module.forward = types.MethodType(function, module)

        def undo() -> None:
            if previous is None:
                del module.forward
            else:
                module.forward = previous

        self._undo.append(undo)

    def _set_attribute(self, obj: object, name: str, value: object) -> None:
        previous = getattr(obj, name)
        setattr(obj, name, value)
        self._undo.append(lambda: setattr(obj, name, previous))

    def _add_module(self, parent: nn.Module, name: str, child: nn.Module) -> None:
        if hasattr(parent, name):
            raise ValueError(f"module already has an attribute {name!r}; canonizer applied twice?")
        parent.add_module(name, child)
        self._undo.append(lambda: delattr(parent, name))

    def _canonize(self, model: nn.Module) -> None:
        from timm.layers import BatchNormAct2d
        from timm.models.densenet import DenseLayer, DenseNet, DenseTransition

        if not isinstance(model, DenseNet):
            raise ValueError(f"DenseNetCanonizer needs a timm DenseNet, got {type(model).__name__}")
        # per linear layer: input-side (scale, constant) and output-side (scale, shift)
        in_fold: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        out_fold: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        handled: set[nn.Module] = set()

        def check_norm(norm: nn.Module) -> None:
            if not isinstance(norm, BatchNormAct2d):
                raise ValueError(
                    f"DenseNetCanonizer expects timm BatchNormAct2d norms, got {type(norm).__name__}"
                )

        def fold_left(linear: nn.Module, norm: nn.Module) -> None:  # linear -> BN(+act)
            check_norm(norm)
            out_fold[linear] = _bn_affine(norm)
            self._set_forward(norm, _act_only_forward)
            handled.add(norm)

        def fold_right(norm: nn.Module, linear: nn.Module) -> None:  # BN -> act -> linear
            check_norm(norm)
            if isinstance(linear, nn.Conv2d) and (
                isinstance(linear.padding, str) or any(p != 0 for p in linear.padding)
            ):
                raise ValueError("DenseNetCanonizer can merge a BatchNorm only into an unpadded convolution")
            if isinstance(norm.act, nn.ReLU):
                relu = True
            elif isinstance(norm.act, nn.Identity):
                relu = False
            else:
                raise ValueError(
                    f"DenseNetCanonizer supports ReLU activations only, got {type(norm.act).__name__}"
                )
            scale, shift = _bn_affine(norm)
            # what a unit feeds the next layer beyond s * T(x): ReLU(t) (or t) where s = 0
            constant = torch.where(scale != 0, 0.0, shift.clamp(min=0) if relu else shift)
            in_fold[linear] = (scale, constant)
            self._add_module(norm, "canonizer_threshold", ThresholdReLU(scale, shift, relu))
            self._set_forward(norm, _threshold_forward)
            handled.add(norm)

        for module in model.modules():
            if isinstance(module, DenseLayer):
                self._set_attribute(module, "grad_checkpointing", False)
                fold_right(module.norm1, module.conv1)
                fold_left(module.conv1, module.norm2)
            elif isinstance(module, DenseTransition):
                fold_right(module.norm, module.conv)
        # stem: every norm right after a convolution
        previous = None
        for child in model.features.children():
            if isinstance(child, BatchNormAct2d) and isinstance(previous, nn.Conv2d):
                fold_left(previous, child)
            previous = child
        # norm5 -> ReLU -> average pool -> (dropout) -> classifier
        norm5 = getattr(model.features, "norm5", None)
        pool_type = getattr(model.global_pool, "pool_type", "")
        if norm5 is not None:
            if "avg" not in pool_type or "max" in pool_type or not isinstance(model.classifier, nn.Linear):
                raise ValueError(
                    f"DenseNetCanonizer needs average pooling and a Linear classifier, got {pool_type!r}"
                )
            fold_right(norm5, model.classifier)
        unhandled = [
            n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and m not in handled
        ]
        if unhandled:
            raise ValueError(f"DenseNetCanonizer cannot merge BatchNorm {unhandled[0]!r}")

        for linear in set(in_fold) | set(out_fold):
            weight = linear.weight.detach()
            bias = linear.bias.detach() if linear.bias is not None else weight.new_zeros(weight.shape[0])
            index = (None, slice(None)) + (None,) * (weight.ndim - 2)
            if linear in in_fold:
                scale, constant = in_fold[linear]
                bias = bias + (weight * constant[index]).sum(dim=tuple(range(1, weight.ndim)))
                weight = weight * scale[index]
            if linear in out_fold:
                scale, shift = out_fold[linear]
                weight = weight * scale[(slice(None),) + (None,) * (weight.ndim - 1)]
                bias = bias * scale + shift
            self._set_attribute(linear, "weight", nn.Parameter(weight, linear.weight.requires_grad))
            self._set_attribute(linear, "bias", nn.Parameter(bias, linear.weight.requires_grad))


# --------------------------------------------------------------------------- composites


def make_composite(
    rule: str = "epsilon",
    *,
    first_layer: str | None = None,
    epsilon: float = 1.0,
    stabilizer: float = 1e-6,
    ignore_bias: bool = False,
    shift: str | None = None,
    canonize: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Composite:
    """The zennit composite of one LRP rule or composite (see the module docstring).

    Parameters
    ----------
    rule : {"z", "epsilon", "alpha2beta1", "deep_taylor", "epsilon_plus_flat"}
        The paper's four rules apply to every Conv2d and Linear layer; ``"epsilon_plus_flat"``
        is the composite practitioners recommend for deep CNNs (zennit's ``EpsilonPlusFlat``;
        Kohlbrenner et al. 2020): z+ on convolutions, epsilon on the classifier, flat first layer.
    first_layer : {"same", "zbox", "flat", "wsquare"}, optional
        Rule of the first convolution; default ``"zbox"`` for ``deep_taylor`` (Montavon et al.
        2017's z^B rule for bounded pixel input), ``"flat"`` for ``epsilon_plus_flat``,
        ``"same"`` otherwise.
    epsilon : float
        The epsilon of ``rule="epsilon"`` (the paper's 1.0) and of the classifier in
        ``epsilon_plus_flat``.
    stabilizer : float
        Denominator stabiliser of the other rules; also the epsilon of ``rule="z"``.
    ignore_bias : bool
        Leave biases out of the rules (zennit ``zero_params=["bias"]``), so that they absorb
        no relevance; the BatchNorm shifts of the canonized network then pass (``shift="pass"``).
    shift : {"absorb", "pass"}, optional
        Rule of a :class:`ThresholdReLU`, whose BatchNorm shift is a bias: ``"absorb"`` is LRP-0
        through it (``R_x = x R / T(x)``; the shift absorbs its share, as a bias does under
        z / epsilon / alpha-beta, and LRP-0 equals gradient x input); ``"pass"`` hands the
        relevance of every active unit down unchanged (conservative). Default: ``"pass"`` with
        ``ignore_bias`` (which leaves every bias out), ``"absorb"`` otherwise, for every rule:
        on the demo model it localised far better than ``"pass"`` (notebook 04 shows the
        numbers). Inactive units receive no relevance either way.
    canonize : bool
        Apply :class:`DenseNetCanonizer` (needs a timm DenseNet).
    mean, std : sequence of float
        The normalisation of the first convolution's input (3 channels, or 1); the z^B bounds are
        ``(0 - mean) / std`` and ``(1 - mean) / std``.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    first_layer = _DEFAULT_FIRST_LAYER[rule] if first_layer is None else first_layer
    if first_layer not in FIRST_LAYER_RULES:
        raise ValueError(f"first_layer must be one of {FIRST_LAYER_RULES}, got {first_layer!r}")
    if shift is None:
        shift = "pass" if ignore_bias else "absorb"
    if shift not in SHIFT_RULES:
        raise ValueError(f"shift must be one of {SHIFT_RULES}, got {shift!r}")
    if ignore_bias and shift != "pass":
        raise ValueError("ignore_bias leaves every bias out, so the BatchNorm shifts pass: use shift='pass'")
    if len(mean) != len(std) or len(mean) not in (1, 3) or any(s <= 0 for s in std):
        raise ValueError(f"mean and std must have 3 (or 1) values with std > 0, got {tuple(mean)}, {tuple(std)}")
    zero = {"zero_params": ["bias"]} if ignore_bias else {}
    if rule == "z":
        main: list = [((Convolution, nn.Linear), Epsilon(epsilon=stabilizer, **zero))]
    elif rule == "epsilon":
        main = [((Convolution, nn.Linear), Epsilon(epsilon=epsilon, **zero))]
    elif rule == "alpha2beta1":
        main = [((Convolution, nn.Linear), AlphaBeta(alpha=2.0, beta=1.0, stabilizer=stabilizer, **zero))]
    elif rule == "deep_taylor":
        main = [((Convolution, nn.Linear), ZPlus(stabilizer=stabilizer, **zero))]
    else:
        main = [(Convolution, ZPlus(stabilizer=stabilizer, **zero)), (nn.Linear, Epsilon(epsilon=epsilon, **zero))]
    # Mappings before zennit's base map win. A ThresholdReLU: None leaves it unhooked (its gradient:
    # relevance to the active units). A canonized BatchNorm module is only a container of its
    # activation / ThresholdReLU now, so it must not get zennit's BatchNorm rule (Pass), which would
    # override its children's rules (the outermost hooked module wins).
    shift_rule = Epsilon(epsilon=stabilizer) if shift == "absorb" else None
    containers = [(BatchNorm, None)] if canonize else []
    layer_map = [(ThresholdReLU, shift_rule)] + containers + layer_map_base(stabilizer) + main
    canonizers = [DenseNetCanonizer()] if canonize else []
    if first_layer == "same":
        return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
    if first_layer == "zbox":
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        first = ZBox(low=(0.0 - m) / s, high=(1.0 - m) / s, stabilizer=stabilizer, **zero)
    elif first_layer == "flat":
        first = Flat(stabilizer=stabilizer, **zero)
    else:
        first = WSquare(stabilizer=stabilizer, **zero)
    return SpecialFirstLayerMapComposite(
        layer_map=layer_map, first_map=[(Convolution, first)], canonizers=canonizers
    )


# --------------------------------------------------------------------------- class-batched engine


_MAX_POOL = object()  # marks a replayed max pool (relevance follows its gradient)
_GATE = object()  # marks an unhooked ThresholdReLU (relevance passes to its active units)


@dataclass
class _Layer:
    """One hooked layer: its rule and what the recording forward saw."""

    module: nn.Module
    rule: object
    forward: Callable[[torch.Tensor], torch.Tensor]
    records: list[tuple[torch.Tensor, torch.Tensor]]
    n_classes: int = 1
    counter: itertools.count | None = None
    values: bool = True  # replay the recorded values (False: shape-only zeros, see relevance)


class _Replay(torch.autograd.Function):
    """Forward: the recorded output repeated for every class. Backward: the layer's rule."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: _Layer, index: int) -> torch.Tensor:  # type: ignore[override]
        ctx.layer, ctx.index = layer, index
        ctx.input_shape = x.shape
        output = layer.records[index][1]
        if not layer.values:  # shape only: a zero-stride view, no memory per class
            return output.new_zeros(()).expand(layer.n_classes * output.shape[0], *output.shape[1:])
        return output.repeat(layer.n_classes, *([1] * (output.ndim - 1)))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        layer: _Layer = ctx.layer
        if isinstance(layer.rule, Pass):
            relevance = grad
        elif layer.rule is _GATE:  # the gradient of a ThresholdReLU: its active units
            active = layer.module.active(layer.records[ctx.index][0])
            relevance = (grad.view(layer.n_classes, *active.shape) * active).view(ctx.input_shape)
        elif layer.rule is _MAX_POOL:  # the gradient of max pooling: to each window's maximum
            indices = layer.records[ctx.index][2].repeat(layer.n_classes, 1, 1, 1)
            relevance = grad.new_zeros(ctx.input_shape).flatten(2)
            relevance.scatter_add_(2, indices.flatten(2), grad.flatten(2))
            relevance = relevance.view(ctx.input_shape)
        else:
            relevance = _rule_backward(layer, ctx.index, grad)
        if relevance.shape != ctx.input_shape:
            raise RuntimeError(f"LRP rule of {type(layer.module).__name__} returned the wrong shape")
        return relevance, None, None


def _has_transpose(module: nn.Module) -> bool:
    if type(module) is ThresholdReLU:
        return True
    if type(module) is nn.Conv2d:
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    return type(module) is nn.Linear


def _transposed(module: nn.Module, weight: torch.Tensor, grad: torch.Tensor, input_shape) -> torch.Tensor:
    """VJP of a Conv2d / Linear layer w.r.t. its input for a batch of cotangents.

    The same numbers as ``torch.nn.grad.conv2d_input`` (up to float rounding), by the fastest
    route measured on CPU for the class-batched cotangents: a 1x1 convolution with stride 1 is
    one matrix product over the pixels (channels_last; faster than ``conv2d_input``, which
    took a slow unfused path); a stride-1 convolution is the convolution of the cotangent with
    the flipped, transposed kernel; anything else (a strided stem) calls ``conv2d_input``.
    """
    if type(module) is nn.Linear:
        return grad @ weight
    if type(module) is ThresholdReLU:  # ``weight`` is its active-unit mask [N, ...]
        return (grad.view(-1, *weight.shape) * weight).view(grad.shape)
    stride_one = tuple(module.stride) == (1, 1) and tuple(module.dilation) == (1, 1) and module.groups == 1
    kernel = tuple(weight.shape[2:])
    padding = tuple(module.padding)
    if stride_one and kernel == (1, 1) and padding == (0, 0):
        batch, channels, height, width = grad.shape
        matrix = weight.reshape(weight.shape[0], weight.shape[1])
        if grad.is_contiguous(memory_format=torch.channels_last) and not grad.is_contiguous():
            rows = grad.permute(0, 2, 3, 1).reshape(-1, channels)  # a view
            product = rows @ matrix
            return product.view(batch, height, width, weight.shape[1]).permute(0, 3, 1, 2)
        columns = grad.reshape(batch, channels, height * width)
        return torch.matmul(matrix.t(), columns).view(batch, weight.shape[1], height, width)
    if stride_one and all(p <= k - 1 for p, k in zip(padding, kernel, strict=True)):
        flipped = weight.flip(2, 3).transpose(0, 1)
        result = torch.nn.functional.conv2d(
            grad, flipped, padding=tuple(k - 1 - p for p, k in zip(padding, kernel, strict=True))
        )
        if tuple(result.shape) == tuple(input_shape):
            return result
    return torch.nn.grad.conv2d_input(
        tuple(input_shape), weight, grad, module.stride, module.padding, module.dilation, module.groups
    )


def _rule_backward(layer: _Layer, index: int, grad: torch.Tensor) -> torch.Tensor:
    """A zennit ``BasicHook`` rule applied to the relevance of all classes at once.

    Same steps as ``BasicHook.backward``: modified inputs and parameters give modified outputs
    (computed once, on the N recorded inputs); the gradient mapper and the reducer broadcast
    over the class axis; the modified layers' transposes act on all classes in one call.
    """
    rule = layer.rule
    if not isinstance(rule, BasicHook):
        raise NotImplementedError(
            f"class-batched LRP supports zennit BasicHook and Pass rules, got {type(rule)}"
        )
    module, n_classes = layer.module, layer.n_classes
    x = layer.records[index][0]
    n = x.shape[0]
    grad = grad.reshape(n_classes, n, *grad.shape[1:])
    fast = isinstance(rule, _LINEAR_RULES) and _has_transpose(module)
    inputs, outputs, transposes = [], [], []
    for in_mod, param_mod, out_mod in zip(
        rule.input_modifiers, rule.param_modifiers, rule.output_modifiers, strict=True
    ):
        inp = in_mod(x)
        with ParamMod.ensure(param_mod)(module) as modified:
            if fast:
                with torch.no_grad():
                    out = out_mod(layer.forward(inp))
                # an all-zero modified input (x- after a ReLU) multiplies its gradient by zero in
                # the reducer: skip that transposed convolution
                operator = module.active(inp) if type(module) is ThresholdReLU else modified.weight.detach()
                transposes.append(operator if bool(inp.any()) else None)
                inputs.append(inp[None])
                outputs.append(out[None])
            else:  # generic: the layer's own autograd on the input repeated per class
                with torch.enable_grad():
                    rep = inp.detach().repeat(n_classes, *([1] * (inp.ndim - 1))).requires_grad_(True)
                    out = out_mod(layer.forward(rep))
                transposes.append((rep, out))
                inputs.append(inp[None])
                outputs.append(out.reshape(n_classes, n, *out.shape[1:]))
    grad_outputs = rule.gradient_mapper(grad, outputs)
    if isinstance(grad_outputs, torch.Tensor):  # single-output rules return the tensor itself
        grad_outputs = (grad_outputs,)
    gradients = []
    for transpose, grad_output in zip(transposes, grad_outputs, strict=True):
        if fast and transpose is None:
            gradients.append(x.new_zeros((1, 1, *x.shape[1:])))
            continue
        flat = grad_output.expand(n_classes, *grad_output.shape[1:]).reshape(
            n_classes * n, *grad_output.shape[2:]
        )
        if fast:
            gradient = _transposed(module, transpose, flat, (n_classes * n, *x.shape[1:]))
        else:
            rep, out = transpose
            (gradient,) = torch.autograd.grad(out, rep, flat)
        gradients.append(gradient.reshape(n_classes, n, *x.shape[1:]))
    result = rule.reducer(inputs, gradients)
    return result.expand(n_classes, *result.shape[1:]).reshape(n_classes * n, *x.shape[1:])


# The backward functions that need only the shapes of what they saw: between the replayed layers
# of a DenseNet there are concatenations, average poolings, means and reshapes.
_VALUE_FREE_BACKWARD = frozenset(
    {
        "AccumulateGrad",
        "AdaptiveAvgPool2DBackward0",
        "AddBackward0",
        "AvgPool2DBackward0",
        "CatBackward0",
        "CloneBackward0",
        "ExpandBackward0",
        "MeanBackward0",
        "MeanBackward1",
        "NegBackward0",
        "PermuteBackward0",
        "ReshapeAliasBackward0",
        "SelectBackward0",
        "SliceBackward0",
        "SplitBackward0",
        "SplitWithSizesBackward0",
        "SqueezeBackward0",
        "SqueezeBackward1",
        "StackBackward0",
        "SubBackward0",
        "SumBackward0",
        "SumBackward1",
        "TransposeBackward0",
        "UnbindBackward0",
        "UnsafeViewBackward0",
        "UnsqueezeBackward0",
        "ViewBackward0",
        "_ReplayBackward",
    }
)


def _value_free(grad_fn: object) -> bool:
    """Whether every node of the autograd graph below ``grad_fn`` is in ``_VALUE_FREE_BACKWARD``."""
    seen: set[int] = set()
    stack = [grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if type(node).__name__ not in _VALUE_FREE_BACKWARD:
            return False
        stack.extend(child for child, _ in node.next_functions)
    return True


def relevance(
    model: nn.Module,
    composite: Composite,
    images: torch.Tensor,
    classes: Sequence[int],
    *,
    output_relevance: str = "logit",
) -> torch.Tensor:
    """Input relevance ``[N, C, 3, H, W]`` of one batch for every requested class.

    Equal to zennit's ``Gradient(model, composite)(images, attr_output=one_hot * logits)``
    for each class separately (``output_relevance="logit"``; ``"one"``: ``one_hot``), but
    computed with one recording forward pass and one class-batched backward pass (see the
    module docstring). The lower-level half of :func:`explain`: call it with the model in eval
    mode; it applies and removes the composite's canonizers itself and registers no hooks
    that outlive it.
    """
    classes = list(classes)
    n_classes, n = len(classes), images.shape[0]
    handles = RemovableHandleList()
    layers: list[_Layer] = []
    recorders = []
    try:
        for canonizer in composite.canonizers:
            handles.extend(canonizer.apply(model))
        # the rule of every module, as zennit's Composite.register assigns them; the outermost
        # hooked module wins (as with zennit, whose outer hook overrides the inner ones)
        context: dict = {}
        mapped: dict[str, tuple[nn.Module, object]] = {}
        for name, module in model.named_modules():
            template = composite.module_map(context, name, module)
            if template is not None:
                mapped[name] = (module, template)
        for name, (module, rule) in mapped.items():
            parts = name.split(".") if name else []
            if any(".".join(parts[:k]) in mapped for k in range(len(parts))):
                continue
            forward = module.forward  # the (possibly canonized) forward in place now
            layers.append(_Layer(module, rule, forward, []))
        # unhooked max pools and ThresholdReLUs (zennit: their plain gradient) are replayed too,
        # with the recorded indices / inputs
        for name, module in model.named_modules():
            parts = name.split(".") if name else []
            marker = {nn.MaxPool2d: _MAX_POOL, ThresholdReLU: _GATE}.get(type(module))
            if marker is not None and not any(".".join(parts[:k]) in mapped for k in range(len(parts) + 1)):
                layers.append(_Layer(module, marker, module.forward, []))

        def recorder(layer: _Layer):
            def hook(module: nn.Module, args: tuple, output: object) -> None:
                if (
                    len(args) != 1
                    or not isinstance(args[0], torch.Tensor)
                    or not isinstance(output, torch.Tensor)
                ):
                    raise ValueError(f"LRP layer {type(module).__name__} must map one tensor to one tensor")
                record = (args[0].detach(), output.detach())
                if layer.rule is _MAX_POOL:
                    m = module
                    _, indices = torch.nn.functional.max_pool2d(
                        record[0],
                        m.kernel_size,
                        m.stride,
                        m.padding,
                        m.dilation,
                        m.ceil_mode,
                        return_indices=True,
                    )
                    record = (*record, indices)
                layer.records.append(record)

            return hook

        for layer in layers:
            recorders.append(layer.module.register_forward_hook(recorder(layer)))
        with torch.no_grad():
            logits = model(images)
        for handle in recorders:
            handle.remove()
        recorders.clear()
        if logits.ndim != 2:
            raise ValueError(f"model must return logits of shape [N, classes], got {list(logits.shape)}")

        # replay: every hooked layer returns its recorded output, repeated per class
        previous_forwards = []
        for layer in layers:
            layer.n_classes = n_classes
            previous_forwards.append(layer.module.__dict__.get("forward"))

            def replay(self: nn.Module, x: torch.Tensor, _layer: _Layer = layer) -> torch.Tensor:
                return _Replay.apply(x, _layer, next(_layer.counter))

            layer.module.forward = types.MethodType(replay, layer.module)
        try:
            # First try a shape-only replay (zeros that take no memory): the backward of the
            # hooked layers is their rule, and what lies between them (concatenations, poolings,
            # reshapes) has a backward that needs shapes only. If anything between them needs the
            # values (_value_free says no), or fails on a zero-stride tensor, replay the values.
            for values in (False, True):
                for layer in layers:
                    layer.counter, layer.values = itertools.count(), values
                try:
                    with torch.enable_grad():
                        repeated = images.repeat(n_classes, 1, 1, 1).requires_grad_(True)
                        replayed = model(repeated)
                except RuntimeError:
                    if values:
                        raise
                    continue
                if values or _value_free(replayed.grad_fn):
                    break
            with torch.enable_grad():
                start = replayed.new_zeros(replayed.shape).view(n_classes, n, -1)
                for k, c in enumerate(classes):
                    start[k, :, c] = logits[:, c] if output_relevance == "logit" else 1.0
                (result,) = torch.autograd.grad(replayed, repeated, start.view_as(replayed))
        finally:
            for layer, previous in zip(layers, previous_forwards, strict=True):
                if previous is None:
                    del layer.module.forward
                else:
                    layer.module.forward = previous
    finally:
        for handle in recorders:
            handle.remove()
        for layer in layers:
            layer.records.clear()
        for handle in reversed(handles):
            handle.remove()
    return result.view(n_classes, n, *images.shape[1:]).transpose(0, 1)


# --------------------------------------------------------------------------- public call


def zennit_relevance(
    model: nn.Module,
    composite: Composite,
    images: torch.Tensor,
    classes: Sequence[int],
    *,
    output_relevance: str = "logit",
) -> torch.Tensor:
    """Input relevance ``[N, C, 3, H, W]`` from zennit's ``Gradient`` attributor, one class at a time.

    The plain route of :func:`relevance`: zennit registers the composite's rules as backward hooks
    and computes one class per backward pass, through its public API only.
    """
    from zennit.attribution import Gradient

    results = []
    with Gradient(model, composite) as attributor:
        for target in classes:
            def seed(output: torch.Tensor, target: int = target) -> torch.Tensor:
                one_hot = torch.zeros_like(output)
                one_hot[:, target] = 1.0
                return output * one_hot if output_relevance == "logit" else one_hot

            _, result = attributor(images, attr_output=seed)
            results.append(result.detach())
    return torch.stack(results, dim=1)


def explain(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[int] | None = None,
    *,
    rule: str = "epsilon",
    batch_size: int = 64,
    first_layer: str | None = None,
    epsilon: float = 1.0,
    stabilizer: float = 1e-6,
    ignore_bias: bool = False,
    shift: str | None = None,
    canonize: bool = True,
    output_relevance: str = "logit",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    engine: str = "batched",
) -> np.ndarray:
    """LRP relevance maps of every image for every requested class.

    Parameters
    ----------
    model : torch.nn.Module
        A timm DenseNet returning logits ``[N, classes]`` (any model with ``canonize=False``);
        run in eval mode here (each module's training flag is restored afterwards). CUDA is
        used when the model is on CUDA.
    images : Tensor, shape (N, 3, H, W)
        ImageNet-normalised images.
    classes : sequence of int, optional
        Indices into the model's outputs; ``None`` explains every output.
    rule : {"z", "epsilon", "alpha2beta1", "deep_taylor", "epsilon_plus_flat"}
        The paper's four rules and the practitioners' composite; see :func:`make_composite`.
    batch_size : int
        Images x classes per pass (``batch_size // len(classes)`` images at a time, at least
        one; classes are split when there are more than ``batch_size``).
    first_layer, epsilon, stabilizer, ignore_bias, shift, canonize, mean, std
        See :func:`make_composite`. A model with a ``first_layer_space`` attribute (``(mean, std)``
        of its first convolution's input, e.g. a torchxrayvision model whose input scaling is
        folded into that layer, :func:`shamsul_utils.models.from_torchxrayvision`) overrides
        ``mean`` and ``std``.
    output_relevance : {"logit", "one"}
        Relevance put on the explained output: its logit ``f_c(x)`` (Bach et al. 2015; the
        map then sums to about the logit) or 1 (zennit's one-hot default).
    engine : {"batched", "zennit"}
        ``"batched"``: the class-batched engine (:func:`relevance`, several times faster for 14
        classes). ``"zennit"``: zennit's own ``Gradient`` attributor with the same composite, one
        class at a time (:func:`zennit_relevance`): the plain route, which needs nothing of
        zennit's internals; use it when an upgrade of torch or zennit breaks the engine's
        equality test. Both give the same maps to rounding (tested in float64).

    Returns
    -------
    ndarray of float32, shape (N, len(classes), H, W)
        Signed relevance, summed over the colour channels.

    Raises
    ------
    ValueError
        Bad images or classes, unknown rule or option, or a model the canonizer cannot handle.

    Notes
    -----
    Deviations and choices:

    * One rule for all layers, classifier included (as the paper's four named maps); only the
      first layer may differ (``first_layer``). Deep Taylor uses z+ above and z^B on the pixel
      layer (Montavon et al. 2017); pass ``first_layer="same"`` for z+ everywhere.
    * ``"z"`` is LRP-0 with zennit's ``1e-6`` stabiliser in the denominator (exact LRP-0 would
      divide by zero for a zero pre-activation).
    * BatchNorms are merged by :class:`DenseNetCanonizer` (after Pahde et al. 2023), which the
      original LRP papers (for BN-free networks) do not cover; unlike Pahde et al., inactive units
      output 0 and receive no relevance (see the module docstring).
    * Biases absorb relevance unless ``ignore_bias=True``; maps then do not sum exactly to
      the logit.

    Examples
    --------
    >>> import torch
    >>> from shamsul_utils.models import build_model
    >>> model = build_model("densenet_small", growth_rate=8, block_config=(2, 2, 2))
    >>> maps = explain(model, torch.randn(2, 3, 64, 64), classes=[2, 5], rule="z")
    >>> maps.shape, maps.dtype
    ((2, 2, 64, 64), dtype('float32'))
    """
    class_list = check_inputs(model, images, classes, batch_size=batch_size)
    if output_relevance not in ("logit", "one"):
        raise ValueError(f"output_relevance must be 'logit' or 'one', got {output_relevance!r}")
    if engine not in ("batched", "zennit"):
        raise ValueError(f"engine must be 'batched' or 'zennit', got {engine!r}")
    compute = relevance if engine == "batched" else zennit_relevance
    composite = make_composite(
        rule,
        first_layer=first_layer,
        epsilon=epsilon,
        stabilizer=stabilizer,
        ignore_bias=ignore_bias,
        shift=shift,
        canonize=canonize,
        mean=getattr(model, "first_layer_space", (mean, std))[0],
        std=getattr(model, "first_layer_space", (mean, std))[1],
    )
    device, dtype = model_device(model), model_dtype(model)
    n = images.shape[0]
    class_step = min(len(class_list), int(batch_size))
    image_step = max(1, int(batch_size) // class_step)
    out = np.empty((n, len(class_list), *images.shape[2:]), dtype=np.float32)
    with evaluation_mode(model):
        for part in chunks(n, image_step):
            batch = images[part].to(device=device, dtype=dtype)
            for group in chunks(len(class_list), class_step):
                rel = compute(model, composite, batch, class_list[group], output_relevance=output_relevance)
                out[part, group] = rel.sum(dim=2).to("cpu", torch.float32).numpy()
    return out
