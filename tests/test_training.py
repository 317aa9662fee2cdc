"""Training: the loss falls, resume equals an uninterrupted run, predictions are well formed, weights fail loudly."""

import numpy as np
import pytest
import torch

from shamsul_utils import training
from shamsul_utils.config import load_profile
from shamsul_utils.labels import CLASSES
from shamsul_utils.models import build_model, load_pretrained, load_trained_model
from shamsul_utils.phantom import PhantomSettings, write_dataset


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    write_dataset(root, sizes={"train": 64, "valid": 32, "test": 32}, seed=1, settings=PhantomSettings(image_size=64))
    return root


def _profile(data_root, run_root, monkeypatch, **training_overrides):
    monkeypatch.setenv("SHAMSUL_RUNS", str(run_root))
    return load_profile("smoke", {"data": {"root": str(data_root), "phantom": {"image_size": 64}},
                                     "model": {"input_size": 32, "block_config": [1, 1, 1], "growth_rate": 4},
                                     "training": {"epochs": 3, "batch_size": 16, "early_stopping_patience": 9,
                                                  **training_overrides}})


def test_loss_falls_and_resume_gives_identical_weights(data_root, tmp_path, monkeypatch):
    straight = _profile(data_root, tmp_path / "straight", monkeypatch, augment_shift=0.1)
    result = training.train(straight, progress=False)
    assert len(result.history) == 3
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]

    interrupted = _profile(data_root, tmp_path / "interrupted", monkeypatch, augment_shift=0.1)
    partial = training.train(interrupted, progress=False, max_epochs_this_call=1)
    assert len(partial.history) == 1
    resumed = training.train(interrupted, progress=False)
    assert not resumed.reused and len(resumed.history) == 3

    first = torch.load(tmp_path / "straight" / "smoke" / "checkpoints" / "last.pt", weights_only=False)["model"]
    second = torch.load(tmp_path / "interrupted" / "smoke" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key

    again = training.train(interrupted, progress=False)
    assert again.reused, "a finished training with the same fingerprint is reused"


def test_step_schedule_rates_by_hand_and_resume(data_root, tmp_path, monkeypatch):
    """Epochs after each of step_epochs run at a rate plateau_factor lower, whatever the validation loss."""
    epochs, rate = 4, 0.01
    settings = dict(schedule="step", step_epochs=[1, 3], plateau_factor=0.5, epochs=epochs, learning_rate=rate)
    straight = _profile(data_root, tmp_path / "straight", monkeypatch, **settings)
    history = training.train(straight, progress=False).history
    np.testing.assert_allclose(history["learning_rate"], [0.01, 0.005, 0.005, 0.0025], rtol=1e-12)

    plateau = _profile(data_root, tmp_path / "plateau", monkeypatch, epochs=2, learning_rate=rate)
    assert training.train(plateau, progress=False).history["learning_rate"].iloc[0] == rate, \
        "the history records the rate an epoch ran at, not the next one"

    interrupted = _profile(data_root, tmp_path / "interrupted", monkeypatch, **settings)
    training.train(interrupted, progress=False, max_epochs_this_call=2)
    resumed = training.train(interrupted, progress=False).history
    np.testing.assert_allclose(resumed["learning_rate"], [0.01, 0.005, 0.005, 0.0025], rtol=1e-12)
    first = torch.load(tmp_path / "straight" / "smoke" / "checkpoints" / "last.pt", weights_only=False)["model"]
    second = torch.load(tmp_path / "interrupted" / "smoke" / "checkpoints" / "last.pt", weights_only=False)["model"]
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_predictions_shape_order_and_range(data_root, tmp_path, monkeypatch):
    profile = _profile(data_root, tmp_path / "run", monkeypatch, epochs=1)
    training.train(profile, progress=False)
    model, checkpoint = load_trained_model(profile, device=torch.device("cpu"))
    assert checkpoint["epoch"] == 1
    split = training.read_split(profile, "test")
    table = training.predict_split(profile, model, split)
    assert list(table.columns[15:]) == list(CLASSES)
    probabilities = table[list(CLASSES)].to_numpy()
    assert probabilities.shape == (32, 14)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert np.array_equal(table[[f"label: {name}" for name in CLASSES]].to_numpy(), split.labels)
    reloaded = training.load_predictions(profile, "test")
    assert list(reloaded["cxr_id"]) == list(table["cxr_id"])
    assert np.allclose(reloaded[list(CLASSES)].to_numpy(), probabilities, atol=1e-7)


def test_offline_imagenet_weights_fail_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    model = build_model("densenet_small", block_config=(1, 1, 1), growth_rate=4)
    with pytest.raises(RuntimeError) as error:
        load_pretrained(model, "imagenet", architecture="densenet121")
    message = str(error.value)
    assert "\n" not in message and "model.pretrained" in message and "offline" in message


def test_local_weights_file(tmp_path):
    source = build_model("densenet_small", block_config=(1, 1, 1), growth_rate=4)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    target = build_model("densenet_small", block_config=(1, 1, 1), growth_rate=4)
    description = load_pretrained(target, str(tmp_path / "weights.pth"), architecture="densenet_small")
    assert "weights.pth" in description
    assert torch.equal(target.features.conv0.weight, source.features.conv0.weight)
    with pytest.raises(RuntimeError, match="not found"):
        load_pretrained(target, str(tmp_path / "missing.pth"), architecture="densenet_small")


def test_a_weights_file_that_would_run_code_is_refused_in_one_line_naming_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"features.conv0.weight": Payload()}, tmp_path / "evil.pth")
    target = build_model("densenet_small", block_config=(1, 1, 1), growth_rate=4)
    with pytest.raises(RuntimeError) as raised:
        load_pretrained(target, str(tmp_path / "evil.pth"), architecture="densenet_small")
    message = str(raised.value)
    assert "\n" not in message and message.startswith("model.pretrained: ") and "evil.pth" in message
    assert not marker.exists()


def test_edited_labels_or_training_code_mean_training_again(data_root, tmp_path, monkeypatch, capsys):
    """The fingerprint covers the data on disk and the training code, not only the settings."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    profile = _profile(root, tmp_path / "runs", monkeypatch, epochs=1)
    first = training.train(profile, progress=False)
    assert training.train(profile, progress=False).reused
    csv = next(root.glob("*/train.csv"))
    lines = csv.read_text().splitlines()
    header, row = lines[0].split(","), lines[1].split(",")
    column = header.index("Cardiomegaly")
    row[column] = "0.0" if row[column] == "1.0" else "1.0"  # one label edited in place
    csv.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    again = training.train(profile, progress=False)
    assert not again.reused and "training again: the data on disk changed" in capsys.readouterr().out
    assert first.best_epoch == again.best_epoch == 1
    monkeypatch.setattr(training, "_TRAINING_CODE", ("training.py", "models.py"))  # other training code
    assert not training.train(profile, progress=False).reused
    assert "the training code changed" in capsys.readouterr().out
