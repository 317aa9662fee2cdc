"""The study's shared steps: the explanation set, and cached runs of each explainer on it.

Notebooks 03-10 all work on the same **explanation set**: a seeded, stratified selection of
test images (for each localised class, single-label and multi-label positives, then other
images up to ``explain.n_images``), chosen by :func:`shamsul_utils.datasets.select_examples`.
Each explainer's heatmaps for that set are computed once, cached by
:class:`shamsul_utils.store.HeatmapStore` and read back by the evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import datasets
from .config import Profile
from .errors import DataError
from .explainers.registry import method as registry_method
from .explainers.registry import study_methods
from .labels import CLASSES, LOCALIZED_CLASSES
from .models import model_device
from .notices import notice
from .store import HeatmapStore, input_digest, model_fingerprint
from .training import load_predictions

__all__ = ["METHODS", "methods", "extra_methods", "ExplanationSet", "explanation_set", "method_options", "explain_cached", "load_heatmaps",
           "localised_indices", "showcase", "is_cheap", "heatmap_store"]

# Display name -> key of the methods the study compares, from the registry (shamsul_utils.explainers.registry).
METHODS: dict[str, str] = study_methods()


def extra_methods(profile: Profile) -> dict[str, str]:
    """Display name -> key of the profile's methods outside the paper's four (``explain.extra_methods``)."""
    return {registry_method(key).name: key for key in profile.explain.extra_methods}


def methods(profile: Profile) -> dict[str, str]:
    """Display name -> key of every method a profile evaluates: the study's four, then its extras."""
    return METHODS | extra_methods(profile)


def localised_indices() -> list[int]:
    """Positions of the 10 localised classes in :data:`CLASSES`."""
    return [CLASSES.index(name) for name in LOCALIZED_CLASSES]


@dataclass
class ExplanationSet:
    """The images every explainer explains, with what the evaluation needs about them.

    Attributes
    ----------
    table : pandas.DataFrame
        Rows of the test split (``cxr_id``, ``image_path``, labels).
    images : torch.Tensor
        ``[N, 3, S, S]`` ImageNet-normalised model inputs.
    gray : numpy.ndarray
        ``[N, S, S]`` float in [0, 1], for display.
    labels, probabilities : numpy.ndarray
        ``[N, 14]``: ground truth and the trained model's test predictions.
    masks : shamsul_utils.datasets.ExpertMasks
        The expert masks of the localised classes at each image's original size (the size
        CheXlocalize scores at, whatever size the image file or the model input has), decoded one
        image at a time: ``masks[n]`` is bool ``[10, H_n, W_n]``; ``masks.present`` and
        ``masks.area`` are ``[N, 10]``.
    """

    table: pd.DataFrame
    images: torch.Tensor
    gray: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    masks: datasets.ExpertMasks

    def __post_init__(self):
        if not isinstance(self.masks, datasets.ExpertMasks):  # masks given in memory, [N, 10, H, W]
            self.masks = datasets.ExpertMasks.from_arrays(self.masks, cxr_ids=self.table["cxr_id"].tolist())

    @property
    def cxr_ids(self) -> list[str]:
        return self.table["cxr_id"].tolist()

    @property
    def positive_findings(self) -> np.ndarray:
        """Number of positive findings (No Finding excluded) per image."""
        return self.labels[:, 1:].sum(1).astype(int)

    def __len__(self) -> int:
        return len(self.table)

    def subset(self, rows) -> ExplanationSet:
        """The same set restricted to some rows (in that order)."""
        rows = np.asarray(rows)
        return ExplanationSet(table=self.table.iloc[rows].reset_index(drop=True), images=self.images[rows],
                              gray=self.gray[rows], labels=self.labels[rows],
                              probabilities=self.probabilities[rows], masks=self.masks.subset(rows))


def is_cheap(method: str) -> bool:
    """Whether a method costs a few model passes per image (gradients), not ~1000 (perturbations)."""
    return registry_method(method).cheap


def explanation_set(profile: Profile, split_name: str = "test", images: int | None = None) -> ExplanationSet:
    """Select and load the explanation set of a profile (deterministic in ``profile.seed``).

    ``split_name="valid"`` with ``images`` gives the validation images segmentation settings are
    tuned on (:func:`shamsul_utils.evaluation.tune_on_validation`): the same stratified draw with
    ``images // 10`` positives per localised class (at least one), so that every class has some.
    The default is notebooks 03-06's set.
    """
    split = datasets.read_split(profile, split_name)
    count = profile.explain.n_images if images is None else images
    per_class = profile.explain.per_class if images is None else max(1, images // len(LOCALIZED_CLASSES))
    rows = datasets.select_examples(split, per_class=per_class, seed=profile.seed, total=min(count, len(split)))
    table = split.table.iloc[rows].reset_index(drop=True)
    size = profile.model.input_size
    gray = datasets.load_images(table["image_path"].tolist(), size)
    predictions = load_predictions(profile, split_name).set_index("cxr_id").loc[table["cxr_id"]]
    masks = datasets.ExpertMasks(split, table["cxr_id"])
    return ExplanationSet(table=table, images=datasets.normalize(gray), gray=gray / 255.0,
                          labels=table[list(CLASSES)].to_numpy(np.float32),
                          probabilities=predictions[list(CLASSES)].to_numpy(np.float32), masks=masks)


def method_options(profile: Profile, method: str, *, rule: str | None = None) -> tuple[str, dict]:
    """The store name and keyword options of a method under a profile (paper values by default;
    :meth:`shamsul_utils.explainers.registry.Method.options`)."""
    return registry_method(method).options(profile, rule=rule)


def heatmap_store(profile: Profile, method: str, model_key: str, *, rule: str | None = None) -> HeatmapStore:
    """The cache of one method's maps: keyed by its options, the model's weights (``model_key``,
    :func:`~shamsul_utils.store.model_fingerprint`) and the code that computes them."""
    from .explainers import code_version

    name, options = method_options(profile, method, rule=rule)
    return HeatmapStore(profile.paths.heatmaps, name, options, model_key, code=code_version(method))


def explain_cached(profile: Profile, model: torch.nn.Module, explanation: ExplanationSet, method: str, *,
                   rule: str | None = None, rows: np.ndarray | None = None, progress: bool = True) -> np.ndarray:
    """Heatmaps ``[N, 14, S, S]`` of one method for the explanation set, computed only where not cached.

    Images are explained a few at a time and each image's maps are stored as soon as they exist,
    so a killed run loses at most one chunk. ``rows`` restricts the work to some images (the
    result then has ``len(rows)`` entries). The cache key includes the model's weights, so a
    randomised model (notebook 07's sanity check) gets its own entries; each image's maps carry
    the digest of the input they explain, so an image replaced on disk gets new maps.
    """
    name, options = method_options(profile, method, rule=rule)
    store = heatmap_store(profile, method, model_fingerprint(model), rule=rule)
    record = registry_method(method)
    explain = record.explain
    batch_size = profile.explain.batch_size
    chunk = record.chunk

    def run(images: torch.Tensor) -> np.ndarray:
        return explain(model, images.to(model_device(model)), batch_size=batch_size, **options)

    rows = np.arange(len(explanation)) if rows is None else np.asarray(rows)
    ids = [explanation.cxr_ids[row] for row in rows]
    missing = [cxr_id for cxr_id in ids if not store.has(cxr_id)]
    if missing and (reason := store.superseded_because(missing)):
        notice(reason)
    return store.compute(ids, explanation.images[rows], run, chunk=chunk, progress=progress)


def load_heatmaps(profile: Profile, model: torch.nn.Module, explanation: ExplanationSet, method: str, *,
                  rule: str | None = None, rows: np.ndarray | None = None) -> np.ndarray:
    """The cached heatmaps of a method (one-line error naming the notebook to run when absent).

    ``rows`` restricts them to some images of the set (as in :func:`explain_cached`). Maps made
    for another version of an image (its file replaced since) count as missing.
    """
    name, options = method_options(profile, method, rule=rule)
    store = heatmap_store(profile, method, model_fingerprint(model), rule=rule)
    rows = np.arange(len(explanation)) if rows is None else np.asarray(rows)
    ids = [explanation.cxr_ids[row] for row in rows]
    digests = [input_digest(explanation.images[row]) for row in rows]
    missing = store.missing(ids, digests)
    if missing:
        changed = store.changed(ids, digests)
        what = f"missing or made for another version of the image ({len(changed)} changed)" if changed else "missing"
        raise DataError(f"{profile.name}: {len(missing)} of {len(ids)} {name} heatmaps are {what} "
                        f"(e.g. {missing[0]}); run the {name.split('-')[0]} notebook first")
    return store.load_many(ids, digests)


def showcase(explanation: ExplanationSet, classes: tuple[str, ...] = ("Cardiomegaly", "Lung Opacity",
                                                                      "Pleural Effusion", "Support Devices"),
             ) -> list[tuple[int, str, str]]:
    """Instances to show per class: a single-label positive, a multi-label positive and a negative.

    Returns ``[(row, class name, kind)]`` with kind ``"single-label"``, ``"multi-label"`` or
    ``"negative"``; the first instance of each kind in the explanation set (deterministic).
    """
    findings = explanation.positive_findings
    chosen = []
    for name in classes:
        column = explanation.labels[:, CLASSES.index(name)] == 1
        for kind, rows in (("single-label", np.flatnonzero(column & (findings == 1))),
                           ("multi-label", np.flatnonzero(column & (findings > 1))),
                           ("negative", np.flatnonzero(~column))):
            if len(rows):
                chosen.append((int(rows[0]), name, kind))
    return chosen
