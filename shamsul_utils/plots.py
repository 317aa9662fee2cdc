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
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .config import REPOSITORY_ROOT, Profile  # noqa: E402
from .explainers.registry import by_name  # noqa: E402
from .explainers.registry import method as registry_method  # noqa: E402
from .files import atomic_path, atomic_write_text  # noqa: E402

__all__ = [
    "METHOD_COLORS",
    "save_figure",
    "image_grid",
    "overlay_heatmap",
    "outline",
    "EXPLORER_COLOURS",
    "contour_lines",
    "explorer_panel",
    "explorer_legend",
    "SHORTCUT_REGION_COLOURS",
    "shortcut_auroc_figure",
    "shortcut_shares_figure",
    "geometry_figure",
    "shortcut_examples_figure",
    "CLASS_COLORS",
    "gallery_figure",
    "prevalence_figure",
    "cooccurrence_figure",
    "learning_curves_figure",
    "performance_figure",
    "roc_figure",
    "predictions_figure",
    "explanation_overlays_figure",
    "rules_comparison_figure",
    "iou_boxplot_figure",
    "methods_comparison_figure",
    "ranking_figure",
    "seeds_figure",
    "label_count_figure",
    "faithfulness_figure",
    "sanity_figure",
    "significance_figure",
    "methods_grid_figure",
]

MAX_PIXELS = 600_000  # a figure is saved at 110 dpi, or less when that would exceed this many pixels
METHOD_COLORS = {name: record.colour for name, record in by_name().items()}  # from the method registry
plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "axes.spines.top": False,
                     "axes.spines.right": False, "font.size": 9})


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


class SavedFigure(type(Path())):
    """The path of a saved figure; a notebook cell ending in :func:`save_figure` shows
    ``saved runs/<profile>/figures/<name>.png`` rather than a ``PosixPath(...)`` repr."""

    def __repr__(self) -> str:
        return f"saved {self}"


def save_figure(figure, slug: str, *, notebook: str, profile: Profile, title: str = "") -> Path:
    """Save a figure as ``<NN>_<slug>.png`` for the notebook ``NN_...`` that made it.

    PNG at 110 dpi, lowered for large figures so that none exceeds :data:`MAX_PIXELS` pixels
    (image grids of noisy radiographs compress poorly; the repository keeps every figure).

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
    SavedFigure
        The run's copy of the figure (a :class:`pathlib.Path`). Written atomically.
    """
    number = notebook.split("_", 1)[0]
    if not number.isdigit():
        raise ValueError(f"notebook name must start with its number, e.g. '01_data_preparation', got {notebook!r}")
    name = f"{number}_{_slug(slug)}.png"
    buffer = io.BytesIO()
    width, height = figure.get_size_inches()
    dpi = min(110.0, (MAX_PIXELS / (width * height)) ** 0.5)  # keep committed figures small
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    targets = [profile.paths.figures / name]
    if profile.publish_figures:
        targets.append(REPOSITORY_ROOT / "figures" / name)
        _index(name, notebook, title or (figure._suptitle.get_text() if figure._suptitle else slug))
    for target in targets:
        with atomic_path(target) as temporary:
            temporary.write_bytes(buffer.getvalue())
    _display_in_notebook(buffer.getvalue())
    return SavedFigure(targets[0])


def _display_in_notebook(png: bytes) -> None:
    """Show the saved PNG when running inside Jupyter (the figure itself is closed)."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:  # pragma: no cover - IPython is a pinned dependency
        return
    if get_ipython() is not None and get_ipython().__class__.__name__ == "ZMQInteractiveShell":
        display(Image(data=png))


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


# The explorer's palette (notebook 09): the expert mask, the segmentation and relevance never share a
# colour. Relevance is red for the class and blue against it (signed maps, ``bwr``) or white to red
# (unsigned maps, ``Reds``); outlines are green (expert mask) and yellow (segmentation).
EXPLORER_COLOURS = {"expert mask": "#00c853", "segmentation": "#ffd600"}


def contour_lines(axis, mask: np.ndarray, colour: str, *, linewidth: float = 1.8) -> None:
    """Outline a bool mask ``[H, W]`` with vector lines (``skimage.measure.find_contours`` at 0.5 on
    the zero-padded mask): unbroken at any display size, unlike a 1-pixel raster outline. Pixel
    ``(r, c)`` is centred at ``(c, r)``, as :meth:`~matplotlib.axes.Axes.imshow` draws it."""
    from skimage import measure

    for contour in measure.find_contours(np.pad(np.asarray(mask, dtype=np.float32), 1), 0.5):
        axis.plot(contour[:, 1] - 1, contour[:, 0] - 1, color=colour, linewidth=linewidth, solid_capstyle="round")


def explorer_panel(axis, image: np.ndarray, heatmap: np.ndarray | None = None, *, mask: np.ndarray | None = None,
                   segmentation: np.ndarray | None = None, signed: bool = False, title: str = "") -> None:
    """One panel of the explorer: radiograph, optional heatmap, expert mask and segmentation outlines.

    The heatmap's colour scale saturates at the 99.5th percentile of its magnitude (display only:
    a few extreme pixels, typical of LRP, would otherwise leave the rest of the map invisible).
    """
    axis.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    height, width = image.shape
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    if heatmap is not None:
        values = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
        magnitude = np.abs(values)
        limit = float(np.percentile(magnitude, 99.5)) or float(magnitude.max()) or 1.0
        if signed:
            axis.imshow(values, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.55, extent=extent,
                        interpolation="bilinear")
        else:
            low = float(values.min())
            axis.imshow(values, cmap="Reds", vmin=low, vmax=max(low + 1e-12, float(np.percentile(values, 99.5))),
                        alpha=0.55, extent=extent, interpolation="bilinear")
    for region, key in ((mask, "expert mask"), (segmentation, "segmentation")):
        if region is not None and np.any(region):
            contour_lines(axis, region, EXPLORER_COLOURS[key])
    axis.set_xlim(extent[0], extent[1])
    axis.set_ylim(extent[2], extent[3])
    axis.set_title(title, fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])


def explorer_legend(figure, *, signed: bool = True) -> None:
    """The explorer's legend, below the panels: outlines and what the relevance colours mean."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color=EXPLORER_COLOURS["expert mask"], linewidth=2.5, label="expert mask"),
               Line2D([], [], color=EXPLORER_COLOURS["segmentation"], linewidth=2.5, label="segmentation of the map"),
               Patch(color="#e8453c", alpha=0.7, label="relevance for the class")]
    if signed:
        handles.append(Patch(color="#3b6fd8", alpha=0.7, label="relevance against the class"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False,
                  bbox_to_anchor=(0.5, -0.01))


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


# ----------------------------------------------------------------------------- data (notebook 01)

CLASS_COLORS = dict(zip(
    ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
     "Atelectasis", "Pneumothorax", "Pleural Effusion", "Support Devices"),
    plt.get_cmap("tab10").colors, strict=True))


def gallery_figure(images: np.ndarray, masks: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                   *, titles: Sequence[str] | None = None, columns: int = 4, title: str = ""):
    """Radiographs with each positive localised class's mask outlined in its colour, and a legend."""
    figure, axes = image_grid(len(images), columns=columns, size=2.6, title=title)
    for index, axis in enumerate(axes):
        axis.imshow(images[index], cmap="gray", vmin=0, vmax=1 if images.dtype != np.uint8 else 255)
        for class_index, name in enumerate(class_names):
            if masks[index, class_index].any():
                edge = outline(masks[index, class_index])
                rgba = np.zeros((*edge.shape, 4))
                rgba[edge] = (*CLASS_COLORS.get(name, (1, 0, 0)), 1.0)
                axis.imshow(rgba, interpolation="nearest")
        axis.set_title(textwrap.fill(titles[index], 34) if titles else "", fontsize=6.5)
        axis.set_xticks([])
        axis.set_yticks([])
    handles = [matplotlib.patches.Patch(color=CLASS_COLORS[name], label=name) for name in class_names
               if name in CLASS_COLORS]
    figure.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    return figure


def prevalence_figure(statistics: dict, *, title: str = "Label prevalence per split"):
    """Stacked bars of single- and multi-label positives per class, one panel per split."""
    figure, axes = plt.subplots(1, len(statistics), figsize=(4.2 * len(statistics), 4.2), sharey=True, squeeze=False)
    for axis, (split, table) in zip(axes[0], statistics.items(), strict=True):
        positions = np.arange(len(table))
        single = table["single_label"].to_numpy()
        axis.barh(positions, single, color="#4c72b0", label="single-label")
        axis.barh(positions, table["multi_label"], left=single, color="#dd8452", label="multi-label")
        axis.set_yticks(positions, table["class"], fontsize=7)
        axis.invert_yaxis()
        axis.set_title(f"{split} ({table.attrs.get('images', '?')} images)")
        axis.set_xlabel("positive images")
    axes[0, 0].legend(fontsize=7, frameon=False)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def cooccurrence_figure(labels: np.ndarray, class_names: Sequence[str], *, title: str = "Label co-occurrence"):
    """Conditional co-occurrence P(column | row) of the labels, as an annotated heatmap."""
    import seaborn as sns

    positives = labels.T @ labels
    conditional = positives / np.maximum(np.diag(positives)[:, None], 1)
    figure, axis = plt.subplots(figsize=(7.5, 6.2))
    sns.heatmap(conditional, ax=axis, cmap="mako_r", vmin=0, vmax=1, annot=True, fmt=".2f",
                annot_kws={"fontsize": 5.5}, xticklabels=class_names, yticklabels=class_names,
                cbar_kws={"label": "P(column | row)"})
    axis.tick_params(labelsize=7)
    axis.set_title(title)
    return figure


# ------------------------------------------------------------------------- training (notebook 02)

def learning_curves_figure(history, best_epoch: int, *, title: str = "Learning curves"):
    """Training/validation loss and validation mean AUROC per epoch; the selected epoch marked.

    An empty history (a given checkpoint was evaluated, nothing trained) gives a panel that says so.
    """
    if len(history) == 0:
        figure, axis = plt.subplots(figsize=(9, 1.2))
        axis.axis("off")
        axis.text(0.5, 0.5, "No training in this run: the model of model.checkpoint is evaluated as given.",
                  ha="center", va="center")
        return figure
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.3))
    left.plot(history["epoch"], history["train_loss"], "o-", label="train")
    left.plot(history["epoch"], history["valid_loss"], "o-", label="validation")
    best = best_epoch
    for axis in (left, right):
        axis.axvline(best, color="grey", linestyle=":", label="selected")
        axis.set_xlabel("epoch")
    left.set_ylabel("BCE loss")
    left.legend(frameon=False)
    right.plot(history["epoch"], history["valid_mean_auroc"], "o-", color="#55a868")
    right.set_ylabel("validation mean AUROC")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def performance_figure(table, images: int, *, title: str = "Test performance per class (95 % bootstrap CI)"):
    """Per-class AUROC and AUPRC with CIs, positives annotated (replaces the paper's sunburst, Fig. 3).

    ``table`` is :func:`shamsul_utils.metrics.auroc_auprc`'s; ``images`` the number of test images.
    """
    table = table[table["class"] != "weighted average"].dropna(subset=["auroc"]).reset_index(drop=True)
    figure, axes = plt.subplots(1, 2, figsize=(10, 0.33 * len(table) + 1.4), sharey=True)
    positions = np.arange(len(table))
    for axis, metric, colour in ((axes[0], "auroc", "#4c72b0"), (axes[1], "auprc", "#c44e52")):
        estimate = table[metric].to_numpy()
        errors = np.vstack([estimate - table[f"{metric}_low"].to_numpy(), table[f"{metric}_high"].to_numpy() - estimate])
        axis.errorbar(estimate, positions, xerr=errors, fmt="o", color=colour, capsize=2)
        axis.set_xlabel(metric.upper())
        axis.set_xlim(0, 1.02)
        axis.grid(axis="x", alpha=0.3)
    axes[0].axvline(0.5, color="grey", linestyle=":")
    axes[1].scatter(table["positives"] / images, positions, marker="|", color="grey", s=80,
                    label="prevalence (chance AUPRC)")
    axes[1].legend(fontsize=7, frameon=False, loc="lower left")
    axes[0].set_yticks(positions, [f"{name} (n+={count})" for name, count in zip(table["class"], table["positives"],
                                                                                strict=True)], fontsize=7)
    axes[0].invert_yaxis()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def roc_figure(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str], *,
               title: str = "ROC curves on the test split"):
    """One ROC curve per class that has positives and negatives (and is predicted: a model without a
    class has NaN probabilities for it)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    figure, axis = plt.subplots(figsize=(5.2, 5))
    colours = plt.get_cmap("tab20").colors
    for index, name in enumerate(class_names):
        column = labels[:, index]
        if 0 < column.sum() < len(column) and not np.isnan(probabilities[:, index]).any():
            false_positive, true_positive, _ = roc_curve(column, probabilities[:, index])
            axis.plot(false_positive, true_positive, color=colours[index % 20], linewidth=1,
                      label=f"{name} ({roc_auc_score(column, probabilities[:, index]):.2f})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.legend(fontsize=6, frameon=False, loc="lower right")
    axis.set_title(title)
    return figure


def predictions_figure(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                       class_names: Sequence[str], *, title: str = "Test images and predicted probabilities"):
    """Each image beside a bar chart of its 14 probabilities; true labels in bold green."""
    count = len(images)
    figure, axes = plt.subplots(count, 2, figsize=(7.5, 2.4 * count), gridspec_kw={"width_ratios": [1, 1.6]},
                                squeeze=False)
    positions = np.arange(len(class_names))
    for row in range(count):
        axes[row, 0].imshow(images[row], cmap="gray")
        axes[row, 0].axis("off")
        colours = ["#2ca02c" if labels[row, index] else "#999999" for index in positions]
        axes[row, 1].barh(positions, probabilities[row], color=colours)
        axes[row, 1].set_xlim(0, 1)
        axes[row, 1].set_yticks(positions, class_names, fontsize=6)
        for tick, positive in zip(axes[row, 1].get_yticklabels(), labels[row], strict=True):
            tick.set_fontweight("bold" if positive else "normal")
        axes[row, 1].invert_yaxis()
    axes[-1, 1].set_xlabel("predicted probability (green: labelled positive)")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------- explainers (notebooks 03-06)

def explanation_overlays_figure(explanation, heatmaps: np.ndarray, instances, *, method: str,
                                variant: str = "", columns: int = 6, title: str = ""):
    """Heatmaps of one method over their radiographs, expert mask outlined in blue.

    ``method`` is a key or name of the registry, which says whether its maps are signed;
    ``variant`` is added to its name in the title (e.g. LRP's rule). ``instances`` is
    :func:`shamsul_utils.study.showcase`'s list ``[(row, class, kind)]``; each panel is captioned
    with the class, the kind of instance and the model's probability.
    """
    from .labels import CLASSES, LOCALIZED_CLASSES

    record = registry_method(method)
    name = f"{record.name} ({variant})" if variant else record.name
    figure, axes = image_grid(len(instances), columns=columns, size=2.1,
                              title=title or f"{name}: heatmaps of chosen instances (blue: expert mask)")
    for axis, (row, class_name, kind) in zip(axes, instances, strict=True):
        index = CLASSES.index(class_name)
        mask = (explanation.masks[row, LOCALIZED_CLASSES.index(class_name)] if class_name in LOCALIZED_CLASSES
                else None)
        gray = explanation.gray[row]
        if mask is not None and mask.shape != gray.shape:
            from .datasets import resize_nearest

            mask = resize_nearest(mask, gray.shape)
        overlay_heatmap(axis, gray, heatmaps[row, index], mask=mask, signed=record.signed,
                        title=f"{class_name}\n{kind}, p={explanation.probabilities[row, index]:.2f}")
    return figure


def rules_comparison_figure(explanation, maps_by_rule: dict, instances, *, title: str = ""):
    """One row per LRP rule, one column per instance: how the rule changes the same explanation."""
    from .labels import CLASSES

    rules = list(maps_by_rule)
    figure, axes = plt.subplots(len(rules), len(instances), figsize=(2.1 * len(instances), 2.2 * len(rules)),
                                squeeze=False)
    for row_index, rule in enumerate(rules):
        for column, (row, name, kind) in enumerate(instances):
            overlay_heatmap(axes[row_index, column], explanation.gray[row],
                            maps_by_rule[rule][row, CLASSES.index(name)], signed=True,
                            title=f"{name}, {kind}" if row_index == 0 else "")
        axes[row_index, 0].set_ylabel(rule, fontsize=9)
    figure.suptitle(title or "LRP rules on the same instances (red: evidence for the class, blue: against)")
    figure.tight_layout()
    return figure


# ------------------------------------------------------------------------- evaluation (notebook 07)

def iou_boxplot_figure(pairs, method: str, *, title: str = ""):
    """The paper's per-class IoU box plot for one method: median solid, mean dashed.

    ``pairs`` is :func:`shamsul_utils.evaluation.per_pair_table`; as in CheXlocalize's default,
    only image-class pairs where both the expert mask and the segmentation are non-empty count.
    """
    from .labels import LOCALIZED_CLASSES

    chosen = pairs[(pairs["method"] == method) & pairs["segmented"]]
    data = [chosen.loc[chosen["class"] == name, "iou"].to_numpy() for name in LOCALIZED_CLASSES]
    figure, axis = plt.subplots(figsize=(8, 3.6))
    axis.boxplot(data, showmeans=True, meanline=True, widths=0.6,
                 medianprops={"color": "black", "linestyle": "-"},
                 meanprops={"color": METHOD_COLORS.get(method, "C0"), "linestyle": "--", "linewidth": 1.5},
                 flierprops={"markersize": 3})
    axis.set_xticks(np.arange(1, len(LOCALIZED_CLASSES) + 1),
                    [f"{name}\n(n={len(values)})" for name, values in zip(LOCALIZED_CLASSES, data, strict=True)],
                    rotation=35, ha="right", fontsize=7)
    axis.set_ylim(0, 1)
    axis.set_ylabel("IoU")
    axis.set_title(title or f"{method}: IoU per class (median solid, mean dashed; true-positive pairs)")
    figure.tight_layout()
    return figure


def methods_comparison_figure(summary, *, title: str = "Localisation per class and method (95 % bootstrap CI)"):
    """Full-set mIoU and hit rate per class, the four methods side by side; chance hit rate marked."""
    from .labels import LOCALIZED_CLASSES

    methods = list(dict.fromkeys(summary["method"]))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    positions = np.arange(len(LOCALIZED_CLASSES))
    offsets = np.linspace(-0.27, 0.27, len(methods))
    for axis, metric, label in ((axes[0], "miou_all", "mIoU (full set)"), (axes[1], "hit_rate", "hit rate")):
        for offset, method in zip(offsets, methods, strict=True):
            rows = summary[summary["method"] == method].set_index("class").loc[list(LOCALIZED_CLASSES)]
            estimate = rows[metric].to_numpy()
            errors = np.vstack([estimate - rows[f"{metric}_low"], rows[f"{metric}_high"] - estimate])
            axis.errorbar(estimate, positions + offset, xerr=np.nan_to_num(errors), fmt="o", markersize=4,
                          capsize=1.5, color=METHOD_COLORS.get(method), label=method)
        axis.set_xlabel(label)
        axis.set_xlim(0, 1)
        axis.grid(axis="x", alpha=0.3)
    chance = summary.drop_duplicates("class").set_index("class").loc[list(LOCALIZED_CLASSES), "chance_hit_rate"]
    axes[1].scatter(chance, positions, marker="|", s=120, color="grey", label="chance (mask area)")
    axes[0].set_yticks(positions, LOCALIZED_CLASSES, fontsize=8)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=7, frameon=False, loc="lower right")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def ranking_figure(ranking, *, title: str = "Paired differences between methods (95 % bootstrap CI)"):
    """Forest plot of the paired bootstrap differences (method a minus method b)."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 0.35 * len(ranking) / 2 + 1.6), sharey=True)
    for axis, metric, label in ((axes[0], "miou_all", "difference in mIoU (full set)"),
                                (axes[1], "hit_rate", "difference in hit rate")):
        rows = ranking[ranking["metric"] == metric].reset_index(drop=True)
        positions = np.arange(len(rows))
        estimate = rows["difference"].to_numpy()
        errors = np.vstack([estimate - rows["low"], rows["high"] - estimate])
        colours = ["black" if clear else "grey" for clear in rows["clear"]]
        for position, value, error, colour in zip(positions, estimate, errors.T, colours, strict=True):
            axis.errorbar(value, position, xerr=error[:, None], fmt="o", color=colour, capsize=2)
        axis.axvline(0, color="grey", linestyle=":")
        axis.set_xlabel(label)
        axis.set_yticks(positions, [f"{a} - {b}" for a, b in zip(rows["method_a"], rows["method_b"], strict=True)],
                        fontsize=8)
    axes[0].invert_yaxis()
    figure.suptitle(title + "; black: interval excludes 0")
    figure.tight_layout()
    return figure


def seeds_figure(table, *, title: str = "Across training seeds: each model (dots), mean and seed x image 95 % interval"):
    """Per method: each seed's overall value (dots) and the mean with its two-level interval, for the
    full-set mIoU, the hit rate and the tie-aware hit rate (``seeds.across_seeds_table``)."""
    overall = table[table["class"] == "all classes"]
    seed_columns = [column for column in overall if column.startswith("seed ")]
    metrics = (("miou_all", "mIoU (full set)"), ("hit_rate", "hit rate (first maximum)"),
               ("hit_rate_ties", "tie-aware hit rate"))
    figure, axes = plt.subplots(1, len(metrics), figsize=(11, 3.2), sharey=True)
    for axis, (metric, label) in zip(axes, metrics, strict=True):
        rows = overall[overall["metric"] == metric].reset_index(drop=True)
        for position, row in rows.iterrows():
            colour = METHOD_COLORS.get(row["method"], "black")
            axis.errorbar(row["mean"], position, xerr=[[row["mean"] - row["low"]], [row["high"] - row["mean"]]],
                          fmt="s", color=colour, capsize=3)
            values = row[seed_columns].to_numpy(float)
            axis.plot(values, np.full(len(values), position + 0.22), "o", color=colour, alpha=0.6, markersize=4)
        axis.set_yticks(np.arange(len(rows)), rows["method"])
        axis.set_xlabel(label)
        axis.set_xlim(left=0)
    axes[0].invert_yaxis()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def label_count_figure(by_count, *, title: str = "Single- vs multi-label images"):
    """Mean IoU (full set) and hit rate by the image's number of positive findings, per method."""
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for axis, metric, label in ((axes[0], "mean_iou", "mean IoU (full set)"), (axes[1], "hit_rate", "hit rate")):
        for method, rows in by_count.groupby("method", sort=False):
            axis.plot(rows["findings"], rows[metric], "o-", color=METHOD_COLORS.get(method), label=method)
        axis.set_xlabel("positive findings in the image")
        axis.set_ylabel(label)
        axis.set_ylim(0, 1)
    axes[0].legend(fontsize=7, frameon=False)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def faithfulness_figure(table, *, title: str = "Faithfulness: deletion (lower is better) and insertion (higher)"):
    """Box plots of deletion and insertion AUC per method, with the random-order baseline."""
    methods = list(dict.fromkeys(table["method"]))
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for axis, column in ((axes[0], "deletion_auc"), (axes[1], "insertion_auc")):
        data = [table.loc[table["method"] == method, column].to_numpy() for method in methods]
        parts = axis.boxplot(data, widths=0.55, patch_artist=True, medianprops={"color": "black"})
        for patch, method in zip(parts["boxes"], methods, strict=True):
            patch.set_facecolor(METHOD_COLORS.get(method, "#cccccc"))
            patch.set_alpha(0.6)
        axis.set_xticks(np.arange(1, len(methods) + 1), methods, fontsize=8)
        axis.set_ylabel(column.replace("_", " ").replace("auc", "AUC"))
        axis.set_ylim(0, 1)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def sanity_figure(table, *, title: str = "Model-parameter randomisation test (Adebayo et al. 2018)"):
    """Spearman correlation between maps of the trained and the randomised model, per method."""
    methods = list(dict.fromkeys(table["method"]))
    figure, axis = plt.subplots(figsize=(5.5, 3.2))
    data = [table.loc[table["method"] == method, "spearman"].dropna().to_numpy() for method in methods]
    parts = axis.boxplot(data, widths=0.55, patch_artist=True, medianprops={"color": "black"})
    for patch, method in zip(parts["boxes"], methods, strict=True):
        patch.set_facecolor(METHOD_COLORS.get(method, "#cccccc"))
        patch.set_alpha(0.6)
    axis.set_xticks(np.arange(1, len(methods) + 1), methods)
    axis.axhline(0, color="grey", linestyle=":")
    axis.set_ylim(-1, 1)
    axis.set_ylabel("Spearman rank correlation (|map|)")
    axis.set_title(title + "\nnear 1: the map ignores the model", fontsize=9)
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------- medical significance (notebook 08)

def _display_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int)
    columns = (np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int)
    return mask[rows][:, columns]


def significance_figure(explanation, scores: dict, heatmaps: dict, instances: dict, class_name: str, *,
                        title: str = ""):
    """Rows: methods; columns: the instances given per method (notebook 08: images drawn by a stated rule).

    Expert mask outlined in blue, the method's segmentation in red; IoU and probability in the caption.
    """
    from .labels import CLASSES, LOCALIZED_CLASSES

    column = LOCALIZED_CLASSES.index(class_name)
    methods = list(instances)
    width = max((len(items) for items in instances.values()), default=1)
    figure, axes = plt.subplots(len(methods), width, figsize=(2.5 * width, 2.6 * len(methods)), squeeze=False)
    for row_index, method in enumerate(methods):
        for column_index in range(width):
            axis = axes[row_index, column_index]
            if column_index >= len(instances[method]):
                axis.axis("off")
                continue
            row, kind = instances[method][column_index]
            gray = explanation.gray[row]
            score = scores[method]
            overlay_heatmap(axis, gray, mask=_display_mask(explanation.masks[row, column], gray.shape),
                            prediction=_display_mask(score.segmentation(row, column), gray.shape),
                            title=f"{kind}\nIoU {np.nan_to_num(score.iou[row, column]):.2f}, "
                                  f"p={explanation.probabilities[row, CLASSES.index(class_name)]:.2f}")
        axes[row_index, 0].set_ylabel(method, fontsize=10)
    figure.suptitle(title or f"{class_name}: expert mask (blue) and segmentation (red)")
    figure.tight_layout()
    return figure


def methods_grid_figure(explanation, scores: dict, heatmaps: dict, row: int, class_name: str, *, title: str = ""):
    """One image: the expert mask, then each method's heatmap with its segmentation (red)."""
    from .labels import CLASSES, LOCALIZED_CLASSES

    column = LOCALIZED_CLASSES.index(class_name)
    class_index = CLASSES.index(class_name)
    gray = explanation.gray[row]
    mask = _display_mask(explanation.masks[row, column], gray.shape)
    figure, axes = plt.subplots(1, len(scores) + 1, figsize=(2.5 * (len(scores) + 1), 2.9))
    findings = ", ".join(name for name, value in zip(CLASSES[1:], explanation.labels[row, 1:], strict=True) if value)
    overlay_heatmap(axes[0], gray, mask=mask, title="expert mask\n" + textwrap.fill(findings, 30))
    for axis, (method, score) in zip(axes[1:], scores.items(), strict=True):
        signed = registry_method(method).signed
        overlay_heatmap(axis, gray, heatmaps[method][row, class_index], mask=mask, signed=signed,
                        prediction=_display_mask(score.segmentation(row, column), gray.shape),
                        title=f"{method}\nIoU {np.nan_to_num(score.iou[row, column]):.2f}")
    figure.suptitle(title or f"{class_name}, p={explanation.probabilities[row, class_index]:.2f}: "
                             "all methods on one image (blue: expert, red: segmentation)")
    figure.tight_layout()
    return figure


# ------------------------------------------------------------------ the shortcut experiment (notebook 10)

# Regions of an image in the shortcut experiment (disjoint, covering it), in the tables' order.
SHORTCUT_REGION_COLOURS = {"confounder": "#e6b800", "lesion": "#1a66ff", "overlap": "#2ca25f", "rest": "#999999"}



def shortcut_auroc_figure(aurocs, predictions, finding: str, *, title: str = ""):
    """AUROC per model on the confounded and clean tests (95 % CI), and each patient's probability in both."""

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1, 1.2]})
    models = list(dict.fromkeys(aurocs.loc[aurocs["test"] != "drop", "model"]))
    colours = {"confounded": SHORTCUT_REGION_COLOURS["confounder"], "clean": "#555555"}
    for offset, test in ((-0.12, "confounded"), (0.12, "clean")):
        part = aurocs[aurocs["test"] == test].set_index("model").loc[models]
        x = np.arange(len(models)) + offset
        left.errorbar(x, part["auroc"], yerr=[part["auroc"] - part["low"], part["high"] - part["auroc"]], fmt="o",
                      color=colours[test], capsize=4, label=f"{test} test")
    left.set_xticks(np.arange(len(models)), models)
    left.axhline(0.5, color="grey", lw=0.8, ls=":")
    left.set_ylabel(f"{finding} AUROC (95 % CI)")
    left.set_ylim(min(0.45, float(aurocs.loc[aurocs["test"] != "drop", "low"].min()) - 0.05), 1.01)
    left.legend(loc="lower left", fontsize=8)
    left.set_title("same patients, with and without the drain", fontsize=9)
    shortcut = predictions[predictions["model"] == models[0]]
    wide = shortcut.pivot(index="row", columns="test", values="probability")
    info = shortcut[shortcut["test"] == "confounded"].set_index("row")
    for label, drain, marker, colour, text in ((1, True, "o", "#d62728", "positive, drain"),
                                               (1, False, "s", "#ff9896", "positive, no drain"),
                                               (0, True, "^", SHORTCUT_REGION_COLOURS["confounder"], "negative, drain"),
                                               (0, False, ".", "#bbbbbb", "negative, no drain")):
        rows = info.index[(info["label"] == label) & (info["drain"] == drain)]
        if len(rows):
            right.scatter(wide.loc[rows, "confounded"], wide.loc[rows, "clean"], marker=marker, s=18, color=colour,
                          label=f"{text} ({len(rows)})", alpha=0.85, zorder=3 if drain else 2)
    right.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    right.set_xlabel("probability, confounded image")
    right.set_ylabel("probability, same image without drain")
    right.set_title(f"{models[0]} model: {finding} probability per patient", fontsize=9)
    right.legend(fontsize=7, loc="upper left")
    figure.suptitle(title or f"Shortcut: {finding} AUROC with and without the drain")
    figure.tight_layout()
    return figure


def shortcut_shares_figure(summary, *, title: str = ""):
    """Per method (and model: ``summary["label"]``): share of positive attribution mass and enrichment
    (mass / area) per region, 95 % CIs."""
    import matplotlib.ticker

    methods = list(dict.fromkeys(summary["label"]))
    regions = [region for region in SHORTCUT_REGION_COLOURS if region != "rest"]
    figure, axes = plt.subplots(1, 2, figsize=(max(10, 2.2 * len(methods)), 3.8))
    width = 0.8 / len(regions)
    for axis, quantity, label in ((axes[0], "mass", "share of positive attribution mass"),
                                  (axes[1], "enrichment", "enrichment = mass share / area share")):
        for index, region in enumerate(regions):
            part = summary[summary["region"] == region].set_index("label").loc[methods]
            x = np.arange(len(methods)) + (index - (len(regions) - 1) / 2) * width
            axis.bar(x, part[quantity], width, color=SHORTCUT_REGION_COLOURS[region], label=region,
                     yerr=[np.clip(part[quantity] - part[f"{quantity}_low"], 0, None),
                           np.clip(part[f"{quantity}_high"] - part[quantity], 0, None)], capsize=3)
            if quantity == "mass":
                axis.scatter(x, part["area"], marker="D", s=14, color="white", edgecolors="black", zorder=3,
                             label="area share (a uniform map)" if index == 0 else None)
        axis.set_xticks(np.arange(len(methods)), [name.replace(", ", "\n") for name in methods])
        axis.set_ylabel(label)
        if quantity == "enrichment":
            axis.axhline(1.0, color="black", lw=0.8, ls=":")
            axis.set_yscale("symlog", linthresh=1.0)
            axis.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[0].legend(fontsize=8)
    n = int(summary["images"].iloc[0]) if len(summary) else 0
    figure.suptitle(title or f"Where the attribution mass falls, shortcut vs control model ({n} images, 95 % CI)")
    figure.tight_layout()
    return figure


def shortcut_examples_figure(explanation, heatmaps: dict[str, np.ndarray], confounder: np.ndarray,
                    lesion: np.ndarray, finding: str, *, images: int = 4, title: str = ""):
    """Rows: images; columns: the radiograph, then each method's map (lesion blue, drain yellow)."""
    from .datasets import resize_nearest
    from .labels import CLASSES

    count = min(images, len(explanation))
    methods = list(heatmaps)
    figure, axes = plt.subplots(count, len(methods) + 1, figsize=(2.3 * (len(methods) + 1), 2.4 * count),
                                squeeze=False)
    column = CLASSES.index(finding)
    yellow = np.array([1.0, 0.85, 0.0, 1.0])
    for row in range(count):
        gray = explanation.gray[row]
        drain = outline(resize_nearest(confounder[row], gray.shape))
        mask = resize_nearest(lesion[row], gray.shape)
        panels = [("radiograph", None, False)] + [(name, heatmaps[name][row], registry_method(name.split(",")[0]).signed)
                                                   for name in methods]
        for axis, (name, heatmap, signed) in zip(axes[row], panels, strict=True):
            caption = f"p={explanation.probabilities[row, column]:.2f}" if heatmap is None else name
            overlay_heatmap(axis, gray, heatmap, mask=mask, signed=signed, title=caption)
            overlay = np.zeros((*drain.shape, 4))
            overlay[drain] = yellow
            axis.imshow(overlay, extent=(-0.5, gray.shape[1] - 0.5, gray.shape[0] - 0.5, -0.5),
                        interpolation="nearest")
    figure.suptitle(title or f"{finding}: lesion (blue) and chest drain (yellow) under each method's map")
    figure.tight_layout()
    return figure


def geometry_figure(regression, features, pairs, *, interval: str = "bootstrap", title: str = ""):
    """Pathology geometry and localisation (CheXlocalize's Table 2, Saporta et al. 2022).

    Top row, one panel per feature: each method's regression coefficient (IoU: circles, hit:
    squares) with its 95 % interval, from :func:`shamsul_utils.geometry.geometry_regression`
    (one model's table; ``interval="bootstrap"`` the image bootstrap, ``"ols"`` CheXlocalize's
    t-interval). Bottom row, one panel per method: IoU against the expert mask's area (log
    scale) on the true-positive pairs (a non-empty segmentation), with the least-squares line.
    """
    from matplotlib.lines import Line2D

    if interval not in ("bootstrap", "ols"):
        raise ValueError(f"interval must be 'bootstrap' or 'ols', got {interval!r}")
    low, high = ("boot_low", "boot_high") if interval == "bootstrap" else ("low", "high")
    methods = list(dict.fromkeys(regression["method"]))
    feature_names = list(dict.fromkeys(regression["feature"]))
    outcomes = list(dict.fromkeys(regression["outcome"]))
    markers = dict(zip(outcomes, "osD^v", strict=False))
    columns = max(len(methods), len(feature_names))
    figure = plt.figure(figsize=(2.8 * columns, 6.4))
    grid = figure.add_gridspec(2, columns, height_ratios=[1.1, 1.0])
    offsets = np.linspace(-0.18, 0.18, len(outcomes)) if len(outcomes) > 1 else np.zeros(1)
    for column, name in enumerate(feature_names):
        axis = figure.add_subplot(grid[0, column])
        for position, method in enumerate(methods):
            for offset, outcome in zip(offsets, outcomes, strict=True):
                row = regression[(regression["method"] == method) & (regression["feature"] == name)
                                 & (regression["outcome"] == outcome)]
                if row.empty or not np.isfinite(row["coef"].iloc[0]):
                    continue
                estimate = row["coef"].iloc[0]
                error = np.nan_to_num([[estimate - row[low].iloc[0]], [row[high].iloc[0] - estimate]])
                axis.errorbar(estimate, position + offset, xerr=np.clip(error, 0, None), fmt=markers[outcome],
                              markersize=4, capsize=2, color=METHOD_COLORS.get(method, "black"))
        axis.axvline(0, color="grey", linestyle=":")
        axis.set_yticks(np.arange(len(methods)), methods if column == 0 else [""] * len(methods))
        axis.invert_yaxis()
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("coefficient")
        if column == 0:
            axis.legend([Line2D([], [], color="black", marker=markers[outcome], linestyle="") for outcome in outcomes],
                        outcomes, fontsize=7, frameon=False)
    top = 1.0
    merged = pairs.merge(features[["cxr_id", "class", "area"]], on=["cxr_id", "class"], how="inner")
    if "segmented" in merged:
        merged = merged[merged["segmented"].astype(bool)]
    if np.isfinite(merged["iou"]).any():
        top = float(np.clip(1.1 * np.nanmax(merged["iou"]), 0.05, 1.0))
    for column, method in enumerate(methods):
        axis = figure.add_subplot(grid[1, column])
        part = merged[(merged["method"] == method) & np.isfinite(merged["iou"]) & (merged["area"] > 0)]
        colour = METHOD_COLORS.get(method, "black")
        axis.scatter(100 * part["area"], part["iou"], s=10, color=colour, alpha=0.6)
        if len(part) > 2:
            slope, intercept = np.polyfit(part["area"], part["iou"], 1)
            grid_x = np.linspace(part["area"].min(), part["area"].max(), 50)
            axis.plot(100 * grid_x, intercept + slope * grid_x, color=colour, linewidth=1.2)
        axis.set_xscale("log")
        axis.set_xlabel("expert mask area (% of image)")
        axis.set_ylabel("IoU" if column == 0 else "")
        axis.set_ylim(0, top)
        axis.set_title(f"{method} (n={len(part)})", fontsize=9)
    kind = "image-bootstrap " if interval == "bootstrap" else "OLS t-"
    scaled = {"minmax": "min-max scaled", "zscore": "z-scored", "none": "unscaled"}
    scaling = f", features {scaled.get(regression['scaling'].iloc[0], '')}" if "scaling" in regression else ""
    figure.suptitle(title or f"Pathology geometry vs localisation: coefficients with 95 % {kind}intervals"
                             f"{scaling}; IoU vs area")
    figure.tight_layout()
    return figure
