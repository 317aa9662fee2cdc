"""The method registry: one record per explainer, the only place that names a method.

Everything the rest of the project needs to know about a method is here: its key (the module
name), the name readers see, its colour in every figure, whether its maps are signed, its kind
(gradient or perturbation: how many images a call takes, whether the sanity check uses a subset,
whether a progress bar counts samples), what its cached maps depend on (the code version) and
its options under a profile. study, evaluation, plots, workshop, shortcut and the notebooks read
these records; adding a method is one module beside this file and one record below.

Option vocabulary: a profile's settings are exposed under one vocabulary for every method
(:attr:`Method.settings`: ``n_samples``, ``fill``, ``seed``, ``estimator``); :meth:`Method.options` translates
them into the keyword names of the method's own ``explain`` (LIME's ``num_samples`` and
``hide_color``, Kernel SHAP's ``nsamples`` and ``fill``, as the wrapped libraries call them), which
are also the heatmap cache's keys.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Method", "REGISTRY", "method", "by_name", "study_methods", "with_rules"]

@dataclass(frozen=True)
class Method:
    """One explainer.

    Attributes
    ----------
    key : str
        The module name (``"gradcam"``), used in cache folders and file names.
    name : str
        What readers see (``"Grad-CAM"``): table rows, figure titles, widget buttons.
    colour : str
        Its colour in every figure.
    signed : bool
        Whether its maps carry evidence against a class (negative values); shown with a diverging
        colour map, and segmented after the evaluation's ``signed`` policy.
    kind : {"gradient", "perturbation"}
        Gradient methods cost a few model passes per image; perturbation methods ~1000.
    explain : callable
        ``explain(model, images, classes=None, *, batch_size, **options) -> [N, C, H, W]``: the
        ``explain`` of the module named ``key`` in this package (imported when first used, so that
        reading the registry, e.g. for a figure's colours, imports no explainer library).
    libraries : tuple of str
        The libraries whose versions its maps depend on (besides options, model and the source
        files it imports, which :func:`shamsul_utils.explainers.source_closure` finds itself).
    """

    key: str
    name: str
    colour: str
    signed: bool
    kind: str
    libraries: tuple[str, ...]
    _settings: Callable = lambda profile: {}
    _options: Callable = lambda settings: {}
    _extra_samples: int = 0  # evaluated besides n_samples on the paper route (shap's empty and full coalitions)
    _cheap: bool | None = None  # None: cheap when kind is "gradient"
    study: bool = True  # one of the paper's four methods, compared in notebooks 03-08

    @property
    def explain(self) -> Callable:
        return importlib.import_module(f"{__package__}.{self.key}").explain

    @property
    def cheap(self) -> bool:
        """A few model passes per image (Grad-CAM, LRP), not ~1000 (perturbations)."""
        return self.kind == "gradient" if self._cheap is None else self._cheap

    @property
    def chunk(self) -> int:
        """Images explained per call, and so at most lost when a run is killed."""
        return 8 if self.cheap else 1

    def sanity_rows(self, rows):
        """The rows the randomisation check explains again: all for a gradient method, the first
        quarter (at least 2) for a perturbation method (1000 model calls per image)."""
        return rows if self.cheap else rows[:max(2, len(rows) // 4)]

    def settings(self, profile) -> dict:
        """The profile's settings for this method in the shared vocabulary (``n_samples``, ``fill``,
        ``seed``, ``estimator``; empty for methods without any)."""
        return self._settings(profile)

    def samples(self, profile) -> int:
        """Perturbed images one explanation evaluates (0 for gradient methods): for progress bars."""
        settings = self.settings(profile)
        count = settings.get("n_samples", 0)
        extra = self._extra_samples if settings.get("estimator", "paper") == "paper" else 0
        return count + extra if count else 0

    def options(self, profile, *, rule: str | None = None) -> tuple[str, dict]:
        """``(store name, keyword options)`` of ``explain`` under a profile (paper values by default).

        The store name is the cache folder (``"lrp-<rule>"`` for LRP, whose rule is part of it).
        """
        if self.key == "lrp":
            chosen = rule or profile.explain.lrp_rule
            return f"lrp-{chosen}", {"rule": chosen}
        return self.key, self._options(self.settings(profile))

    @property
    def code_version(self) -> str:
        """A digest of the code that computes the maps (:func:`shamsul_utils.explainers.code_version`)."""
        from . import code_version

        return code_version(self.key)


REGISTRY: dict[str, Method] = {record.key: record for record in (
    Method("gradcam", "Grad-CAM", "#1b9e77", signed=False, kind="gradient", libraries=("torch",)),
    Method("lrp", "LRP", "#d95f02", signed=True, kind="gradient", libraries=("torch", "zennit")),
    Method("lime", "LIME", "#7570b3", signed=True, kind="perturbation", libraries=("torch", "lime", "scikit-image"),
           _settings=lambda profile: {"n_samples": profile.explain.lime_samples, "fill": 0.0, "seed": profile.seed,
                                      "estimator": profile.explain.estimator},
           _options=lambda settings: {"num_samples": settings["n_samples"], "seed": settings["seed"],
                                      "hide_color": settings["fill"], "estimator": settings["estimator"]}),
    Method("shap", "SHAP", "#e7298a", signed=True, kind="perturbation", libraries=("torch", "shap", "scikit-image"),
           _settings=lambda profile: {"n_samples": profile.explain.shap_samples, "fill": profile.explain.shap_fill,
                                      "seed": profile.seed, "estimator": profile.explain.estimator},
           _options=lambda settings: {"nsamples": settings["n_samples"], "seed": settings["seed"],
                                      "fill": settings["fill"], "estimator": settings["estimator"]},
           _extra_samples=2),
    # Not the paper's: for the library and workshops (a gradient method with an axiom to check).
    Method("integrated_gradients", "Integrated Gradients", "#66a61e", signed=True, kind="gradient",
           libraries=("torch", "captum"),
           _settings=lambda profile: {"n_samples": 32, "fill": "black"},
           _options=lambda settings: {"n_steps": settings["n_samples"], "baseline": settings["fill"]},
           _cheap=False, study=False),
)}


def method(key_or_name: str) -> Method:
    """The record of a method, by key (``"gradcam"``) or by name (``"Grad-CAM"``)."""
    if key_or_name in REGISTRY:
        return REGISTRY[key_or_name]
    for record in REGISTRY.values():
        if record.name == key_or_name:
            return record
    raise ValueError(f"unknown method {key_or_name!r}; expected one of "
                     f"{', '.join(record.key for record in REGISTRY.values())}")


def with_rules() -> Method:
    """The method whose maps depend on a propagation rule (LRP; notebook 04 compares its rules)."""
    return REGISTRY["lrp"]


def by_name() -> dict[str, Method]:
    """``{name: record}`` in the study's order."""
    return {record.name: record for record in REGISTRY.values()}


def study_methods() -> dict[str, str]:
    """``{name: key}`` of the methods the study compares, in order (``study.METHODS``)."""
    return {record.name: record.key for record in REGISTRY.values() if record.study}
