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

from . import gradcam, lime, lrp, shap

__all__ = ["EXPLAINERS", "explain", "gradcam", "lrp", "lime", "shap"]

EXPLAINERS = {"gradcam": gradcam.explain, "lrp": lrp.explain, "lime": lime.explain, "shap": shap.explain}


def explain(method: str, model, images, classes=None, **options):
    """Run one explainer by name (``"gradcam"``, ``"lrp"``, ``"lime"`` or ``"shap"``)."""
    try:
        function = EXPLAINERS[method]
    except KeyError:
        raise ValueError(
            f"unknown method {method!r}; expected one of {', '.join(sorted(EXPLAINERS))}"
        ) from None
    return function(model, images, classes, **options)
