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
           "source_closure", "gradcam", "lrp", "lime", "shap"]


def __getattr__(name: str):
    """``EXPLAINERS`` and the method modules, imported when first used (PEP 562): reading the
    registry (a figure's colours, a profile's check) does not import torch, zennit, lime or shap."""
    import importlib

    if name == "EXPLAINERS":
        return {key: record.explain for key, record in REGISTRY.items()}
    if name in REGISTRY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # shamsul_utils/


def _module_file(name: str) -> Path | None:
    """The source file of a module of this package (``shamsul_utils.x.y``), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE_ROOT.name:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(name: str, source: Path) -> set[str]:
    """The modules of this package that ``source`` (module ``name``) imports, anywhere in it
    (function-local imports too), read from its syntax tree."""
    import ast

    package = name if source.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}  # "from . import module"
    return {module for module in found if _module_file(module) is not None}


@functools.cache
def source_closure(method_key: str) -> tuple[Path, ...]:
    """The source files a method's maps depend on: its module and every module of this package it
    imports, directly or not (package ``__init__`` files only where imported as such).

    Computed from the code itself, never a hand-kept list, so that an edit of, say,
    ``models.denormalize`` (which LIME and SHAP call) makes their maps recompute.

    Examples
    --------
    >>> sorted(path.name for path in source_closure("lime"))[:4]
    ['_common.py', '_perturbation.py', 'errors.py', 'files.py']
    """
    todo = [f"{__name__}.{method(method_key).key}"]
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = _module_file(name)
        todo += sorted(_imported_modules(name, seen[name]) - set(seen))
    return tuple(sorted(set(seen.values())))


@functools.cache
def code_version(method_key: str) -> str:
    """A digest of the code that computes a method's maps: the files of its import closure
    (:func:`source_closure`) and the versions of the libraries it names (the record's
    ``libraries``, :mod:`shamsul_utils.explainers.registry`).

    Part of every heatmap cache key (:class:`shamsul_utils.store.HeatmapStore`), so that maps made by
    other code are recomputed, never reused (an edit of ``lrp.py`` invalidates the LRP maps only;
    one of ``models.py``, which every method imports, all of them).
    """
    record = method(method_key)
    digest = hashlib.sha256()
    for path in source_closure(record.key):
        digest.update(path.relative_to(PACKAGE_ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    for library in record.libraries:
        digest.update(f"{library}=={version(library)}".encode())
    return digest.hexdigest()[:12]


def explain(method: str, model, images, classes=None, **options):
    """Run one explainer by name (``"gradcam"``, ``"lrp"``, ``"lime"`` or ``"shap"``)."""
    return registry.method(method).explain(model, images, classes, **options)
