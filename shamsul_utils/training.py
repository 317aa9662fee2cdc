"""Train, resume and predict: the paper's recipe with honest model selection.

Recipe (Alam et al. 2023, after Irvin et al. 2019): binary cross-entropy over the 14 logits,
Adam, ReduceLROnPlateau on the validation loss. Deviations, all stated in the profiles:

* The checkpoint is selected on the **validation** split only, and the test split is scored once,
  afterwards (the paper selected on the images it reported on). ``training.select_on`` chooses the
  criterion: the lowest validation loss (``valid_loss``) or the highest validation mean AUROC
  (``valid_auroc``; demo and smoke, since the loss of a model trained from scratch at 1e-3 is noisy
  and rose while the AUROC still improved in our demo runs).
* Early stopping after ``early_stopping_patience`` epochs without improvement of that criterion.
* Demo and smoke train from scratch with a larger learning rate (1e-3); 1e-4 is a fine-tuning rate.
* ``training.schedule: step`` (demo) replaces the plateau rule by drops fixed in advance: the rate is
  multiplied by ``plateau_factor`` after each epoch of ``step_epochs`` (the classic step schedule of
  He et al. 2016). From scratch the validation loss is noisy, so the plateau rule drops the rate late
  and by chance (after epoch 5 or 6 of 8 in our three demo models, upon which the validation AUROC
  rose by 0.02-0.04 in one epoch); a drop planned in advance spends a short budget of epochs
  predictably. Over 6 epochs a cosine decay reached a validation AUROC of 0.899, a drop after epoch 4
  0.905 (``benchmarks/README.md``); the demo trains 5 epochs with that drop.

Reproducibility: every random choice (initialisation, shuffling, augmentation, dropout) is
seeded, deterministic algorithms are requested, and the checkpoint written atomically after
each epoch carries the optimiser, scheduler and random-generator states, so a killed run resumes
and ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from .config import Profile
from .datasets import ImageDataset, data_path, read_split
from .files import write_table
from .labels import CLASSES
from .metrics.classification import mean_auroc
from .models import (
    load_checkpoint,
    load_pretrained,
    model_device,
    model_from_profile,
    resolve_device,
    save_checkpoint,
)
from .notices import notice

__all__ = ["TrainingResult", "training_fingerprint", "train", "predict", "predict_split",
           "load_predictions"]


@dataclass
class TrainingResult:
    """What :func:`train` reports."""

    history: pd.DataFrame
    best_epoch: int
    seconds: float
    peak_rss_gb: float
    weights: str
    reused: bool
    trained: bool = True  # False: a given checkpoint (model.checkpoint) is evaluated, nothing is trained


# The modules whose code decides the trained weights (their source is part of the fingerprint).
_TRAINING_CODE = ("training.py", "models.py", "datasets.py")


def _digest(content) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_digest(profile: Profile) -> str:
    """A digest of the training data as it is on disk: the label CSVs' bytes and every train and
    validation image's path, size and modification time (no image is read: a few seconds even for
    CheXpert's 191,000 images). Editing a label or replacing an image changes it."""
    digest = hashlib.sha256()
    for split in ("train", "valid", "test"):
        settings = profile.data.splits[split]
        if settings.csv:
            path = data_path(profile, settings.csv)
            digest.update(path.read_bytes() if path.is_file() else b"missing " + str(path).encode())
    from .errors import DataError

    for split in ("train", "valid"):
        try:
            images = read_split(profile, split).table["image_path"]
        except DataError as error:  # no data yet: training will stop on it with this line
            digest.update(str(error).encode())
            continue
        for image in images:
            try:
                status = Path(image).stat()
                digest.update(f"{image}|{status.st_size}|{status.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{image}|missing\n".encode())
    return digest.hexdigest()[:16]


def fingerprint_parts(profile: Profile) -> dict[str, str]:
    """What the trained weights depend on, in parts: the settings, the data on disk and the code."""
    from importlib.metadata import version

    recipe = {key: value for key, value in asdict(profile.training).items() if key not in ("seed", "extra_seeds")}
    settings = {"seed": profile.training_seed, "data": asdict(profile.data), "model": asdict(profile.model),
                "training": recipe}
    manifest = profile.data_root / "phantom_manifest.json"
    if profile.data.source == "phantom" and manifest.is_file():
        settings["manifest"] = json.loads(manifest.read_text())
    code = hashlib.sha256()
    for name in _TRAINING_CODE:
        code.update((Path(__file__).parent / name).read_bytes())
    for library in ("torch", "timm", "numpy"):
        code.update(f"{library}=={version(library)}".encode())
    return {"settings": _digest(settings), "data": data_digest(profile), "code": code.hexdigest()[:16]}


def training_fingerprint(profile: Profile, parts: dict[str, str] | None = None) -> str:
    """Hash of everything that determines the trained weights (settings, data on disk, code)."""
    return _digest(parts if parts is not None else fingerprint_parts(profile))


def _why_retrain(old: dict | None, new: dict[str, str]) -> str:
    """Which part of the fingerprint changed, in words."""
    if not old:
        return "the checkpoint was made by an older version of this project"
    changed = [name for name in new if old.get(name) != new[name]]
    words = {"settings": "the profile's settings", "data": "the data on disk", "code": "the training code"}
    return " and ".join(words[name] for name in changed) + " changed" if changed else "the fingerprint changed"


def predict(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device) -> np.ndarray:
    """Sigmoid probabilities ``[N, 14]`` for every image of ``loader``, under inference mode."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for images, _ in loader:
            outputs.append(torch.sigmoid(model(images.to(device))).float().cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, len(CLASSES)), np.float32)


def _loader(dataset, batch_size: int, *, shuffle_seed: int | None, num_workers: int):
    generator = None
    if shuffle_seed is not None:
        generator = torch.Generator().manual_seed(shuffle_seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle_seed is not None,
                                       generator=generator, num_workers=num_workers, drop_last=False,
                                       persistent_workers=False)


def _validate(model, loader, device, criterion) -> tuple[float, float, np.ndarray]:
    model.eval()
    losses, outputs, targets = [], [], []
    with torch.inference_mode():
        for images, labels in loader:
            logits = model(images.to(device))
            losses.append(criterion(logits, labels.to(device)).item() * len(labels))
            outputs.append(torch.sigmoid(logits).float().cpu())
            targets.append(labels)
    probabilities = torch.cat(outputs).numpy()
    labels = torch.cat(targets).numpy()
    return sum(losses) / len(labels), mean_auroc(labels, probabilities), probabilities


def _scheduler(optimizer: torch.optim.Optimizer, settings) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of ``training.schedule``, stepped once per epoch.

    ``plateau``: multiply by ``plateau_factor`` once ``plateau_patience`` epochs have passed without
    a lower validation loss (the paper's). ``step``: multiply by ``plateau_factor`` after each epoch
    of ``step_epochs``, whatever the validation loss does.
    """
    if settings.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(settings.step_epochs),
                                                    gamma=settings.plateau_factor)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=settings.plateau_factor,
                                                      patience=settings.plateau_patience)


def train(profile: Profile, *, progress: bool = True, max_epochs_this_call: int | None = None) -> TrainingResult:
    """Train (or resume, or reuse) the classifier of a profile.

    Parameters
    ----------
    profile : Profile
        Data, model and recipe.
    progress : bool
        Show a progress bar with loss and validation AUROC.
    max_epochs_this_call : int, optional
        Stop after this many epochs even if training is not finished (used by the tests to
        simulate a kill; a later call resumes from the last checkpoint).

    Returns
    -------
    TrainingResult
        ``reused`` is true when a finished training with the same fingerprint was found. With
        ``model.checkpoint`` set nothing is trained: the checkpoint is loaded (so that a file that
        does not fit fails here, in one line) and ``trained`` is false.

    Notes
    -----
    Files in ``runs/<profile>/checkpoints/``: ``last.pt`` (every epoch, for resuming),
    ``best.pt`` (lowest validation loss: the selected model) and ``history.csv``.
    """
    started = time.perf_counter()
    if profile.model.checkpoint:  # a model the user already has: check that it loads, train nothing
        from .models import load_given_model

        weights = load_given_model(profile)[1]
        return TrainingResult(pd.DataFrame(columns=["epoch", "train_loss", "valid_loss", "valid_mean_auroc"]), 0,
                              time.perf_counter() - started, _rss_gb(), weights, False, trained=False)
    folder = profile.paths.checkpoints
    parts = fingerprint_parts(profile)
    fingerprint = training_fingerprint(profile, parts)
    last_path, best_path = folder / "last.pt", folder / "best.pt"
    state = load_checkpoint(last_path) if last_path.is_file() else None
    if state is not None and state.get("fingerprint") != fingerprint:
        # a checkpoint of other settings, data or code: start afresh, and say why
        notice(f"{profile.name}: training again: {_why_retrain(state.get('fingerprint_parts'), parts)}")
        state = None
    if state is not None and state.get("finished") and best_path.is_file():
        history = pd.DataFrame(state["history"])
        return TrainingResult(history, int(state["best_epoch"]), 0.0, _rss_gb(), state["weights"], True)

    settings = profile.training
    device = resolve_device(profile.device)
    seed = profile.training_seed
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    train_split, valid_split = read_split(profile, "train"), read_split(profile, "valid")
    train_set = ImageDataset(train_split.table, profile.model.input_size, augment_shift=settings.augment_shift,
                             horizontal_flip=settings.horizontal_flip, seed=seed)
    valid_loader = _loader(ImageDataset(valid_split.table, profile.model.input_size), settings.batch_size * 2,
                           shuffle_seed=None, num_workers=settings.num_workers)

    model = model_from_profile(profile)
    weights = load_pretrained(model, profile.model.pretrained, architecture=profile.model.architecture)
    model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = _scheduler(optimizer, settings)
    pos_weight = None
    if settings.class_weighting:
        positives = train_split.labels.sum(0)
        pos_weight = torch.as_tensor((len(train_split) - positives) / np.maximum(positives, 1), dtype=torch.float32)
    criterion = nn.BCEWithLogitsLoss(pos_weight=None if pos_weight is None else pos_weight.to(device))

    history: list[dict] = []
    start_epoch, best_score, best_epoch, stale = 0, float("inf"), -1, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        history, start_epoch = state["history"], state["epoch"] + 1
        best_score, best_epoch, stale = state["best_score"], state["best_epoch"], state["stale"]

    epochs_run = 0
    finished = False
    bar = tqdm(total=settings.epochs, initial=start_epoch, desc="training", disable=not progress, unit="epoch")
    for epoch in range(start_epoch, settings.epochs):
        if max_epochs_this_call is not None and epochs_run >= max_epochs_this_call:
            break
        model.train()
        train_set.epoch = epoch
        rate = optimizer.param_groups[0]["lr"]  # the rate this epoch runs at (the scheduler steps after it)
        loader = _loader(train_set, settings.batch_size, shuffle_seed=seed * 1000 + epoch,
                         num_workers=settings.num_workers)
        total, count = 0.0, 0
        for images, labels in loader:
            images = images.to(device).to(memory_format=torch.channels_last)
            loss = criterion(model(images), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            count += len(labels)
        valid_loss, valid_auroc, _ = _validate(model, valid_loader, device, criterion)
        if settings.schedule == "plateau":
            scheduler.step(valid_loss)
        else:
            scheduler.step()
        history.append({"epoch": epoch + 1, "train_loss": total / count, "valid_loss": valid_loss,
                        "valid_mean_auroc": valid_auroc, "learning_rate": rate,
                        "seconds": time.perf_counter() - started})
        score = valid_loss if settings.select_on == "valid_loss" else -valid_auroc  # lower is better
        improved = score < best_score
        if improved:
            best_score, best_epoch, stale = score, epoch + 1, 0
        else:
            stale += 1
        finished = epoch + 1 == settings.epochs or stale >= settings.early_stopping_patience
        model_state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
        if improved:
            save_checkpoint(best_path, {"model": model_state, "fingerprint": fingerprint, "epoch": epoch + 1,
                                        "valid_loss": valid_loss, "valid_mean_auroc": valid_auroc,
                                        "weights": weights, "profile": profile.name})
        save_checkpoint(last_path, {
            "model": model_state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(), "epoch": epoch, "history": history, "best_score": best_score,
            "best_epoch": best_epoch, "stale": stale, "fingerprint": fingerprint, "fingerprint_parts": parts,
            "finished": finished, "weights": weights})
        write_table(pd.DataFrame(history), folder / "history.csv")
        bar.set_postfix(loss=f"{total / count:.3f}", valid_auroc=f"{valid_auroc:.3f}")
        bar.update(1)
        epochs_run += 1
        if finished:
            break
    bar.close()
    return TrainingResult(pd.DataFrame(history), best_epoch, time.perf_counter() - started, _rss_gb(), weights, False)


def _rss_gb() -> float:
    """Peak resident memory of this process so far, in GB (Linux ``ru_maxrss``)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def predict_split(profile: Profile, model: nn.Module, split, *, batch_size: int = 64) -> pd.DataFrame:
    """Probabilities for every image of a split, saved to ``runs/<profile>/predictions/<split>.csv``.

    Returns a table with ``cxr_id``, the 14 labels (``label: <class>``) and the 14 probabilities
    (``<class>``), the format later notebooks read with :func:`load_predictions`. A class the model
    does not predict (its ``missing_classes``) has NaN probabilities.
    """
    from .files import atomic_write_text

    device = model_device(model)
    loader = _loader(ImageDataset(split.table, profile.model.input_size), batch_size, shuffle_seed=None,
                     num_workers=profile.training.num_workers)
    probabilities = predict(model, loader, device)
    for name in getattr(model, "missing_classes", ()):  # outputs the model does not have: NaN, never a guess
        probabilities[:, CLASSES.index(name)] = np.nan
    table = pd.DataFrame({"cxr_id": split.table["cxr_id"]})
    for index, name in enumerate(CLASSES):
        table[f"label: {name}"] = split.labels[:, index]
    for index, name in enumerate(CLASSES):
        table[name] = probabilities[:, index]
    atomic_write_text(profile.paths.predictions / f"{split.name}.csv", table.to_csv(index=False))
    return table


def load_predictions(profile: Profile, split: str) -> pd.DataFrame:
    """The table :func:`predict_split` wrote (one-line error when notebook 02 has not run)."""
    from .errors import DataError

    path = profile.paths.predictions / f"{split}.csv"
    if not path.is_file():
        raise DataError(f"{path}: no predictions; run notebook 02_training first")
    return pd.read_csv(path)
