"""Every figure of the study, in one style, saved by :func:`save_figure`.

Computing is separate from plotting: functions here take arrays and tables and return a
:class:`matplotlib.figure.Figure`; notebooks pass that to :func:`save_figure`, which names the
file after the notebook that made it (``<NN>_<slug>.png``) and records the link in
``figures/INDEX.csv`` (figure file, notebook, title), so no figure is ever orphaned.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .config import REPOSITORY_ROOT, Profile  # noqa: E402
from .files import atomic_path, atomic_write_text  # noqa: E402

__all__ = [
    "METHOD_COLORS",
    "save_figure",
    "image_grid",
    "overlay_heatmap",
    "outline",
]

METHOD_COLORS = {"Grad-CAM": "#1b9e77", "LRP": "#d95f02", "LIME": "#7570b3", "SHAP": "#e7298a"}
plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "axes.spines.top": False,
                     "axes.spines.right": False, "font.size": 9})


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def save_figure(figure, slug: str, *, notebook: str, profile: Profile, title: str = "") -> Path:
    """Save a figure as ``<NN>_<slug>.png`` for the notebook ``NN_...`` that made it.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
    slug : str
        Short name, e.g. ``"gallery"``; normalised to lowercase and underscores.
    notebook : str
        The producing notebook's name, e.g. ``"01_data_preparation"``.
    profile : Profile
        Figures go to ``runs/<profile>/figures/``; for a profile with ``publish_figures``
        (the default run) also to the repository's ``figures/``, with an entry in
        ``figures/INDEX.csv``.
    title : str
        One line for the index (defaults to the figure's suptitle).

    Returns
    -------
    pathlib.Path
        The run's copy of the figure. Written atomically.
    """
    number = notebook.split("_", 1)[0]
    if not number.isdigit():
        raise ValueError(f"notebook name must start with its number, e.g. '01_data_preparation', got {notebook!r}")
    name = f"{number}_{_slug(slug)}.png"
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    targets = [profile.paths.figures / name]
    if profile.publish_figures:
        targets.append(REPOSITORY_ROOT / "figures" / name)
        _index(name, notebook, title or (figure._suptitle.get_text() if figure._suptitle else slug))
    for target in targets:
        with atomic_path(target) as temporary:
            temporary.write_bytes(buffer.getvalue())
    return targets[0]


def _index(name: str, notebook: str, title: str) -> None:
    path = REPOSITORY_ROOT / "figures" / "INDEX.csv"
    rows = {}
    if path.is_file():
        with path.open(newline="") as handle:
            rows = {row["figure"]: row for row in csv.DictReader(handle)}
    rows[name] = {"figure": name, "notebook": f"notebooks/{notebook}.ipynb", "title": " ".join(title.split())}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["figure", "notebook", "title"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[key] for key in sorted(rows))
    atomic_write_text(path, text.getvalue())


def outline(mask: np.ndarray) -> np.ndarray:
    """The one-pixel boundary of a boolean mask."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def overlay_heatmap(axis, image: np.ndarray, heatmap: np.ndarray | None = None, *, mask: np.ndarray | None = None,
                    prediction: np.ndarray | None = None, signed: bool = False, title: str = "",
                    alpha: float = 0.5) -> None:
    """Draw a radiograph, optionally a heatmap over it, the ground truth (blue) and a segmentation (red).

    Signed maps use a diverging colormap centred at zero (red = for the class, blue = against);
    unsigned maps use ``inferno``. The heatmap is resized to the image for display only.
    """
    axis.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)
    if heatmap is not None:
        heatmap = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
        if signed:
            limit = float(np.abs(heatmap).max()) or 1.0
            axis.imshow(heatmap, cmap="bwr", vmin=-limit, vmax=limit, alpha=alpha, extent=extent,
                        interpolation="bilinear")
        else:
            axis.imshow(heatmap, cmap="inferno", alpha=alpha, extent=extent, interpolation="bilinear")
    for region, colour in ((mask, (0.1, 0.4, 1.0)), (prediction, (1.0, 0.15, 0.1))):
        if region is not None and np.any(region):
            edge = outline(region)
            rgba = np.zeros((*edge.shape, 4))
            rgba[edge] = (*colour, 1.0)
            axis.imshow(rgba, extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5),
                        interpolation="nearest")
    axis.set_title(title, fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])


def image_grid(count: int, *, columns: int = 4, size: float = 2.3, title: str = ""):
    """A figure with ``count`` square image axes; returns ``(figure, axes list)``."""
    rows = max(1, int(np.ceil(count / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size + (0.4 if title else 0)),
                                squeeze=False)
    flat: Sequence = axes.ravel()
    for axis in flat[count:]:
        axis.axis("off")
    if title:
        figure.suptitle(title)
    return figure, list(flat[:count])
