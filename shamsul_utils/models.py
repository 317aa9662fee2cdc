"""The classifier: a timm DenseNet with a 14-logit head (probabilities by sigmoid).

``densenet121`` is the paper's model (Huang et al. 2017, as in SHAMSUL and CheXpert).
``densenet_small`` is timm's own :class:`timm.models.densenet.DenseNet` class with fewer,
narrower dense blocks, so that the demo and smoke profiles run on a 2-core CPU while every
explainer and LRP rule runs exactly the same module types (dense layers, concatenations,
BatchNorm, transitions) as on DenseNet121.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from .labels import CLASSES

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalize",
    "denormalize",
    "build_model",
    "last_dense_block",
    "resolve_device",
    "model_device",
    "hub_reachable",
    "load_pretrained",
    "model_from_profile",
    "save_checkpoint",
    "load_checkpoint",
    "read_weights",
    "load_model_checkpoint",
    "TORCHXRAYVISION",
    "GrayInput",
    "from_torchxrayvision",
    "load_torchxrayvision",
    "load_given_model",
    "load_trained_model",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def normalize(gray) -> torch.Tensor:
    """uint8 grayscale ``[..., H, W]`` (array or tensor) to the models' input: float32
    ``[..., 3, H, W]``, the gray value repeated in the three channels, ImageNet-normalised."""
    import numpy as np

    if isinstance(gray, torch.Tensor):
        tensor = gray.to(torch.float32) / 255.0
    else:
        tensor = torch.from_numpy(np.asarray(gray, dtype=np.float32) / np.float32(255.0))
    tensor = tensor.unsqueeze(-3).expand(*tensor.shape[:-2], 3, *tensor.shape[-2:])
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((tensor - mean) / std).contiguous()


def denormalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The inverse of :func:`normalize` for images normalised with ``mean`` and ``std``: the RGB
    images ``images * std + mean`` as float64 numpy ``[N, H, W, 3]`` (not clipped)."""
    import numpy as np

    array = images.detach().to("cpu", torch.float64).numpy().transpose(0, 2, 3, 1)
    return array * np.asarray(std, dtype=np.float64) + np.asarray(mean, dtype=np.float64)


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




def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (or buffer); CPU for a parameter-free module."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def resolve_device(setting: str = "auto") -> torch.device:
    """``"auto"``: CUDA when present, else CPU; ``"cpu"``/``"cuda"`` as asked."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA device; set device: auto or cpu")
    return torch.device(setting)


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the weights' host opens within ``timeout`` seconds.

    Asked once before a download, so that an offline machine is told in seconds (the local cache
    is then used alone) instead of after the hub client's retries (about 48 s measured).
    """
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


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
        from huggingface_hub import constants

        online = hub_reachable()
        saved = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = saved or not online  # offline: the local cache only, no retries
        try:
            pretrained = timm.create_model(architecture, pretrained=True, num_classes=0)
        except Exception as error:  # timm raises many kinds (network, hub, file) - all mean "not available"
            reason = "offline: huggingface.co is not reachable" if not online else "perhaps offline"
            raise RuntimeError(
                f"ImageNet weights for {architecture} could not be obtained ({error.__class__.__name__}; {reason}): "
                "put the weights in the Hugging Face cache, or set model.pretrained to a local weights file "
                "(or 'none') in the profile"
            ) from None
        finally:
            constants.HF_HUB_OFFLINE = saved
        state = pretrained.state_dict()
        description = f"ImageNet weights of timm's {architecture}"
    else:
        from pathlib import Path

        path = Path(source).expanduser()
        if not path.is_file():
            raise RuntimeError(f"model.pretrained: weights file {path} not found; set it to an existing file, "
                               "'imagenet' or 'none'")
        from .errors import DataError

        try:  # one reader of weight files (tensors only, no code in the file runs), one-line errors
            state, _ = read_weights(path)
        except DataError as error:
            raise RuntimeError(f"model.pretrained: {error}") from None
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
    """Read a checkpoint written by :func:`save_checkpoint`; one-line error if unreadable.

    Read with ``weights_only=True``: tensors and plain containers only, so a crafted file cannot
    run code (every checkpoint this project writes is of that kind).
    """
    from pathlib import Path

    from .errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found; run notebook 02_training first (or make reproduce)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused an object: never loaded, never run
        raise DataError(f"{path}: unreadable checkpoint (UnpicklingError: it holds objects other than tensors and "
                        "plain containers, which are not loaded); delete it and retrain") from None
    except Exception as error:  # a truncated or foreign file
        raise DataError(f"{path}: unreadable checkpoint ({error.__class__.__name__}); delete it and retrain") from None


# Where checkpoints written by common tools keep the weights and the class order.
_STATE_KEYS = ("model", "state_dict", "model_state_dict", "net", "weights")
_CLASS_KEYS = ("classes", "class_names", "pathologies", "targets")


def read_weights(path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """The state dict of a checkpoint file and the class order it states, if any.

    Accepted: this project's checkpoints (``{"model": state, ...}``), a plain state dict,
    ``{"state_dict": ...}`` (PyTorch Lightning), ``{"model_state_dict": ...}``, with or without a
    common key prefix (``module.`` from DataParallel, ``model.`` from Lightning, ``densenet121.``)
    and torchvision's old ``norm.1``-style DenseNet names. The class order is read from a
    ``classes``/``class_names``/``pathologies``/``targets`` list of names next to the weights.
    Read with ``weights_only=True`` (no code in the file runs); ``.safetensors`` is read by
    safetensors.
    """
    import re
    from pathlib import Path

    from .errors import DataError

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: model checkpoint not found (model.checkpoint)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickled objects, truncation, foreign formats
        raise DataError(f"{path}: not a readable weights file with tensors only ({error.__class__.__name__}); "
                        "save the model's state_dict (torch.save(model.state_dict(), path))") from None
    classes = None
    state = raw
    if isinstance(raw, dict):
        for key in _CLASS_KEYS:
            value = raw.get(key)
            if isinstance(value, (list, tuple)) and value and all(isinstance(name, str) for name in value):
                classes = list(value)
                break
        for key in _STATE_KEYS:
            if isinstance(raw.get(key), dict):
                state = raw[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise DataError(f"{path}: no state dict of tensors found (looked at the top level and under "
                        f"{', '.join(_STATE_KEYS)})")
    state = dict(state)
    while True:  # strip a prefix every key shares (module., model., densenet121., ...)
        heads = {key.split(".", 1)[0] for key in state}
        if len(heads) != 1 or heads & {"features", "classifier"} or not all("." in key for key in state):
            break
        state = {key.split(".", 1)[1]: value for key, value in state.items()}
    legacy = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")
    state = {legacy.sub(lambda match: match.group(1) + match.group(2), key): value for key, value in state.items()}
    state = {key.replace("classifier.0.", "classifier.", 1) if key.startswith("classifier.0.") else key: value
             for key, value in state.items()}
    return state, classes


def load_model_checkpoint(path, model: nn.Module, *, architecture: str = "densenet121") -> str:
    """Load a whole trained 14-class model (backbone and head) into ``model``; returns a description.

    The head keeps its weights. When the checkpoint states its class order (see
    :func:`read_weights`), the head's rows are permuted into :data:`CLASSES` order by name
    (CheXlocalize's "Airspace Opacity" is "Lung Opacity"); otherwise a 14-output head is taken
    to be in CheXpert's order. Refused with one line: no head, a head that does not give all 14
    classes, unknown or repeated names, and any missing, unexpected or differently shaped weight.
    """
    from .errors import DataError
    from .labels import CHEXLOCALIZE_TASK_NAMES

    state, classes = read_weights(path)
    if "classifier.weight" not in state:
        raise DataError(f"{path}: no classifier head ('classifier.weight'); a backbone-only file belongs in "
                        "model.pretrained, a trained 14-class model in model.checkpoint")
    weight, bias = state["classifier.weight"], state.get("classifier.bias")
    outputs = weight.shape[0]
    if classes is not None:
        aliases = {task: name for name, task in CHEXLOCALIZE_TASK_NAMES.items()}
        names = [aliases.get(name, name) for name in classes]
        unknown = [name for name in names if name not in CLASSES]
        if unknown:
            raise DataError(f"{path}: class name(s) {', '.join(map(repr, unknown[:3]))} are not among CheXpert's 14")
        if len(set(names)) != len(names):
            raise DataError(f"{path}: a class is named twice in the checkpoint's class order")
        if len(names) != outputs:
            raise DataError(f"{path}: the head has {outputs} outputs but the checkpoint names {len(names)} classes")
        missing = [name for name in CLASSES if name not in names]
        if missing:
            raise DataError(f"{path}: the head lacks {len(missing)} of the 14 classes ({', '.join(missing[:3])}...); "
                            "all 14 are needed")
        order = torch.tensor([names.index(name) for name in CLASSES])
        state["classifier.weight"] = weight[order]
        if bias is not None:
            state["classifier.bias"] = bias[order]
    elif outputs != len(CLASSES):
        raise DataError(f"{path}: the head has {outputs} outputs and the checkpoint states no class order "
                        f"('classes': [...]); {len(CLASSES)} in CheXpert's order are needed")
    expected = model.state_dict()
    for key, value in state.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            raise DataError(f"{path}: {key} has shape {tuple(value.shape)}, {architecture} needs "
                            f"{tuple(expected[key].shape)}")
    missing = sorted(key for key in set(expected) - set(state) if not key.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))  # (old files lack BN counters; load_state_dict keeps ours)
    if missing or unexpected:
        raise DataError(f"{path}: does not fit {architecture}: {len(missing)} missing weight(s)"
                        f"{' (e.g. ' + missing[0] + ')' if missing else ''}, {len(unexpected)} unexpected"
                        f"{' (e.g. ' + unexpected[0] + ')' if unexpected else ''}")
    model.load_state_dict(state, strict=False)  # only BN counters may be absent (checked above)
    order = "classes mapped by name" if classes is not None else "head taken in CheXpert's class order"
    return f"trained model from {Path(path).name} ({order})"


# ``model.checkpoint: torchxrayvision:<weights>`` takes a pretrained model of torchxrayvision.
TORCHXRAYVISION = "torchxrayvision:"
_TORCHXRAYVISION_NAMES = {"Effusion": "Pleural Effusion"}  # its names that differ from CheXpert's


class GrayInput(nn.Module):
    """Channel 0 of this project's input (ImageNet-normalised, 3 equal channels), padded with the
    value that the folded first convolution maps to the original network's zero padding."""

    def __init__(self, padding: int, value: float):
        super().__init__()
        self.padding, self.value = padding, value

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(images[:, :1], (self.padding,) * 4, value=self.value)


def from_torchxrayvision(network: nn.Module, labels, *, source: str = "torchxrayvision") -> nn.Module:
    """A torchxrayvision DenseNet121 as this project's model: a timm DenseNet121 that takes this
    project's input and returns the 14 CheXpert logits.

    Parameters
    ----------
    network : torchxrayvision.models.DenseNet
        With or without pretrained weights (Cohen et al. 2022, torchxrayvision).
    labels : sequence of str
        Its output names (``""`` for outputs it was not trained on).
    source : str
        Named in error messages.

    Returns
    -------
    torch.nn.Module
        timm's ``densenet121`` (one input channel) with ``network``'s weights, so that Grad-CAM's
        target layer and the LRP canonizer apply unchanged, and:

        * **input scaling folded into the first convolution.** torchxrayvision expects one channel
          scaled to [-1024, 1024] (``v = 2048 g - 1024`` for a gray value ``g`` in [0, 1]); this
          project feeds ImageNet-normalised channels ``x = (g - m) / s``, so ``v = a x + b`` with
          ``a = 2048 s`` and ``b = 2048 m - 1024`` on channel 0, and ``conv0(v) = conv(a W, x') +
          b sum(W)`` where ``x'`` is ``x`` padded with ``-b / a`` (which the affine map sends to the
          original's zero padding). The function is the same (to float rounding; tested against
          torchxrayvision's own forward). LIME's hide colour and SHAP's fill are values of this
          project's input, which the folded layer maps exactly onto torchxrayvision's scale, and
          LRP's z^B bounds come from ``model.first_layer_space`` (the first convolution's input
          is channel 0 of the ImageNet-normalised image).
        * **outputs by name.** The head keeps the rows of the classes CheXpert names
          (torchxrayvision's "Effusion" is "Pleural Effusion"); a class the network lacks gets a
          zero row and is listed in ``model.missing_classes``: its predictions are reported as
          NaN and its pairs are not scored, never filled in.
        * torchxrayvision's ``op_threshs`` calibration is not applied: probabilities are the
          sigmoid of the logits, as for every model here (per-class AUROC is unchanged by it).
    """
    from collections import OrderedDict

    import timm

    from .errors import DataError

    names = [_TORCHXRAYVISION_NAMES.get(name, name) for name in labels]
    state = {key: value for key, value in network.state_dict().items() if key != "op_threshs"}
    if state["classifier.weight"].shape[0] != len(names):
        raise DataError(f"{source}: {state['classifier.weight'].shape[0]} outputs but {len(names)} names")
    model = timm.create_model("densenet121", pretrained=False, in_chans=1, num_classes=len(names))
    model.load_state_dict(state)
    conv = model.features.conv0
    scale = 2048.0 * IMAGENET_STD[0]
    shift = 2048.0 * IMAGENET_MEAN[0] - 1024.0
    folded = nn.Conv2d(1, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=0, bias=True)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale)
        folded.bias.copy_(conv.weight.sum(dim=(1, 2, 3)) * shift)
    children = [("gray", GrayInput(conv.padding[0], -shift / scale)), ("conv0", folded)]
    children += [(name, module) for name, module in model.features.named_children() if name != "conv0"]
    model.features = nn.Sequential(OrderedDict(children))
    head = nn.Linear(model.classifier.in_features, len(CLASSES))
    missing = []
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        for index, name in enumerate(CLASSES):
            if name in names:
                head.weight[index] = model.classifier.weight[names.index(name)]
                head.bias[index] = model.classifier.bias[names.index(name)]
            else:
                missing.append(name)
    model.classifier = head
    model.num_classes = len(CLASSES)  # timm's attribute, read by the explainers' class checks
    model.missing_classes = tuple(missing)
    model.first_layer_space = ((IMAGENET_MEAN[0],), (IMAGENET_STD[0],))
    return model.eval()


def load_torchxrayvision(weights: str) -> tuple[nn.Module, str]:
    """torchxrayvision's pretrained ``weights`` (e.g. ``densenet121-res224-chex``, trained on CheXpert),
    fetched by torchxrayvision into its cache (``~/.torchxrayvision``), as :func:`from_torchxrayvision`.

    Offline, with the weights not cached, it fails in seconds with one line.
    """
    import os

    from .errors import DataError

    try:
        import torchxrayvision as xrv
    except ImportError:
        raise DataError("torchxrayvision is not installed; run make setup (it is in requirements.lock)") from None
    if weights not in xrv.models.model_urls or not weights.startswith("densenet121"):
        choices = sorted(name for name in xrv.models.model_urls if name.startswith("densenet121"))
        raise DataError(f"model.checkpoint: torchxrayvision has no DenseNet121 weights {weights!r}; "
                        f"choose one of {', '.join(choices)}")
    url = xrv.models.model_urls[weights]["weights_url"]
    cached = os.path.join(os.path.expanduser(xrv.utils.get_cache_dir()), os.path.basename(url))
    if not os.path.isfile(cached) and not hub_reachable("github.com"):
        raise DataError(f"torchxrayvision weights {weights} are not in {cached} and github.com is not reachable "
                        f"(offline?): download {url} to that path on a machine with network")
    try:
        network = xrv.models.DenseNet(weights=weights)
    except Exception as error:  # noqa: BLE001 - download and unpickling failures alike
        raise DataError(f"torchxrayvision weights {weights} could not be loaded ({error.__class__.__name__})") from None
    model = from_torchxrayvision(network, xrv.models.model_urls[weights]["labels"], source=weights)
    found = len(CLASSES) - len(model.missing_classes)
    return model, (f"torchxrayvision {weights} ({found} of the 14 classes; not predicted: "
                   f"{', '.join(model.missing_classes) or 'none'})")


def load_given_model(profile) -> tuple[nn.Module, str]:
    """The model of ``model.checkpoint`` (a file, or ``torchxrayvision:<weights>``) and a description."""
    if profile.model.checkpoint.startswith(TORCHXRAYVISION):
        return load_torchxrayvision(profile.model.checkpoint[len(TORCHXRAYVISION):])
    model = model_from_profile(profile)
    return model, load_model_checkpoint(profile.model.checkpoint_path, model, architecture=profile.model.architecture)


def load_trained_model(profile, *, device: torch.device | None = None) -> tuple[nn.Module, dict]:
    """The selected (best-validation) model of a profile, in eval mode, and its checkpoint metadata.

    The model is in ``channels_last`` memory format, which every explainer accepts unchanged.
    """
    if profile.model.checkpoint:
        model, description = load_given_model(profile)
        checkpoint = {"weights": description, "epoch": None}
    else:
        model = model_from_profile(profile)
        checkpoint = load_checkpoint(profile.paths.checkpoints / "best.pt")
        model.load_state_dict(checkpoint["model"])
    model.eval().to(device or resolve_device(profile.device))
    model.to(memory_format=torch.channels_last)  # about 1.6x faster DenseNet inference on CPU (measured)
    return model, {key: value for key, value in checkpoint.items() if key not in ("model", "optimizer", "scheduler")}
