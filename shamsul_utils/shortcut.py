"""The known-shortcut experiment (notebook 10): do the explainers reveal a confounder the model uses?

A phantom variant draws a **chest drain** (:attr:`~shamsul_utils.phantom.PhantomSettings.shortcut`)
on most training images positive for one finding (Pneumothorax by default) and on few others:
clinically, pneumothorax classifiers have been found to look at chest drains, the treatment of
the finding rather than the finding (Oakden-Rayner et al. 2020). Two models are trained with the
same recipe, seed and number of images on the same patients:

* the **shortcut** model, on drains correlated with the finding (``shortcut.train_with`` /
  ``train_without``);
* the **control** model, on drains drawn at the same overall rate but independently of the
  finding (:func:`control_rate`): it sees as many drains, which carry no information. The two
  models differ only in the correlation, so any difference in what a method shows about the
  drain is what the shortcut did.

Both are scored on two test splits of **the same patients**: *confounded* (drains at the training
rates) and *clean* (no drains). The phantom draws the drain from its own random stream, so the
two splits are pixel-identical except for the drain; the shortcut's effect on AUROC is the
shortcut model's drop (confounded minus clean) minus the control's, bootstrapped over the same
resampled patients (:func:`auroc_table`).

Every method then explains the finding under **both** models on the same images: positive,
drain-bearing confounded test images that the shortcut model predicts positive at its operating
threshold (Youden's J on its validation split, :func:`operating_threshold`). The verdict per method
is the paired difference, shortcut model minus control model, of the share of positive attribution
mass on the drain and of drain hits (the map's maximum on the drain), with bootstrap intervals over
the images and Holm's correction over the methods (:func:`verdict_table`): a method *reveals the
shortcut* only where the share difference is positive and holds after the correction.

Regions are disjoint: ``confounder`` (drain, not lesion), ``lesion`` (lesion, not drain),
``overlap`` (both: the drain often runs through the pneumothorax rim) and ``rest``.

References
----------
Oakden-Rayner, L., Dunnmon, J., Carneiro, G. & Ré, C. (2020). Hidden stratification causes
clinically meaningful failures in machine learning for medical imaging. ACM CHIL.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import datasets, metrics, study
from .chexlocalize import decode_mask
from .config import Profile, SplitConfig
from .datasets import SplitData
from .labels import CLASSES, LOCALIZED_CLASSES
from .metrics.bootstrap import interval_of, resample_indices
from .metrics.classification import auroc_rows
from .models import model_device
from .phantom import DATASET_FOLDER, PhantomSettings, write_dataset
from .segmentation import resize_maps

__all__ = [
    "CONFOUNDER",
    "REGIONS",
    "SHORTCUT_MODEL",
    "CONTROL_MODEL",
    "ShortcutSplit",
    "MEASURES",
    "shortcut_profile",
    "clean_profile",
    "control_rate",
    "control_profile",
    "write_shortcut_data",
    "read_shortcut_data",
    "drain_rates",
    "train_models",
    "trained_models",
    "predict_tests",
    "auroc_table",
    "operating_threshold",
    "youden_threshold",
    "explanation_rows",
    "explanation_subset",
    "explain_methods",
    "predicted_probabilities",
    "map_labels",
    "attribution_shares",
    "shares_for_methods",
    "share_summary",
    "verdict_table",
    "verdict_text",
]

CONFOUNDER = "Confounder"
REGIONS: tuple[str, ...] = ("confounder", "lesion", "overlap", "rest")
_SPLITS = ("train", "valid", "test")
SHORTCUT_MODEL = "shortcut-trained"
CONTROL_MODEL = "control-trained"
# The verdict's measures (declared before the scores): attribution share on the drain (the verdict) and drain hits
MEASURES: dict[str, str] = {"mass_confounder": "drain share of the positive attribution mass",
                            "pointing_confounder": "drain hit rate (the map's maximum on the drain)"}


# ----------------------------------------------------------------------------------- profiles

def shortcut_profile(profile: Profile) -> Profile:
    """The profile of the shortcut run derived from a base profile.

    Same seed, model, recipe and explainer settings; a phantom of ``shortcut.sizes`` with the drain
    drawn at ``shortcut.train_with`` / ``train_without`` in every split; ``shortcut.epochs`` when
    non-zero. Named ``<profile>-shortcut``, so data, checkpoints and heatmaps live under
    ``runs/<profile>-shortcut/``. A CheXpert base profile gets the phantom's default settings.

    Examples
    --------
    >>> from shamsul_utils.config import load_profile
    >>> derived = shortcut_profile(load_profile("smoke"))
    >>> derived.name, derived.data.phantom["shortcut"][0], derived.paths.run.name
    ('smoke-shortcut', 'Pneumothorax', 'smoke-shortcut')
    """
    settings = profile.shortcut
    phantom = dict(profile.data.phantom) if profile.data.source == "phantom" else {}
    phantom["shortcut"] = (settings.finding, settings.train_with, settings.train_without)
    splits = {split: SplitConfig(csv=f"{DATASET_FOLDER}/{split}.csv",
                                 segmentations=f"CheXlocalize/gt_segmentations_{split}.json") for split in _SPLITS}
    data = dataclasses.replace(profile.data, source="phantom", root="", splits=splits, sizes=dict(settings.sizes),
                               phantom=phantom, max_images={})
    training = dataclasses.replace(profile.training, epochs=settings.epochs or profile.training.epochs)
    return dataclasses.replace(profile, name=f"{profile.name}-shortcut", data=data, training=training,
                               publish_figures=False)


def control_rate(profile: Profile) -> float:
    """The control's drain rate: the confounded training split's overall share of images with a drain.

    The control phantom draws the drain with this probability on every image, positive or not, so
    the control model sees as many drains as the shortcut model but none that predicts the finding.
    Read from the confounded training split on disk (:func:`write_shortcut_data` writes it first),
    rounded to 4 decimals.

    Raises
    ------
    DataError
        When the confounded data has not been generated.
    """
    split = _read(shortcut_profile(profile), "train", "train")
    return round(float(split.has_drain.mean()), 4)


def control_profile(profile: Profile, rate: float | None = None) -> Profile:
    """The control model's profile: the shortcut phantom's patients (train and valid) with the drain
    drawn at ``rate`` (:func:`control_rate` when None) whatever the finding; same recipe, seed and
    sizes as :func:`shortcut_profile`. Named ``<profile>-shortcut-control``; it has no test split
    (both models are tested on the shortcut run's confounded and clean tests).
    """
    derived = shortcut_profile(profile)
    rate = control_rate(profile) if rate is None else float(rate)
    phantom = dict(derived.data.phantom, shortcut=(profile.shortcut.finding, rate, rate))
    sizes = {split: derived.data.sizes[split] for split in ("train", "valid")}
    name = f"{profile.name}-shortcut-control"
    data = dataclasses.replace(derived.data, root=str(profile.paths.run.parent / name / "data"), sizes=sizes,
                               phantom=phantom)
    return dataclasses.replace(derived, name=name, data=data)


def clean_profile(profile: Profile) -> Profile:
    """The shortcut profile pointed at the *clean* test split (``runs/<profile>-shortcut/data_clean``).

    Only its ``test`` split exists; read it with :func:`shamsul_utils.datasets.read_split`.
    """
    derived = shortcut_profile(profile)
    settings = profile.shortcut
    phantom = dict(derived.data.phantom, shortcut=(settings.finding, settings.test_with, settings.test_without))
    data = dataclasses.replace(derived.data, root=str(derived.paths.run / "data_clean"),
                               sizes={"test": settings.sizes["test"]}, phantom=phantom)
    return dataclasses.replace(derived, data=data)


# --------------------------------------------------------------------------------------- data

@dataclass
class ShortcutSplit:
    """A split of the shortcut phantom: labels, lesion masks and drain masks.

    Attributes
    ----------
    split : SplitData
        Labels and the CheXlocalize lesion masks.
    confounders : dict
        ``{cxr_id: {"Confounder": rle}}`` from ``CheXlocalize/confounder_masks_<split>.json``.
    """

    split: SplitData
    confounders: dict[str, dict]

    @functools.cached_property
    def has_drain(self) -> np.ndarray:
        """bool ``[N]``: the image shows a drain."""
        return np.array([self.drain_masks([cxr_id])[0].any() for cxr_id in self.split.table["cxr_id"]])

    def drain_masks(self, cxr_ids) -> np.ndarray:
        """bool ``[n, H, W]`` drain masks at the images' original size."""
        return np.stack([decode_mask(self.confounders[cxr_id][CONFOUNDER], where=f"{cxr_id}/{CONFOUNDER}")
                         for cxr_id in cxr_ids])

    def lesion_masks(self, cxr_ids, finding: str) -> np.ndarray:
        """bool ``[n, H, W]`` masks of ``finding`` at the images' original size."""
        return datasets.masks_for(self.split, list(cxr_ids), classes=(finding,))[:, 0]


def write_shortcut_data(profile: Profile, *, progress: bool = False) -> dict:
    """Generate (or find cached) the confounded phantom, the clean test split and the control's
    training data (:func:`control_profile`) of a base profile.

    Returns ``{"confounded": summary, "clean": summary, "control": summary}`` with
    :func:`~shamsul_utils.phantom.write_dataset`'s summaries (``skipped`` is true when the manifest
    matched and nothing was written).
    """
    summaries = {}
    for key, make in (("confounded", shortcut_profile), ("clean", clean_profile), ("control", control_profile)):
        derived = make(profile)
        summaries[key] = write_dataset(derived.data_root, sizes=derived.data.sizes, seed=derived.seed,
                                       settings=PhantomSettings(**derived.data.phantom), progress=progress)
    return summaries


def _read(profile: Profile, split: str, name: str) -> ShortcutSplit:
    data = datasets.read_split(profile, split)
    path = profile.data_root / "CheXlocalize" / f"confounder_masks_{split}.json"
    if not path.is_file():
        raise datasets.DataError(f"{path}: no confounder masks; run write_shortcut_data first")
    return ShortcutSplit(SplitData(name, data.table, data.segmentations), json.loads(path.read_text()))


def read_shortcut_data(profile: Profile) -> dict[str, ShortcutSplit]:
    """The splits ``train``, ``valid``, ``control train``, ``control valid``, ``confounded`` (test)
    and ``clean`` (test, same patients).

    Raises
    ------
    DataError
        When the two test splits do not hold the same patients (labels differ row by row).
    """
    derived, control = shortcut_profile(profile), control_profile(profile)
    splits = {name: _read(derived, name, name) for name in ("train", "valid")}
    splits |= {f"control {name}": _read(control, name, f"control {name}") for name in ("train", "valid")}
    splits["confounded"] = _read(derived, "test", "confounded")
    splits["clean"] = _read(clean_profile(profile), "test", "clean")
    if not np.array_equal(splits["confounded"].split.labels, splits["clean"].split.labels):
        raise datasets.DataError("the confounded and clean test splits differ in labels; regenerate both")
    return splits


def drain_rates(splits: dict[str, ShortcutSplit], finding: str) -> pd.DataFrame:
    """Per split: images, positives for ``finding``, and the share with a drain among positives and negatives."""
    rows = []
    column = CLASSES.index(finding)
    for name, item in splits.items():
        positive = item.split.labels[:, column] == 1
        drain = item.has_drain
        rows.append({"split": name, "images": len(positive), "positives": int(positive.sum()),
                     "drain_given_positive": float(drain[positive].mean()) if positive.any() else np.nan,
                     "drain_given_negative": float(drain[~positive].mean()) if (~positive).any() else np.nan})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ models, AUROC

def train_models(profile: Profile, *, progress: bool = False) -> pd.DataFrame:
    """Train (or find cached) the shortcut and the control model: same recipe, seed and image count.

    Returns one row per model: ``model``, ``training images``, ``selected epoch``, ``reused``,
    ``seconds``, ``validation mean AUROC``.
    """
    from .training import train

    rows = []
    for name, derived in ((SHORTCUT_MODEL, shortcut_profile(profile)), (CONTROL_MODEL, control_profile(profile))):
        result = train(derived, progress=progress)
        rows.append({"model": name, "training images": derived.data.sizes["train"],
                     "selected epoch": result.best_epoch, "reused": result.reused,
                     "seconds": round(result.seconds, 1),
                     "validation mean AUROC": float(result.history["valid_mean_auroc"].iloc[result.best_epoch - 1])})
    return pd.DataFrame(rows)


def trained_models(profile: Profile) -> dict[str, torch.nn.Module]:
    """The shortcut-trained and the control-trained model (:func:`train_models` trains them)."""
    from .models import load_trained_model

    return {SHORTCUT_MODEL: load_trained_model(shortcut_profile(profile))[0],
            CONTROL_MODEL: load_trained_model(control_profile(profile))[0]}


def predict_tests(models: dict[str, torch.nn.Module], splits: dict[str, ShortcutSplit], finding: str, *,
                  size: int, batch_size: int = 64) -> pd.DataFrame:
    """Probability of ``finding`` for every model and test image: a long table.

    Columns ``model``, ``test`` (confounded / clean), ``row`` (the patient: the same in both
    tests), ``cxr_id``, ``label``, ``drain`` and ``probability``.
    """
    from .training import predict

    column = CLASSES.index(finding)
    tables = []
    for test in ("confounded", "clean"):
        item = splits[test]
        loader = torch.utils.data.DataLoader(datasets.ImageDataset(item.split.table, size), batch_size=batch_size)
        drain = item.has_drain
        for name, model in models.items():
            probabilities = predict(model, loader, model_device(model))[:, column]
            tables.append(pd.DataFrame({"model": name, "test": test, "row": np.arange(len(drain)),
                                        "cxr_id": item.split.table["cxr_id"], "label": item.split.labels[:, column],
                                        "drain": drain, "probability": probabilities}))
    return pd.concat(tables, ignore_index=True)


EFFECT = "shortcut minus control"


def auroc_table(predictions: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0,
                confidence: float = 0.95) -> pd.DataFrame:
    """AUROC of each model on each test split with bootstrap CIs (``confidence``), the paired drop,
    and the shortcut's effect: the shortcut model's drop minus the control model's.

    The two tests hold the same patients and every model is scored on them, so every drop and the
    effect are bootstrapped over the same resampled patients. Returns columns ``model`` (each model,
    then :data:`EFFECT` when both models are present), ``test`` (confounded / clean / drop),
    ``auroc``, ``low``, ``high``, ``positives``, ``images``.
    """
    rows, drops = [], {}
    for name, group in predictions.groupby("model", sort=False):
        by_test = {test: part.sort_values("row") for test, part in group.groupby("test")}
        labels = by_test["confounded"]["label"].to_numpy()
        indices = resample_indices(len(labels), n_resamples, seed)
        samples = {}
        for test in ("confounded", "clean"):
            scores = by_test[test]["probability"].to_numpy()
            estimate = metrics.auroc_auprc(labels[:, None], scores[:, None], n_resamples=n_resamples, seed=seed,
                                           confidence=confidence)
            samples[test] = auroc_rows(labels[indices], scores[indices])
            rows.append({"model": name, "test": test, "auroc": estimate["auroc"].iloc[0],
                         "low": estimate["auroc_low"].iloc[0], "high": estimate["auroc_high"].iloc[0]})
        drops[name] = samples["confounded"] - samples["clean"]
        low, high = interval_of(drops[name], confidence, "percentile")
        rows.append({"model": name, "test": "drop", "auroc": rows[-2]["auroc"] - rows[-1]["auroc"],
                     "low": low, "high": high})
        for row in rows[-3:]:
            row |= {"positives": int(labels.sum()), "images": len(labels)}
    if SHORTCUT_MODEL in drops and CONTROL_MODEL in drops:
        by_model = {row["model"]: row for row in rows if row["test"] == "drop"}
        low, high = interval_of(drops[SHORTCUT_MODEL] - drops[CONTROL_MODEL], confidence, "percentile")
        rows.append({"model": EFFECT, "test": "drop",
                     "auroc": by_model[SHORTCUT_MODEL]["auroc"] - by_model[CONTROL_MODEL]["auroc"], "low": low,
                     "high": high, "positives": by_model[SHORTCUT_MODEL]["positives"],
                     "images": by_model[SHORTCUT_MODEL]["images"]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- explanations

def predicted_probabilities(predictions: pd.DataFrame, model: str = SHORTCUT_MODEL,
                            test: str = "confounded") -> np.ndarray:
    """One model's probabilities ``[N]`` on one test split of :func:`predict_tests`' table, in row order."""
    part = predictions[(predictions["model"] == model) & (predictions["test"] == test)]
    if part.empty:
        raise ValueError(f"no predictions of the {model!r} model on the {test!r} test")
    return part.sort_values("row")["probability"].to_numpy(float)


def operating_threshold(model: torch.nn.Module, split: ShortcutSplit, finding: str, *, size: int) -> float:
    """The model's operating threshold for ``finding``: the probability that maximises Youden's J
    (sensitivity + specificity - 1) on ``split`` (the validation split; ties: the highest threshold).

    The demo's models never reach p = 0.5 on this rare finding (their probabilities are honest about
    its 9 % prevalence), so "the model predicts the finding" is read at the operating point a user
    would tune on validation, as CheXlocalize tunes its probability cutoffs.
    """
    from .training import predict

    column = CLASSES.index(finding)
    labels = split.split.labels[:, column]
    if labels.min() == labels.max():
        raise datasets.DataError(f"{split.split.name}: {finding} is all {int(labels[0])}; no threshold can be tuned")
    loader = torch.utils.data.DataLoader(datasets.ImageDataset(split.split.table, size), batch_size=64)
    return youden_threshold(labels, predict(model, loader, model_device(model))[:, column])


def youden_threshold(labels, probabilities) -> float:
    """The probability ``t`` maximising Youden's J of the rule ``probability >= t`` (the highest such
    ``t`` on ties; one of the observed probabilities).

    Examples
    --------
    >>> youden_threshold([0, 0, 1, 1, 0, 1], [0.1, 0.2, 0.3, 0.6, 0.4, 0.7])
    0.6
    """
    from sklearn.metrics import roc_curve

    false_positive, true_positive, thresholds = roc_curve(np.asarray(labels), np.asarray(probabilities, dtype=float),
                                                          drop_intermediate=False)
    youden = true_positive - false_positive
    best = np.flatnonzero(youden >= youden.max() - 1e-12)[0]  # thresholds run from high to low; J in float64
    return float(min(thresholds[best], 1.0))


def explanation_rows(split: ShortcutSplit, finding: str, count: int, probabilities=None,
                     threshold: float | None = None) -> np.ndarray:
    """Rows of the confounded test split that are positive for ``finding``, show a drain and, when
    ``probabilities`` (the shortcut model's, ``[N]``) and ``threshold`` are given, are predicted
    positive (``probability >= threshold``); the first ``count`` of them, in split order."""
    positive = split.split.labels[:, CLASSES.index(finding)] == 1
    chosen = positive & split.has_drain
    if probabilities is not None:
        chosen &= np.asarray(probabilities, dtype=float) >= (0.5 if threshold is None else threshold)
    return np.flatnonzero(chosen)[:count]


def explanation_subset(split: ShortcutSplit, rows: np.ndarray, model: torch.nn.Module, *,
                       size: int) -> study.ExplanationSet:
    """An :class:`~shamsul_utils.study.ExplanationSet` of some rows of a split, with ``model``'s probabilities."""
    from .training import predict

    table = split.split.table.iloc[rows].reset_index(drop=True)
    gray = datasets.load_images(table["image_path"].tolist(), size)
    images = datasets.normalize(gray)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(len(images))),
                                         batch_size=64)
    return study.ExplanationSet(table=table, images=images, gray=gray / 255.0,
                                labels=table[list(CLASSES)].to_numpy(np.float32),
                                probabilities=predict(model, loader, model_device(model)),
                                masks=datasets.masks_for(split.split, table["cxr_id"], classes=LOCALIZED_CLASSES))


def explain_methods(profile: Profile, models: dict[str, torch.nn.Module], explanation: study.ExplanationSet,
                    finding: str, *, methods: dict[str, str] = study.METHODS,
                    progress: bool = False) -> dict[tuple[str, str], np.ndarray]:
    """Each method's maps ``[N, h, w]`` of ``finding`` under each model, keyed ``(method, model)``.

    ``profile`` is the *base* profile (the explainer settings are its; LRP uses ``explain.lrp_rule``);
    the maps are cached under ``runs/<profile>-shortcut/heatmaps`` (shortcut model) and
    ``runs/<profile>-shortcut-control/heatmaps`` (control model), keyed by each model's weights.
    """
    runs = {SHORTCUT_MODEL: shortcut_profile(profile), CONTROL_MODEL: control_profile(profile)}
    column = CLASSES.index(finding)
    return {(name, model_name): study.explain_cached(runs[model_name], model, explanation, method,
                                                     progress=progress)[:, column]
            for name, method in methods.items() for model_name, model in models.items()}


def map_labels(heatmaps: dict) -> dict:
    """Display labels of :func:`explain_methods`' keys: ``"<method>"`` under the shortcut model,
    ``"<method>, control"`` under the control (as in :func:`share_summary`)."""
    return {key: key[0] if key[1] == SHORTCUT_MODEL else f"{key[0]}, control" for key in heatmaps}


def attribution_shares(heatmaps, confounder, lesion) -> pd.DataFrame:
    """Where each map's positive attribution mass falls: drain, lesion, their overlap, the rest.

    Parameters
    ----------
    heatmaps : array-like, shape (N, h, w)
        One map per image; resized bilinearly (``align_corners=False``) to the masks' size, then
        only its positive part counts (negative evidence is evidence *against* the class).
    confounder, lesion : array-like of bool, shape (N, H, W)

    Returns
    -------
    pandas.DataFrame
        One row per image; for each region of :data:`REGIONS` (disjoint, covering the image):
        ``mass_<region>`` (share of the positive mass; NaN for a map without positive values),
        ``area_<region>`` (share of the pixels), ``enrichment_<region>`` = mass / area (1 = what a
        uniform map gives; NaN for an empty region) and ``pointing_<region>`` (1 when the map's
        maximum lies in the region, NaN for an empty region; :func:`~shamsul_utils.metrics.pointing_game`).

    Examples
    --------
    >>> maps = np.zeros((1, 4, 4)); maps[0, 0, 0] = 3.0; maps[0, 3, 3] = 1.0
    >>> drain = np.zeros((1, 4, 4), bool); drain[0, 0, :2] = True
    >>> lesion = np.zeros((1, 4, 4), bool); lesion[0, 3, 3] = True
    >>> row = attribution_shares(maps, drain, lesion).iloc[0]
    >>> float(row["mass_confounder"]), float(row["enrichment_confounder"]), float(row["mass_lesion"])
    (0.75, 6.0, 0.25)
    """
    confounder = np.asarray(confounder, bool)
    lesion = np.asarray(lesion, bool)
    if confounder.shape != lesion.shape or confounder.ndim != 3:
        raise ValueError(f"confounder {confounder.shape} and lesion {lesion.shape} must both be (N, H, W)")
    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim != 3 or len(maps) != len(confounder):
        raise ValueError(f"heatmaps {maps.shape} must be (N, h, w) with N = {len(confounder)}")
    resized = resize_maps(torch.from_numpy(np.ascontiguousarray(maps)), confounder.shape[-2:]).numpy()
    positive = np.clip(np.nan_to_num(resized, nan=0.0), 0.0, None)
    total = positive.sum(axis=(1, 2))
    regions = {"confounder": confounder & ~lesion, "lesion": lesion & ~confounder, "overlap": confounder & lesion,
               "rest": ~(confounder | lesion)}
    columns = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, region in regions.items():
            area = region.mean(axis=(1, 2))
            mass = np.where(total > 0, (positive * region).sum(axis=(1, 2)) / np.where(total > 0, total, 1), np.nan)
            columns[f"mass_{name}"] = mass
            columns[f"area_{name}"] = area
            columns[f"enrichment_{name}"] = np.where(area > 0, mass / np.where(area > 0, area, 1), np.nan)
            columns[f"pointing_{name}"] = metrics.pointing_game(resized[:, None], region[:, None])[:, 0]
    return pd.DataFrame(columns)


def shares_for_methods(heatmaps: dict, confounder, lesion, cxr_ids) -> pd.DataFrame:
    """:func:`attribution_shares` of every map set, stacked with ``method``, ``model`` and ``cxr_id``
    columns; ``heatmaps`` is keyed ``(method, model)`` (:func:`explain_methods`) or by method alone
    (model :data:`SHORTCUT_MODEL`)."""
    frames = []
    for key, maps in heatmaps.items():
        method, model = key if isinstance(key, tuple) else (key, SHORTCUT_MODEL)
        frames.append(attribution_shares(maps, confounder, lesion).assign(method=method, model=model,
                                                                          cxr_id=list(cxr_ids)))
    return pd.concat(frames, ignore_index=True)


def share_summary(shares: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per method, model and region: mean mass share, enrichment and pointing rate with 95 % bootstrap
    CIs; ``label`` is ``"<method>"`` for the shortcut model and ``"<method>, control"`` for the control."""
    rows = []
    for (method, model), group in shares.groupby(["method", "model"], sort=False):
        label = method if model == SHORTCUT_MODEL else f"{method}, control"
        for region in REGIONS:
            row = {"method": method, "model": model, "label": label, "region": region, "images": len(group),
                   "area": float(group[f"area_{region}"].mean())}
            for quantity in ("mass", "enrichment", "pointing"):
                estimate, low, high = metrics.bootstrap_ci(group[f"{quantity}_{region}"].to_numpy(),
                                                           n_resamples=n_resamples, seed=seed)
                row |= {quantity: float(estimate), f"{quantity}_low": float(low), f"{quantity}_high": float(high)}
            rows.append(row)
    return pd.DataFrame(rows)


def verdict_table(shares: pd.DataFrame, *, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per method and measure: does the map show the drain more under the shortcut model than under
    the control? The paired difference, shortcut model minus control model, on the same images.

    Parameters
    ----------
    shares : pandas.DataFrame
        :func:`shares_for_methods` of both models (columns ``method``, ``model``, ``cxr_id`` and the
        :data:`MEASURES`).

    Returns
    -------
    pandas.DataFrame
        One row per method and measure (:data:`MEASURES`): ``shortcut``, ``control`` (means),
        ``difference`` with its 95 % percentile interval ``low``, ``high`` (paired bootstrap over the
        images: :func:`~shamsul_utils.claims.pooled_paired_bootstrap` with one model), ``p``
        (two-sided), ``p_holm`` (Holm over the methods, within each measure), ``images`` and
        ``reveals``: for the share measure, difference > 0 and ``p_holm < 0.05``; the hit measure
        is reported beside it and decides nothing (declared before the scores).
    """
    from .claims import ALPHA, UntestableError, holm, pooled_paired_bootstrap

    rows = []
    for measure in MEASURES:
        block = []
        for method, group in shares.groupby("method", sort=False):
            wide = group.pivot(index="cxr_id", columns="model", values=measure)
            row = {"method": method, "measure": measure, "images": len(wide)}
            if not {SHORTCUT_MODEL, CONTROL_MODEL} <= set(wide.columns):
                raise ValueError(f"{method}: shares of both the {SHORTCUT_MODEL} and the {CONTROL_MODEL} model needed")
            first, second = wide[SHORTCUT_MODEL].to_numpy(float), wide[CONTROL_MODEL].to_numpy(float)
            row |= {"shortcut": float(np.nanmean(first)) if len(first) else np.nan,
                    "control": float(np.nanmean(second)) if len(second) else np.nan}
            try:
                test = pooled_paired_bootstrap(first[None, :, None], second[None, :, None], n_resamples=n_resamples,
                                               seed=seed)
                row |= {"difference": test.difference, "low": test.low, "high": test.high, "p": test.p_value}
            except UntestableError:  # fewer than two images: reported, never a verdict
                row |= {"difference": np.nan, "low": np.nan, "high": np.nan, "p": 1.0}
            block.append(row)
        table = pd.DataFrame(block)
        table["p_holm"] = holm(table["p"]) if len(table) else []
        rows.append(table)
    table = pd.concat(rows, ignore_index=True)
    share = next(iter(MEASURES))
    table["reveals"] = (table["measure"] == share) & (table["difference"] > 0) & (table["p_holm"] < ALPHA)
    return table


def verdict_text(aurocs: pd.DataFrame, verdicts: pd.DataFrame, finding: str, *, qualified: int,
                 threshold: float) -> str:
    """The run's conclusion as Markdown sentences generated from its tables (notebook 10 and README).

    ``qualified``: positive, drain-bearing confounded test images the shortcut model predicts positive
    at ``threshold``; ``verdicts`` holds the images explained.
    """
    def interval(row) -> str:
        return f"{row['auroc']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"

    drops = aurocs[aurocs["test"] == "drop"].set_index("model")
    by_test = aurocs.set_index(["model", "test"])
    lines = [f"**Known shortcut** ({finding} with a chest drain; shortcut and control models trained with the same "
             "recipe on the same number of images, drains correlated with the finding or not):", ""]
    for model in (SHORTCUT_MODEL, CONTROL_MODEL):
        if model in drops.index:
            lines.append(f"- {model} model, {finding} AUROC: confounded test "
                         f"{by_test.loc[(model, 'confounded'), 'auroc']:.3f}, clean test "
                         f"{by_test.loc[(model, 'clean'), 'auroc']:.3f}; drop {interval(drops.loc[model])}")
    if EFFECT in drops.index:
        effect = drops.loc[EFFECT]
        worth = "the shortcut is worth" if effect["low"] > 0 else "no AUROC effect of the shortcut is resolved:"
        lines.append(f"- {worth} {interval(effect)} AUROC (the shortcut model's drop minus the control's, "
                     "same resampled patients)")
    images = int(verdicts["images"].max()) if len(verdicts) else 0
    lines += ["", f"Explained: {images} of the {qualified} positive, drain-bearing confounded test images that the "
              f"shortcut model predicts positive (p >= {threshold:.3f}, its operating threshold on validation), "
              "under both models. Paired difference, shortcut model minus control model (95 % interval over the "
              "images; Holm over the methods):", ""]
    share, hits = MEASURES
    for method, group in verdicts.groupby("method", sort=False):
        rows = group.set_index("measure")
        first, second = rows.loc[share], rows.loc[hits]
        if np.isnan(first["difference"]):
            lines.append(f"- **{method}**: untestable on {images} image(s)")
            continue
        verdict = ("**reveals the shortcut**" if first["reveals"] else "does not reveal the shortcut")
        lines.append(f"- **{method}** {verdict}: drain share {first['shortcut']:.1%} vs {first['control']:.1%} "
                     f"(difference {first['difference']:+.3f} [{first['low']:+.3f}, {first['high']:+.3f}], "
                     f"p_Holm = {first['p_holm']:.3f}); drain hits {second['shortcut']:.0%} vs {second['control']:.0%} "
                     f"({second['difference']:+.2f} [{second['low']:+.2f}, {second['high']:+.2f}], "
                     f"p_Holm = {second['p_holm']:.3f})")
    control = (f"the control model learned the finding itself only to a clean-test AUROC of "
               f"{by_test.loc[(CONTROL_MODEL, 'clean'), 'auroc']:.3f}, so its maps show where a model without the "
               "shortcut looks, not where a good detector of the lesion would; " if CONTROL_MODEL in drops.index else "")
    lines += ["", f"Limits: one phantom, one seed, one shortcut and {images} images; {control}a difference that holds "
              "can still be small (compare the shares); superpixel methods (LIME, SHAP) can give the thin drain only "
              "the mass of the segments that contain it; the maps' coarse grids (Grad-CAM's) spread mass beyond "
              "the tube."]
    return "\n".join(lines) + "\n"
