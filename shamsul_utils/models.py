"""The classifier: a timm DenseNet with a 14-logit head (probabilities by sigmoid).

``densenet121`` is the paper's model (Huang et al. 2017, as in SHAMSUL and CheXpert).
``densenet_small`` is timm's own :class:`timm.models.densenet.DenseNet` class with fewer,
narrower dense blocks, so that the demo and smoke profiles run on a 2-core CPU while every
explainer and LRP rule runs exactly the same module types (dense layers, concatenations,
BatchNorm, transitions) as on DenseNet121.
"""

from __future__ import annotations


from torch import nn

from .labels import CLASSES

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_model",
    "last_dense_block",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def build_model(
    architecture: str = "densenet121",
    *,
    num_classes: int = len(CLASSES),
    growth_rate: int = 12,
    block_config: tuple[int, ...] = (4, 8, 12),
    drop_rate: float = 0.0,
) -> nn.Module:
    """A DenseNet-family classifier with ``num_classes`` logits, randomly initialised.

    Parameters
    ----------
    architecture : {"densenet121", "densenet_small"}
        ``densenet121``: timm's DenseNet121. ``densenet_small``: timm's ``DenseNet`` class with
        ``growth_rate`` and ``block_config``; three blocks give a stride-16 last feature map
        (8 x 8 at 128 px), fine enough for Grad-CAM on small findings.
    num_classes : int
        Number of logits (14 CheXpert classes).
    growth_rate, block_config : int, tuple of int
        Only for ``densenet_small``.
    drop_rate : float
        Dropout before the classifier.

    Notes
    -----
    Pretrained weights are loaded separately (see ``load_pretrained``) so that a missing
    download fails with one clear line rather than inside timm.
    """
    import timm
    from timm.models.densenet import DenseNet

    if architecture == "densenet121":
        return timm.create_model("densenet121", pretrained=False, num_classes=num_classes, drop_rate=drop_rate)
    if architecture == "densenet_small":
        return DenseNet(
            growth_rate=growth_rate,
            block_config=tuple(block_config),
            num_classes=num_classes,
            drop_rate=drop_rate,
        )
    raise ValueError(f"unknown architecture {architecture!r}; expected 'densenet121' or 'densenet_small'")


def last_dense_block(model: nn.Module) -> nn.Module:
    """The last dense block of a timm DenseNet (Grad-CAM's target layer in the paper)."""
    blocks = [module for name, module in model.features.named_children() if name.startswith("denseblock")]
    if not blocks:
        raise ValueError("model has no 'features.denseblockN' modules; is it a timm DenseNet?")
    return blocks[-1]


