"""The known-shortcut experiment (notebook 10): do the explainers reveal a confounder the model uses?

A phantom variant draws a **chest drain** (:attr:`~shamsul_utils.phantom.PhantomSettings.shortcut`)
on most training images positive for one finding (Pneumothorax by default) and on few others:
clinically, pneumothorax classifiers have been found to look at chest drains, the treatment of
the finding rather than the finding (Oakden-Rayner et al. 2020). The same model as notebook 02 is
trained on it, then scored on two test splits of **the same patients**:

* *confounded*: drains at the training rates;
* *clean*: no drains (``shortcut.test_with`` / ``test_without``, 0 by default).

The phantom draws the drain from its own random stream, so the two splits are pixel-identical
except for the drain: the AUROC drop from confounded to clean is what the shortcut was worth.
Each explainer then explains the finding on positive, drain-bearing confounded test images, and
we measure where its positive attribution mass falls (:func:`attribution_shares`).

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
from .explainers.registry import REGISTRY
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
    "shortcut_profile",
    "clean_profile",
    "write_shortcut_data",
    "read_shortcut_data",
    "drain_rates",
    "trained_models",
    "predict_tests",
    "auroc_table",
    "explanation_rows",
    "explanation_subset",
    "explain_methods",
    "control_heatmaps",
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
CONTROL_MODEL = "normal (notebook 02)"


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
    """Generate (or find cached) the confounded phantom and the clean test split of a base profile.

    Returns ``{"confounded": summary, "clean": summary}`` with :func:`~shamsul_utils.phantom.write_dataset`'s
    summaries (``skipped`` is true when the manifest matched and nothing was written).
    """
    summaries = {}
    for key, derived in (("confounded", shortcut_profile(profile)), ("clean", clean_profile(profile))):
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
    """The splits ``train``, ``valid``, ``confounded`` (test) and ``clean`` (test, same patients).

    Raises
    ------
    DataError
        When the two test splits do not hold the same patients (labels differ row by row).
    """
    derived = shortcut_profile(profile)
    splits = {name: _read(derived, name, name) for name in ("train", "valid")}
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

def trained_models(profile: Profile) -> dict[str, torch.nn.Module]:
    """The shortcut-trained model, and as a control the normal run's model when notebook 02 has trained it."""
    from .models import load_trained_model

    models = {SHORTCUT_MODEL: load_trained_model(shortcut_profile(profile))[0]}
    if (profile.paths.checkpoints / "best.pt").is_file():
        models[CONTROL_MODEL] = load_trained_model(profile)[0]
    return models


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


def auroc_table(predictions: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0,
                confidence: float = 0.95) -> pd.DataFrame:
    """AUROC of each model on each test split with bootstrap CIs (``confidence``), and the paired drop.

    The two tests hold the same patients, so the drop (confounded minus clean) is bootstrapped
    with the same resampled patients for both. Returns columns ``model``, ``test``
    (confounded / clean / drop), ``auroc``, ``low``, ``high``, ``positives``, ``images``.
    """
    rows = []
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
        drop = samples["confounded"] - samples["clean"]
        low, high = interval_of(drop, confidence, "percentile")
        rows.append({"model": name, "test": "drop", "auroc": rows[-2]["auroc"] - rows[-1]["auroc"],
                     "low": low, "high": high})
        for row in rows[-3:]:
            row |= {"positives": int(labels.sum()), "images": len(labels)}
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- explanations

def explanation_rows(split: ShortcutSplit, finding: str, count: int) -> np.ndarray:
    """Rows of the confounded test split that are positive for ``finding`` and show a drain (first ``count``)."""
    positive = split.split.labels[:, CLASSES.index(finding)] == 1
    return np.flatnonzero(positive & split.has_drain)[:count]


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


def explain_methods(profile: Profile, model: torch.nn.Module, explanation: study.ExplanationSet, finding: str, *,
                    methods: dict[str, str] = study.METHODS, progress: bool = False) -> dict[str, np.ndarray]:
    """Each method's maps ``[N, h, w]`` of ``finding``, cached under ``runs/<profile>-shortcut/heatmaps``.

    ``profile`` is the *base* profile (the explainer settings are its; LRP uses ``explain.lrp_rule``).
    """
    derived = shortcut_profile(profile)
    column = CLASSES.index(finding)
    return {name: study.explain_cached(derived, model, explanation, method, progress=progress)[:, column]
            for name, method in methods.items()}


def control_heatmaps(profile: Profile, models: dict[str, torch.nn.Module], explanation: study.ExplanationSet,
                     finding: str, *, methods: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The cheap methods' maps of the control model (notebook 02's) on the same images, keyed ``"<method>, control"``.

    A model that never saw a drain gives the attribution a method puts on the drain *without* a
    shortcut (its maps' spatial spread, edges); empty when notebook 02 has not trained the control.
    """
    if CONTROL_MODEL not in models:
        return {}
    if methods is None:  # the gradient methods: a few model passes per image
        methods = tuple(key for key, record in REGISTRY.items() if record.cheap)
    chosen = {name: method for name, method in study.METHODS.items() if method in methods}
    maps = explain_methods(profile, models[CONTROL_MODEL], explanation, finding, methods=chosen)
    return {f"{name}, control": value for name, value in maps.items()}


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


def shares_for_methods(heatmaps: dict[str, np.ndarray], confounder, lesion, cxr_ids) -> pd.DataFrame:
    """:func:`attribution_shares` of every method, stacked with ``method`` and ``cxr_id`` columns."""
    return pd.concat([attribution_shares(maps, confounder, lesion).assign(method=name, cxr_id=list(cxr_ids))
                      for name, maps in heatmaps.items()], ignore_index=True)


def share_summary(shares: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per method and region: mean mass share, enrichment and pointing rate with 95 % bootstrap CIs."""
    rows = []
    for method, group in shares.groupby("method", sort=False):
        for region in REGIONS:
            row = {"method": method, "region": region, "images": len(group),
                   "area": float(group[f"area_{region}"].mean())}
            for quantity in ("mass", "enrichment", "pointing"):
                estimate, low, high = metrics.bootstrap_ci(group[f"{quantity}_{region}"].to_numpy(),
                                                           n_resamples=n_resamples, seed=seed)
                row |= {quantity: float(estimate), f"{quantity}_low": float(low), f"{quantity}_high": float(high)}
            rows.append(row)
    return pd.DataFrame(rows)


def verdict_table(shares: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per method: does it reveal the shortcut? Paired bootstrap of drain minus lesion, per unit area.

    A method *reveals* the drain when the lower 95 % bound of its drain enrichment exceeds 1 (more
    mass on the drain than a uniform map puts there). ``drain_vs_lesion`` is the paired difference
    of enrichments (drain minus lesion) with its CI: above 0, the map favours the drain over the lesion.
    """
    rows = []
    for method, group in shares.groupby("method", sort=False):
        drain, lesion = group["enrichment_confounder"].to_numpy(), group["enrichment_lesion"].to_numpy()
        _, low, _ = metrics.bootstrap_ci(drain, n_resamples=n_resamples, seed=seed)
        difference = metrics.paired_bootstrap_difference(drain, lesion, n_resamples=n_resamples, seed=seed)
        rows.append({"method": method, "drain_enrichment": float(np.nanmean(drain)), "drain_enrichment_low": float(low),
                     "lesion_enrichment": float(np.nanmean(lesion)),
                     "drain_vs_lesion": float(difference.difference), "drain_vs_lesion_low": float(difference.low),
                     "drain_vs_lesion_high": float(difference.high), "reveals_drain": bool(low > 1)})
    return pd.DataFrame(rows)


def verdict_text(aurocs: pd.DataFrame, summary: pd.DataFrame, verdicts: pd.DataFrame, finding: str) -> str:
    """The numbers of a run as a few Markdown sentences (for the notebook's conclusion)."""
    def interval(row, key="auroc"):
        low, high = ("low", "high") if key == "auroc" else (f"{key}_low", f"{key}_high")
        return f"{row[key]:.3f} [{row[low]:.3f}, {row[high]:.3f}]"

    lines = []
    for model, group in aurocs.groupby("model", sort=False):
        by_test = group.set_index("test")
        lines.append(f"* **{model}** model, {finding} AUROC: confounded test {interval(by_test.loc['confounded'])}, "
                     f"clean test {interval(by_test.loc['clean'])}; drop {interval(by_test.loc['drop'])}.")
    masses = summary.pivot(index="method", columns="region", values="mass")
    for _, row in verdicts.iterrows():
        method = row["method"]
        lines.append(f"* **{method}**: {masses.loc[method, 'confounder']:.1%} of the positive mass on the drain "
                     f"(enrichment {row['drain_enrichment']:.1f}, lower bound {row['drain_enrichment_low']:.1f}), "
                     f"{masses.loc[method, 'lesion']:.1%} on the lesion (enrichment {row['lesion_enrichment']:.1f}), "
                     f"{masses.loc[method, 'overlap']:.1%} where they overlap; drain minus lesion enrichment "
                     f"{row['drain_vs_lesion']:.1f} [{row['drain_vs_lesion_low']:.1f}, {row['drain_vs_lesion_high']:.1f}]"
                     f" -> {'reveals the drain' if row['reveals_drain'] else 'does not reveal the drain'}.")
    return "\n".join(lines)
