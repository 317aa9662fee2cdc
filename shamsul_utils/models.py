"""The classifier: a timm DenseNet with a 14-logit head (probabilities by sigmoid).

``densenet121`` is the paper's model (Huang et al. 2017, as in SHAMSUL and CheXpert).
``densenet_small`` is timm's own :class:`timm.models.densenet.DenseNet` class with fewer,
narrower dense blocks, so that the demo and smoke profiles run on a 2-core CPU while every
explainer and LRP rule runs exactly the same module types (dense layers, concatenations,
BatchNorm, transitions) as on DenseNet121.
"""

from __future__ import annotations

import torch
from torch import nn

from .labels import CLASSES

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_model",
    "last_dense_block",
    "resolve_device",
    "load_pretrained",
    "model_from_profile",
    "save_checkpoint",
    "load_checkpoint",
    "load_trained_model",
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




def resolve_device(setting: str = "auto") -> torch.device:
    """``"auto"``: CUDA when present, else CPU; ``"cpu"``/``"cuda"`` as asked."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA device; set device: auto or cpu")
    return torch.device(setting)


def load_pretrained(model: nn.Module, source: str, *, architecture: str = "densenet121") -> str:
    """Load ImageNet (or other) weights into ``model``'s backbone; returns a one-line description.

    Parameters
    ----------
    model : nn.Module
        From :func:`build_model`; its 14-way classifier is kept (ImageNet's 1000-way head is dropped).
    source : str
        ``"none"``: keep the random initialisation. ``"imagenet"``: timm's pretrained weights,
        from the local Hugging Face hub cache or downloaded when the network allows.
        Anything else: a path to a ``state_dict`` file (``.pth``/``.pt``/``.safetensors``).

    Raises
    ------
    RuntimeError
        One line naming the setting to change when the weights cannot be obtained. There is
        never a silent fallback to random weights.
    """
    if source == "none":
        return "random initialisation (no pretrained weights)"
    if source == "imagenet":
        import timm

        try:
            pretrained = timm.create_model(architecture, pretrained=True, num_classes=0)
        except Exception as error:  # timm raises many kinds (network, hub, file) - all mean "not available"
            raise RuntimeError(
                f"ImageNet weights for {architecture} could not be obtained ({error.__class__.__name__}); "
                "you are probably offline: put the weights in the Hugging Face cache, or set "
                "model.pretrained to a local weights file (or 'none') in the profile"
            ) from None
        state = pretrained.state_dict()
        description = f"ImageNet weights of timm's {architecture}"
    else:
        from pathlib import Path

        path = Path(source).expanduser()
        if not path.is_file():
            raise RuntimeError(f"model.pretrained: weights file {path} not found; set it to an existing file, "
                               "'imagenet' or 'none'")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        description = f"weights from {path.name}"
    state = {key: value for key, value in state.items() if not key.startswith(("classifier.", "fc.", "head."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.startswith("classifier.")]
    if missing or unexpected:
        raise RuntimeError(f"model.pretrained: {description} do not fit {architecture} "
                           f"({len(missing)} missing, {len(unexpected)} unexpected keys)")
    return description


def model_from_profile(profile) -> nn.Module:
    """The (untrained) classifier a profile describes."""
    settings = profile.model
    return build_model(settings.architecture, growth_rate=settings.growth_rate,
                       block_config=settings.block_config, drop_rate=settings.drop_rate)


def save_checkpoint(path, state: dict) -> None:
    """``torch.save`` atomically (temporary file, then rename)."""
    from .files import atomic_path

    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; one-line error if unreadable."""
    from pathlib import Path

    from .errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found; run notebook 02_training first")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file
        raise DataError(f"{path}: unreadable checkpoint ({error.__class__.__name__}); delete it and retrain") from None


def load_trained_model(profile, *, device: torch.device | None = None) -> tuple[nn.Module, dict]:
    """The selected (best-validation) model of a profile, in eval mode, and its checkpoint metadata.

    The model is in ``channels_last`` memory format, which every explainer accepts unchanged.
    """
    checkpoint = load_checkpoint(profile.paths.checkpoints / "best.pt")
    model = model_from_profile(profile)
    model.load_state_dict(checkpoint["model"])
    model.eval().to(device or resolve_device(profile.device))
    model.to(memory_format=torch.channels_last)  # about 1.6x faster DenseNet inference on CPU (measured)
    return model, {key: value for key, value in checkpoint.items() if key not in ("model", "optimizer", "scheduler")}
