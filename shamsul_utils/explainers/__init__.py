"""The four explainers of the study behind one call shape.

Every method answers ``explain(model, images, classes=None, *, batch_size=..., **options)`` with a
float32 array ``[N, C, H, W]`` at input resolution, the paper's settings as defaults:

=========== ================================================ =====================================
module      method                                           reference
=========== ================================================ =====================================
gradcam     Grad-CAM on the last dense block                 Selvaraju et al. 2017
lrp         LRP: z, epsilon, alpha2-beta1, deep Taylor (z+)  Bach et al. 2015; Montavon et al. 2017
lime        LIME over quickshift superpixels                 Ribeiro et al. 2016
shap        Kernel SHAP over 50 SLIC superpixels             Lundberg & Lee 2017
=========== ================================================ =====================================

Examples
--------
>>> from shamsul_utils import explainers
>>> sorted(explainers.EXPLAINERS)
['gradcam', 'lime', 'lrp', 'shap']
"""

import functools
import hashlib
from importlib.metadata import version
from pathlib import Path

from . import gradcam, lime, lrp, shap

__all__ = ["EXPLAINERS", "explain", "code_version", "gradcam", "lrp", "lime", "shap"]

EXPLAINERS = {"gradcam": gradcam.explain, "lrp": lrp.explain, "lime": lime.explain, "shap": shap.explain}

# What a method's maps depend on besides its options and the model: its module, the shared
# helpers it imports, and the libraries that compute them.
_SOURCES = {"gradcam": ("gradcam.py", "_common.py"), "lrp": ("lrp.py", "_common.py"),
            "lime": ("lime.py", "_perturbation.py", "_common.py"), "shap": ("shap.py", "_perturbation.py", "_common.py")}
_LIBRARIES = {"gradcam": ("torch",), "lrp": ("torch", "zennit"), "lime": ("torch", "lime", "scikit-image"),
              "shap": ("torch", "shap", "scikit-image")}


@functools.cache
def code_version(method: str) -> str:
    """A digest of the code that computes a method's maps: its source files and library versions.

    Part of every heatmap cache key (:class:`shamsul_utils.store.HeatmapStore`), so that maps made by
    other code are recomputed, never reused (an edit of ``lrp.py`` invalidates the LRP maps only).
    """
    if method not in _SOURCES:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(sorted(_SOURCES))}")
    digest = hashlib.sha256()
    for name in _SOURCES[method]:
        digest.update((Path(__file__).parent / name).read_bytes())
    for library in _LIBRARIES[method]:
        digest.update(f"{library}=={version(library)}".encode())
    return digest.hexdigest()[:12]


def explain(method: str, model, images, classes=None, **options):
    """Run one explainer by name (``"gradcam"``, ``"lrp"``, ``"lime"`` or ``"shap"``)."""
    try:
        function = EXPLAINERS[method]
    except KeyError:
        raise ValueError(
            f"unknown method {method!r}; expected one of {', '.join(sorted(EXPLAINERS))}"
        ) from None
    return function(model, images, classes, **options)
