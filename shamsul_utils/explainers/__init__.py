"""The four explainers of the study behind one call shape, and their registry (:mod:`.registry`).

Every method answers ``explain(model, images, classes=None, *, batch_size=..., **options)`` with a
float32 array ``[N, C, H, W]`` at input resolution, the paper's settings as defaults:

=========== ================================================ =====================================
module      method                                           reference
=========== ================================================ =====================================
gradcam     Grad-CAM on the last dense block                 Selvaraju et al. 2017
lrp         LRP: z, epsilon, alpha2-beta1, deep Taylor (z+)  Bach et al. 2015; Montavon et al. 2017
lime        LIME over quickshift superpixels                 Ribeiro et al. 2016
shap        Kernel SHAP over 50 SLIC superpixels             Lundberg & Lee 2017
integrated_ Integrated Gradients (not compared in the study) Sundararajan et al. 2017
gradients
=========== ================================================ =====================================

Examples
--------
>>> from shamsul_utils import explainers
>>> sorted(explainers.EXPLAINERS)
['gradcam', 'integrated_gradients', 'lime', 'lrp', 'shap']
"""

import functools
import hashlib
from importlib.metadata import version
from pathlib import Path

from . import registry
from .registry import REGISTRY, Method, by_name, method, study_methods

__all__ = ["REGISTRY", "Method", "method", "by_name", "study_methods", "EXPLAINERS", "explain", "code_version",
           "gradcam", "lrp", "lime", "shap"]


def __getattr__(name: str):
    """``EXPLAINERS`` and the method modules, imported when first used (PEP 562): reading the
    registry (a figure's colours, a profile's check) does not import torch, zennit, lime or shap."""
    import importlib

    if name == "EXPLAINERS":
        return {key: record.explain for key, record in REGISTRY.items()}
    if name in REGISTRY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def code_version(method_key: str) -> str:
    """A digest of the code that computes a method's maps: its source files and library versions
    (the record's ``sources`` and ``libraries``, :mod:`shamsul_utils.explainers.registry`).

    Part of every heatmap cache key (:class:`shamsul_utils.store.HeatmapStore`), so that maps made by
    other code are recomputed, never reused (an edit of ``lrp.py`` invalidates the LRP maps only).
    """
    record = method(method_key)
    digest = hashlib.sha256()
    for name in record.sources:
        digest.update((Path(__file__).parent / name).read_bytes())
    for library in record.libraries:
        digest.update(f"{library}=={version(library)}".encode())
    return digest.hexdigest()[:12]


def explain(method: str, model, images, classes=None, **options):
    """Run one explainer by name (``"gradcam"``, ``"lrp"``, ``"lime"`` or ``"shap"``)."""
    return registry.method(method).explain(model, images, classes, **options)
