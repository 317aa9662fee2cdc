"""A model the user already has: every accepted checkpoint layout loads the same weights and head;
every refused one fails in one line."""

import pytest
import torch

from shamsul_utils.errors import DataError
from shamsul_utils.labels import CLASSES
from shamsul_utils.models import build_model, load_model_checkpoint

SMALL = {"growth_rate": 4, "block_config": (1, 1)}


def _trained():
    torch.manual_seed(0)
    model = build_model("densenet_small", **SMALL)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


def _fresh():
    return build_model("densenet_small", **SMALL).eval()


def _outputs(model):
    return model(torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32))


@pytest.mark.parametrize("layout", ["project", "plain", "lightning", "data_parallel", "named_shuffled"])
def test_accepted_layouts_give_the_same_model(tmp_path, layout):
    model = _trained()
    state = model.state_dict()
    if layout == "project":
        content = {"model": state, "epoch": 3, "fingerprint": "x"}
    elif layout == "plain":
        content = state
    elif layout == "lightning":
        content = {"state_dict": {f"model.{key}": value for key, value in state.items()}, "epoch": 1}
    elif layout == "data_parallel":
        content = {f"module.{key}": value for key, value in state.items()}
    else:  # a head in another class order, which the checkpoint names (Lung Opacity as CheXlocalize calls it)
        order = [(index + 5) % len(CLASSES) for index in range(len(CLASSES))]  # a rotation: not its own inverse
        shuffled = dict(state)
        shuffled["classifier.weight"] = state["classifier.weight"][order]
        shuffled["classifier.bias"] = state["classifier.bias"][order]
        names = ["Airspace Opacity" if CLASSES[index] == "Lung Opacity" else CLASSES[index] for index in order]
        content = {"state_dict": shuffled, "classes": names}
    torch.save(content, tmp_path / "model.pt")
    loaded = _fresh()
    description = load_model_checkpoint(tmp_path / "model.pt", loaded, architecture="densenet_small")
    assert "model.pt" in description
    with torch.no_grad():
        torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)


def test_refused_checkpoints_fail_in_one_line(tmp_path):
    state = _trained().state_dict()
    cases = {
        "no_head": ({key: value for key, value in state.items() if not key.startswith("classifier.")},
                    r"no classifier head"),
        "five_outputs": ({**state, "classifier.weight": state["classifier.weight"][:5],
                          "classifier.bias": state["classifier.bias"][:5]}, r"the head has 5 outputs and the "
                                                                            r"checkpoint states no class order"),
        "unknown_name": ({"state_dict": state, "classes": ["Nodule", *CLASSES[1:]]}, r"'Nodule' are not among"),
        "missing_class": ({"state_dict": {**state, "classifier.weight": state["classifier.weight"][:13],
                                          "classifier.bias": state["classifier.bias"][:13]},
                           "classes": list(CLASSES[:13])}, r"the head lacks 1 of the 14 classes"),
        "wrong_shape": ({**state, "features.conv0.weight": torch.zeros(3, 3, 7, 7)},
                        r"features.conv0.weight has shape \(3, 3, 7, 7\)"),
        "other_network": ({**state, "features.extra.weight": torch.zeros(1)}, r"1 unexpected \(e.g. features.extra"),
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / f"{name}.pt")
        with pytest.raises(DataError, match=message):
            load_model_checkpoint(tmp_path / f"{name}.pt", _fresh(), architecture="densenet_small")


def test_a_pickled_object_is_not_run(tmp_path):
    from shamsul_utils.models import load_checkpoint

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="not a readable weights file with tensors only"):
        load_model_checkpoint(tmp_path / "evil.pt", _fresh(), architecture="densenet_small")
    with pytest.raises(DataError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")  # the run's own best.pt / last.pt reader
    assert not marker.exists()


def test_imagenet_weights_offline_fail_in_seconds(tmp_path, monkeypatch):
    import time

    from huggingface_hub import constants

    from shamsul_utils import models

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(models, "hub_reachable", lambda *args, **kwargs: False)
    before = constants.HF_HUB_OFFLINE
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"huggingface.co is not reachable.*model.pretrained"):
        models.load_pretrained(build_model("densenet121"), "imagenet")
    assert time.perf_counter() - started < 10
    assert constants.HF_HUB_OFFLINE == before  # the hub's own setting is restored


def test_old_torchvision_names_without_batchnorm_counters(tmp_path):
    """A CheXNet-era file: ``module.densenet121.`` prefix, ``norm.1``-style names, a Sequential head
    (``classifier.0``) and no ``num_batches_tracked`` counters."""
    import re

    model = _trained()
    old = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        key = re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", key)
        key = key.replace("classifier.", "classifier.0.")
        old[f"module.densenet121.{key}"] = value
    assert any(".norm.1.weight" in key for key in old)
    torch.save({"state_dict": old}, tmp_path / "chexnet.pth.tar")
    loaded = _fresh()
    load_model_checkpoint(tmp_path / "chexnet.pth.tar", loaded, architecture="densenet_small")
    with torch.no_grad():
        torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)
