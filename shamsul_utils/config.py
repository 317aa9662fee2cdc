"""Profiles (``params/*.yaml``) loaded into one typed, validated object, and the paths of a run.

A profile is a YAML file with the sections below; every key is checked (an unknown or
misspelt key is an error, not a silent default) and every value is converted to its
declared type. Notebooks receive the profile *name* as their papermill parameter and load
it with :func:`load_profile`, so the whole chain reads one source of truth.

Examples
--------
>>> config = load_profile("smoke")
>>> config.model.architecture
'densenet_small'
>>> config.paths.heatmaps.name
'heatmaps'
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import DataError
from .labels import CLASSES

__all__ = [
    "REPOSITORY_ROOT",
    "DataConfig",
    "SplitConfig",
    "ModelConfig",
    "TrainingConfig",
    "ExplainConfig",
    "EvaluationConfig",
    "ShortcutConfig",
    "RunPaths",
    "Profile",
    "load_profile",
    "profile_names",
]

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SplitConfig:
    """Where one split's labels (CheXpert CSV) and masks (CheXlocalize JSON) live, relative to ``data.root``."""

    csv: str = ""
    segmentations: str = ""  # empty: no masks for this split
    from_train_fraction: float = 0.0  # >0 (valid only): a patient-level split carved from train


@dataclass(frozen=True)
class DataConfig:
    """The data of a profile: a generated phantom, or CheXpert + CheXlocalize on disk."""

    source: str = "phantom"  # "phantom" or "chexpert"
    root: str = ""  # empty: runs/<profile>/data; for chexpert the DATA_DIR of the user
    splits: dict[str, SplitConfig] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # phantom only: images per split
    phantom: dict[str, typing.Any] = field(default_factory=dict)  # PhantomSettings overrides
    uncertain: str = "zeros"  # "zeros" (U-Zeros, the paper) or "ones" (U-Ones)
    frontal_only: bool = True
    # what "{chexpert}" in split paths stands for: "auto" (CheXpert-v1.0-small, else CheXpert-v1.0,
    # whichever data.root holds) or a folder name under data.root
    chexpert_folder: str = "auto"
    max_images: dict[str, int] = field(default_factory=dict)  # cap per split (0 or absent: all)


@dataclass(frozen=True)
class ModelConfig:
    """The classifier: architecture, input size and the weights it starts from."""

    architecture: str = "densenet121"
    growth_rate: int = 32
    block_config: tuple[int, ...] = (6, 12, 24, 16)
    input_size: int = 224
    pretrained: str = "none"  # "none", "imagenet" (timm hub cache) or a path to a weights file
    drop_rate: float = 0.0
    # a trained model to evaluate instead of training one (notebook 02 then only scores it): a file of
    # a 14-class model, or "torchxrayvision:<weights>" (e.g. torchxrayvision:densenet121-res224-chex)
    checkpoint: str = ""

    @property
    def checkpoint_path(self) -> Path:
        """``checkpoint`` as an absolute path (``~`` expanded; relative to the repository)."""
        path = Path(os.path.expanduser(self.checkpoint))
        return path if path.is_absolute() else REPOSITORY_ROOT / path


@dataclass(frozen=True)
class TrainingConfig:
    """The training recipe (paper: Adam 1e-4, BCE, ReduceLROnPlateau)."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    class_weighting: bool = False  # paper-style positive weighting of BCE
    schedule: str = "plateau"  # "plateau" (the paper's) or "step" (drops after the epochs of step_epochs)
    plateau_patience: int = 1
    plateau_factor: float = 0.1  # the factor of every drop of the learning rate, under either schedule
    step_epochs: tuple[int, ...] = ()  # schedule "step": drop the rate after each of these epochs
    early_stopping_patience: int = 3
    select_on: str = "valid_loss"  # checkpoint selection and early stopping: "valid_loss" or "valid_auroc"
    horizontal_flip: bool = False
    augment_shift: float = 0.0  # random translation as a fraction of the image size
    num_workers: int = 0
    seed: int = -1  # the model's seed (initialisation, order, augmentation); -1: the profile's seed
    extra_seeds: tuple[int, ...] = ()  # more models, same data and recipe: conclusions across seeds


@dataclass(frozen=True)
class ExplainConfig:
    """Which images are explained and each method's settings (paper values as defaults)."""

    n_images: int = 48
    per_class: int = 4  # images chosen per localised class (single- and multi-label)
    batch_size: int = 50
    lrp_rule: str = "epsilon"  # the primary analysis's LRP: the paper's epsilon rule
    lrp_secondary: str = "epsilon_plus_flat"  # a labelled secondary analysis: the practitioners' composite
    lrp_rules: tuple[str, ...] = ("z", "epsilon", "alpha2beta1", "deep_taylor", "epsilon_plus_flat")
    seed_images: int = 0  # LIME/SHAP images per extra seed (0: all); Grad-CAM and LRP explain all
    lime_samples: int = 1000
    shap_samples: int = 1000
    shap_fill: str = "mean"
    # How LIME and Kernel SHAP sample: "paper" (the lime and shap packages' own sampling, the
    # SHAMSUL route) or "fast" (explainers/sampling.py: the same estimates from fewer model calls);
    # lime_samples and shap_samples are then each method's model evaluations per image.
    estimator: str = "paper"
    # Registered methods outside the paper's four (e.g. integrated_gradients), explained in
    # notebook 03 and evaluated beside the four in notebooks 07-08 (not across seeds).
    extra_methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluationConfig:
    """Scoring: bootstrap resamples, the signed-map policy and the faithfulness budget."""

    bootstrap: int = 1000
    # The primary analysis's treatment of signed maps: "raw", CheXlocalize's min-max of the map as it
    # is (the paper's protocol); clipping at zero ("positive") is a labelled secondary analysis.
    signed: str = "raw"
    faithfulness_steps: int = 20
    faithfulness_images: int = 24
    medical_classes: tuple[str, ...] = ("Lung Opacity", "Support Devices")
    # validation images the main model's maps are explained on to tune CheXlocalize's per-class thresholds and
    # probability cutoffs (notebook 07's tuned secondary analyses); 0 leaves those analyses out
    tuning_images: int = 20


@dataclass(frozen=True)
class ShortcutConfig:
    """The known-shortcut experiment (notebook 10): a chest drain that accompanies one finding.

    The drain is drawn with probability ``train_with`` on images positive for ``finding`` and
    ``train_without`` on the others in train, valid and the *confounded* test split; the *clean*
    test split (the same patients) uses ``test_with`` / ``test_without``. A control model is trained
    on the same number of images with drains independent of the finding (:mod:`shamsul_utils.shortcut`).
    """

    finding: str = "Pneumothorax"
    train_with: float = 0.9
    train_without: float = 0.05
    test_with: float = 0.0
    test_without: float = 0.0
    sizes: dict[str, int] = field(default_factory=lambda: {"train": 1000, "valid": 200, "test": 600})
    epochs: int = 0  # 0: the base profile's training.epochs
    explain_images: int = 24  # positive, drain-bearing, predicted test images explained under both models


@dataclass(frozen=True)
class RunPaths:
    """Every artefact location of a run, all under ``runs/<profile>/``."""

    run: Path

    @property
    def data(self) -> Path:
        return self.run / "data"

    @property
    def checkpoints(self) -> Path:
        return self.run / "checkpoints"

    @property
    def predictions(self) -> Path:
        return self.run / "predictions"

    @property
    def heatmaps(self) -> Path:
        return self.run / "heatmaps"

    @property
    def tables(self) -> Path:
        return self.run / "tables"

    @property
    def figures(self) -> Path:
        return self.run / "figures"

    @property
    def notebooks(self) -> Path:
        return self.run / "notebooks"


@dataclass(frozen=True)
class Profile:
    """One validated profile (``params/<name>.yaml``)."""

    name: str
    seed: int
    description: str
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    explain: ExplainConfig
    evaluation: EvaluationConfig
    publish_figures: bool = False  # also write figures to the repository's figures/
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    shortcut: ShortcutConfig = field(default_factory=ShortcutConfig)

    @property
    def paths(self) -> RunPaths:
        """Artefact folders under ``runs/<profile>/`` (``$SHAMSUL_RUNS/<profile>/`` when that is set)."""
        return RunPaths(Path(os.environ.get("SHAMSUL_RUNS") or REPOSITORY_ROOT / "runs") / self.name)

    @property
    def training_seed(self) -> int:
        """The seed of the model's training: ``training.seed``, or the profile's ``seed`` when -1."""
        return self.seed if self.training.seed == -1 else self.training.seed

    @property
    def data_root(self) -> Path:
        """The folder the data paths are relative to."""
        if self.data.root:
            root = Path(os.path.expanduser(self.data.root))
            return root if root.is_absolute() else REPOSITORY_ROOT / root
        return self.paths.data


def profile_names() -> list[str]:
    """The profiles shipped in ``params/``."""
    return sorted(path.stem for path in (REPOSITORY_ROOT / "params").glob("*.yaml"))


def _convert(value, annotation, where: str):
    """Convert a YAML value to a dataclass field's declared type, or raise DataError."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    if origin in (dict,):
        _, value_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise DataError(f"{where}: expected a mapping, got {value!r}")
        return {str(key): _convert(item, value_type, f"{where}.{key}") for key, item in value.items()}
    if origin in (tuple,):
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(item, item_type, f"{where}[{index}]") for index, item in enumerate(value))
    if annotation is typing.Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise DataError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation in (int, float, str):
        if isinstance(value, bool) or value is None:
            raise DataError(f"{where}: expected {annotation.__name__}, got {value!r}")
        try:
            converted = annotation(value)
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"{where}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and value != converted:
            raise DataError(f"{where}: expected an integer, got {value!r}")
        return converted
    if isinstance(annotation, types.UnionType):  # pragma: no cover - not used by the profiles
        return value
    return value


def _build(cls, values, where: str):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise DataError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {item.name for item in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    return cls(**{key: _convert(value, hints[key], f"{where}.{key}") for key, value in values.items()})


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_profile(profile: str | os.PathLike, overrides: dict | None = None) -> Profile:
    """Load and validate a profile.

    Parameters
    ----------
    profile : str or path
        A name in ``params/`` (``"demo"``, ``"smoke"``, ``"paper"``) or a path to a YAML file.
    overrides : dict, optional
        Nested values merged over the file, e.g. ``{"data": {"root": "/data/chexpert"}}``.
        The environment variable ``DATA_DIR``, when set and non-empty, overrides ``data.root``
        of profiles whose data source is ``chexpert``.

    Raises
    ------
    DataError
        One line naming the file and the offending key or value.
    """
    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        path = REPOSITORY_ROOT / "params" / f"{profile}.yaml"
    if not path.is_file():
        raise DataError(f"{path}: no such profile; available: {', '.join(profile_names())}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise DataError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise DataError(f"{path}: expected a mapping of sections (seed, data, model, ...) at the top level, "
                        f"got a {type(values).__name__}")
    values = _merge(values, overrides or {})
    data_dir = os.environ.get("DATA_DIR", "")
    if data_dir and values.get("data", {}).get("source") == "chexpert":
        values = _merge(values, {"data": {"root": data_dir}})
    values.setdefault("name", path.stem)
    values.setdefault("description", "")
    required = ("seed", "data", "model", "training", "explain", "evaluation")
    missing = [key for key in required if key not in values]
    if missing:
        raise DataError(f"{path}: missing section(s) {', '.join(missing)}")
    profile_object = _build(Profile, values, path.name)
    _validate(profile_object, path.name)
    return profile_object


_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")  # a run folder's name: never a path


def _check_ranges(profile: Profile, where: str) -> None:
    """Every numeric setting within its range, every named choice among the allowed ones: one line
    naming the key otherwise, at load, not in the notebook that would fail."""
    from dataclasses import fields

    from .explainers.shap import FILLS
    from .labels import LOCALIZED_CLASSES
    from .phantom import PhantomSettings

    training, model, explain, evaluation = profile.training, profile.model, profile.explain, profile.evaluation
    rules = [
        ("seed", profile.seed, profile.seed >= 0, "0 or more"),
        ("model.input_size", model.input_size, 32 <= model.input_size <= 4096, "32 to 4096 (pixels)"),
        ("model.growth_rate", model.growth_rate, model.growth_rate >= 1, "at least 1"),
        ("model.block_config", list(model.block_config),
         len(model.block_config) >= 1 and min(model.block_config, default=0) >= 1, "a non-empty list of counts >= 1"),
        ("model.drop_rate", model.drop_rate, 0 <= model.drop_rate < 1, "in [0, 1)"),
        ("training.epochs", training.epochs, 1 <= training.epochs <= 10_000, "1 to 10000"),
        ("training.batch_size", training.batch_size, 1 <= training.batch_size <= 65_536, "1 to 65536"),
        ("training.learning_rate", training.learning_rate, training.learning_rate > 0, "above 0"),
        ("training.weight_decay", training.weight_decay, training.weight_decay >= 0, "0 or more"),
        ("training.plateau_patience", training.plateau_patience, training.plateau_patience >= 0, "0 or more"),
        ("training.plateau_factor", training.plateau_factor, 0 < training.plateau_factor < 1, "in (0, 1)"),
        ("training.early_stopping_patience", training.early_stopping_patience,
         training.early_stopping_patience >= 1, "at least 1"),
        ("training.step_epochs", list(training.step_epochs),
         list(training.step_epochs) == sorted(set(training.step_epochs))
         and all(epoch >= 1 for epoch in training.step_epochs)
         and (training.schedule != "step" or len(training.step_epochs) >= 1),
         "increasing epochs from 1 (at least one with schedule: step; one at or after the last epoch is never reached)"),
        ("training.augment_shift", training.augment_shift, 0 <= training.augment_shift <= 0.5, "in [0, 0.5]"),
        ("training.num_workers", training.num_workers, training.num_workers >= 0, "0 or more"),
        ("explain.n_images", explain.n_images, 1 <= explain.n_images <= 1_000_000, "1 to 1000000"),
        ("explain.per_class", explain.per_class, explain.per_class >= 0, "0 or more"),
        ("explain.batch_size", explain.batch_size, 1 <= explain.batch_size <= 65_536, "1 to 65536"),
        ("explain.lime_samples", explain.lime_samples, 2 <= explain.lime_samples <= 1_000_000, "2 to 1000000"),
        ("explain.shap_samples", explain.shap_samples, 2 <= explain.shap_samples <= 1_000_000, "2 to 1000000"),
        ("explain.shap_fill", explain.shap_fill, explain.shap_fill in FILLS, f"one of {', '.join(FILLS)}"),
        ("evaluation.bootstrap", evaluation.bootstrap, 1 <= evaluation.bootstrap <= 1_000_000, "1 to 1000000"),
        ("evaluation.faithfulness_steps", evaluation.faithfulness_steps, evaluation.faithfulness_steps >= 1,
         "at least 1"),
        ("evaluation.faithfulness_images", evaluation.faithfulness_images, evaluation.faithfulness_images >= 0,
         "0 or more"),
        ("evaluation.tuning_images", evaluation.tuning_images, 0 <= evaluation.tuning_images <= 1_000_000,
         "0 to 1000000"),
        ("evaluation.medical_classes", list(evaluation.medical_classes),
         set(evaluation.medical_classes) <= set(LOCALIZED_CLASSES), "CheXlocalize's localised classes"),
    ]
    rules += [(f"data.max_images.{split}", count, count >= 0, "0 (all) or more")
              for split, count in profile.data.max_images.items()]
    rules += [(f"data.sizes.{split}", count, 1 <= count <= 10_000_000, "1 to 10000000") for split, count in profile.data.sizes.items()]
    for key, value, valid, allowed in rules:
        if not valid:
            raise DataError(f"{where}: {key} is {value!r}; expected {allowed}")
    known = {item.name for item in fields(PhantomSettings)}
    unknown = sorted(set(profile.data.phantom) - known)
    if unknown:
        raise DataError(f"{where}: data.phantom has unknown key(s) {', '.join(unknown)}; "
                        f"allowed: {', '.join(sorted(known))}")


def _validate(profile: Profile, where: str) -> None:
    from .explainers.sampling import ESTIMATORS

    if not _RUN_NAME.fullmatch(profile.name) or set(profile.name) == {"."}:
        raise DataError(f"{where}: name is {profile.name!r}; expected a plain folder name (letters, digits, '.', "
                        "'_', '-'; the run folder runs/<name>/)")
    choices = {
        "data.source": (profile.data.source, ("phantom", "chexpert")),
        "data.uncertain": (profile.data.uncertain, ("zeros", "ones")),
        "model.architecture": (profile.model.architecture, ("densenet121", "densenet_small")),
        "evaluation.signed": (profile.evaluation.signed, ("positive", "absolute", "raw")),
        "device": (profile.device, ("auto", "cpu", "cuda")),
        "training.select_on": (profile.training.select_on, ("valid_loss", "valid_auroc")),
        "training.schedule": (profile.training.schedule, ("plateau", "step")),
        "explain.estimator": (profile.explain.estimator, ESTIMATORS),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise DataError(f"{where}: {key} is {value!r}; expected one of {', '.join(allowed)}")
    from .explainers.lrp import RULES

    for key, rules in (("explain.lrp_rule", (profile.explain.lrp_rule,)), ("explain.lrp_rules", profile.explain.lrp_rules),
                       ("explain.lrp_secondary", (profile.explain.lrp_secondary,))):
        unknown = [rule for rule in rules if rule not in RULES]
        if unknown:
            raise DataError(f"{where}: {key} has {unknown[0]!r}; expected one of {', '.join(RULES)}")
    from .explainers.registry import REGISTRY

    for key in profile.explain.extra_methods:
        if key not in REGISTRY or REGISTRY[key].study:
            others = [name for name, record in REGISTRY.items() if not record.study]
            raise DataError(f"{where}: explain.extra_methods has {key!r}; expected methods outside the study's "
                            f"four: {', '.join(others)}")
    if len(set(profile.explain.extra_methods)) != len(profile.explain.extra_methods):
        raise DataError(f"{where}: explain.extra_methods {list(profile.explain.extra_methods)} repeats a method")
    seeds = (profile.training_seed, *profile.training.extra_seeds)
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise DataError(f"{where}: training.extra_seeds {list(profile.training.extra_seeds)} must be distinct, "
                        f"non-negative and differ from the model's seed {profile.training_seed}")
    if profile.explain.seed_images < 0:
        raise DataError(f"{where}: explain.seed_images is {profile.explain.seed_images}; expected 0 (all) or more")
    for split in ("train", "valid", "test"):
        if split not in profile.data.splits:
            raise DataError(f"{where}: data.splits needs a {split!r} entry")
    shortcut = profile.shortcut
    if shortcut.finding not in CLASSES[1:]:
        raise DataError(f"{where}: shortcut.finding is {shortcut.finding!r}; expected a CheXpert finding")
    for key in ("train_with", "train_without", "test_with", "test_without"):
        if not 0 <= getattr(shortcut, key) <= 1:
            raise DataError(f"{where}: shortcut.{key} is {getattr(shortcut, key)}; expected a probability in [0, 1]")
    if set(shortcut.sizes) != {"train", "valid", "test"} or min(shortcut.sizes.values()) < 1:
        raise DataError(f"{where}: shortcut.sizes needs positive train, valid and test counts, got {shortcut.sizes}")
    _check_ranges(profile, where)
    if profile.model.checkpoint.startswith("torchxrayvision:"):
        if profile.model.architecture != "densenet121" or profile.model.input_size != 224:
            raise DataError(f"{where}: model.checkpoint {profile.model.checkpoint} is a DenseNet121 at 224 px; "
                            "set model.architecture: densenet121 and model.input_size: 224")
    elif profile.model.checkpoint and not profile.model.checkpoint_path.is_file():
        raise DataError(f"{where}: model.checkpoint {profile.model.checkpoint_path} not found")
    if profile.model.checkpoint:
        if profile.training.extra_seeds:
            raise DataError(f"{where}: model.checkpoint evaluates one given model; training.extra_seeds must be []")
    if profile.data.source == "chexpert" and not profile.data.root:
        raise DataError(f"{where}: the chexpert source needs data.root (or DATA_DIR=/path/to/data)")
