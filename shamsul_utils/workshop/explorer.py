"""The explorer's state and callbacks (no widgets): :class:`Explorer` and the :class:`ExplorerView`
it returns for one image, class, method and threshold.

The callbacks are plain objects that take values and return data, so they are tested without a
browser. Heatmaps come from the run's cache (:class:`~shamsul_utils.store.HeatmapStore`), so
cached images are instant; an upload's Grad-CAM and LRP maps are computed at once, the
perturbation methods' when first viewed, with a progress bar over the perturbed samples.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import datasets, metrics, study
from ..config import Profile, load_profile
from ..errors import DataError
from ..explainers.registry import REGISTRY
from ..explainers.registry import method as registry_method
from ..labels import CLASSES, LOCALIZED_CLASSES
from ..models import model_device
from ..segmentation import heatmap_to_mask
from ..store import input_digest
from .uploads import Upload, UploadError, decode_upload

__all__ = ["Explorer", "ExplorerView", "Comparison", "missing_run_message", "predictions_table"]

_DISPLAY_SIDE = 512  # uploads are shown (and segmented) at most this large


@dataclass
class _Entry:
    key: str
    label: str
    image: torch.Tensor  # [3, S, S] normalised model input
    probabilities: np.ndarray  # [14]
    labels: np.ndarray | None  # [14] ground truth, None for uploads
    masks: datasets.ImageMasks | None  # expert masks (10 classes, decoded when read), None for uploads
    display: np.ndarray | None = None  # float [H, W] in [0, 1]; loaded lazily for the explanation set
    path: str | None = None
    warning: str | None = None  # an upload unlike the training images (familiarity.LayoutReference)


@dataclass
class ExplorerView:
    """One image, class and method at one threshold: arrays, scores and a figure of them.

    ``iou`` and ``hit`` are None where there is no expert mask (an upload, a class CheXlocalize
    does not localise, or a class absent from the image); ``iou`` is the full-set variant (an empty
    segmentation scores 0).
    """

    key: str
    title: str
    class_name: str
    method: str
    threshold: float | str
    image: np.ndarray  # float [H, W] in [0, 1]
    heatmap: np.ndarray  # float32 [S, S], the method's raw map of the class
    segmentation: np.ndarray  # bool [H, W]
    ground_truth: np.ndarray | None  # bool [H, W]
    iou: float | None
    hit: bool | None
    probabilities: pd.DataFrame  # class, probability, label
    otsu: float | None = None  # Otsu's threshold on the min-max normalised map (when threshold is "otsu")
    warning: str | None = None  # the image is unlike the training images (an upload)

    @property
    def probability(self) -> float:
        return float(self.probabilities.set_index("class").loc[self.class_name, "probability"])

    def summary(self) -> str:
        """One line: method, class, probability, threshold, IoU and hit."""
        threshold = _describe_threshold(self.threshold, self.otsu)
        line = f"{self.method} for {self.class_name} (p = {self.probability:.2f}), {threshold}: {self.scores()}"
        return line if self.warning is None else f"{line}. Note: {self.warning}"

    def scores(self) -> str:
        """IoU and hit, or why there are none."""
        if self.iou is None:
            return "no expert mask" if self.ground_truth is None else "class absent: no expert mask to score"
        return f"IoU {self.iou:.2f}, hit {'yes' if self.hit else 'no'}"

    def figure(self):
        """Image (with the expert mask when there is one), heatmap, and segmentation against the expert
        mask: three panels of about 320 px at the PNG's 100 dpi, which fit beside JupyterLab's file
        browser at 1280 x 720 (the probabilities are a table under the picture, :func:`predictions_table`)."""
        import textwrap

        import matplotlib.pyplot as plt

        from .. import plots

        signed = registry_method(self.method).signed
        figure, axes = plt.subplots(1, 3, figsize=(9.6, 4.0))
        truth = self.ground_truth if self.ground_truth is not None and self.ground_truth.any() else None
        first = "expert mask" if truth is not None else (
            "no expert mask (an upload)" if self.ground_truth is None else "class absent: no expert mask")
        if self.warning is not None:
            first += "\nUNLIKE THE TRAINING IMAGES"
        plots.explorer_panel(axes[0], self.image, mask=truth, title=textwrap.fill(self.title, 40) + f"\n{first}")
        plots.explorer_panel(axes[1], self.image, self.heatmap, mask=truth, signed=signed,
                             title=f"{self.method}: {self.class_name}\np = {self.probability:.2f}")
        plots.explorer_panel(axes[2], self.image, mask=truth, segmentation=self.segmentation,
                             title=f"segmentation, {_describe_threshold(self.threshold, self.otsu)}\n{self.scores()}")
        figure.tight_layout(w_pad=1.0, rect=(0, 0.07, 1, 1))
        plots.explorer_legend(figure, signed=signed)
        return figure

    def png(self) -> bytes:
        """The figure as PNG bytes (the figure is closed)."""

        return _png(self.figure())


def _png(figure) -> bytes:
    """A figure as PNG bytes at 100 dpi (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _describe_threshold(threshold: float | str, otsu: float | None) -> str:
    if threshold != "otsu":
        return f"threshold {threshold:.2f}"
    return "Otsu" if otsu is None else f"Otsu threshold {otsu:.2f}"


def _otsu_value(heatmap: np.ndarray, size: tuple[int, int], signed: str) -> float:
    """Otsu's threshold of a map as CheXlocalize applies it: on ``uint8(255 * normalised map)``,
    foreground above it; returned on the [0, 1] scale of the normalised map."""
    from ..segmentation import normalise_heatmaps, otsu_thresholds

    normalised = normalise_heatmaps(heatmap, output_size=size, signed=signed)
    return float(otsu_thresholds((255 * normalised).astype(np.uint8))) / 255.0


@dataclass
class Comparison:
    """Every method side by side for one image, as SHAMSUL's demo showed it: per class the expert
    mask beside each method's map and segmentation, with IoU and hit in each cell.

    ``cells`` has one row per class and method (class, method, iou, hit, segmented pixels);
    ``predictions`` one row per class (probability, label, predicted at p >= 0.5, correct against
    the label where the image has labels); :attr:`iou_table` pivots ``cells``.
    """

    key: str
    title: str
    image: np.ndarray
    classes: list[str]
    methods: list[str]
    views: dict[tuple[str, str], ExplorerView]
    cells: pd.DataFrame
    predictions: pd.DataFrame

    @property
    def iou_table(self) -> pd.DataFrame:
        """IoU per class (rows) and method (columns); NaN where there is no expert mask to score."""
        return self.cells.pivot(index="class", columns="method", values="iou").loc[self.classes, self.methods]

    def summary(self) -> str:
        """One line: the image, how many classes and methods, the best method per scored class."""
        table = self.iou_table.dropna(how="all")
        best = "; ".join(f"{name}: {row.idxmax()} ({row.max():.2f})" for name, row in table.iterrows()
                         if row.notna().any())
        return (f"{self.title}: {len(self.classes)} class(es) x {len(self.methods)} methods"
                + (f"; best IoU per class - {best}" if best else "; no expert mask to score"))

    def figure(self):
        """Rows: classes; columns: the expert mask, then each method's map with its segmentation."""
        import matplotlib.pyplot as plt

        from .. import plots

        columns = 1 + len(self.methods)
        figure, axes = plt.subplots(len(self.classes), columns, figsize=(3.2 * columns, 3.45 * len(self.classes)),
                                    squeeze=False)
        for row, class_name in enumerate(self.classes):
            first = self.views[(class_name, self.methods[0])]
            truth = first.ground_truth if first.ground_truth is not None and first.ground_truth.any() else None
            label = "expert mask" if truth is not None else "no expert mask"
            plots.explorer_panel(axes[row, 0], self.image, mask=truth,
                                 title=f"{class_name}\np = {first.probability:.2f}, {label}")
            for column, method in enumerate(self.methods, start=1):
                view = self.views[(class_name, method)]
                scores = "no mask to score" if view.iou is None else \
                    f"IoU {view.iou:.2f}, hit {'yes' if view.hit else 'no'}"
                plots.explorer_panel(axes[row, column], self.image, view.heatmap, mask=truth,
                                     segmentation=view.segmentation, signed=registry_method(method).signed,
                                     title=f"{method}\n{scores}")
        figure.tight_layout(rect=(0, 0.03 if len(self.classes) > 1 else 0.07, 1, 1))
        plots.explorer_legend(figure)
        return figure

    def png(self) -> bytes:
        """The figure as PNG bytes (the figure is closed)."""
        return _png(self.figure())


def missing_run_message(profile: Profile, error: Exception) -> str:
    """One line for an explorer without a run: what is missing and what to do."""
    reason = str(error).splitlines()[0] if str(error) else error.__class__.__name__
    return (f"profile {profile.name!r} has no usable trained run ({reason}); run `make reproduce` "
            f"(PROFILE={profile.name}) first, or set `profile` in the first cell to a profile you have run")


def _content_digest(gray: np.ndarray) -> str:
    """SHA-256 of a uint8 gray image's size and pixels (not of its file: a PNG re-encoded is the same image)."""
    import hashlib

    return hashlib.sha256(np.asarray(gray.shape, dtype=np.int64).tobytes() + np.ascontiguousarray(gray).tobytes()
                          ).hexdigest()


def predictions_table(view: ExplorerView) -> pd.DataFrame:
    """The 14 probabilities of a view's image: class, probability, label (NaN for an upload),
    predicted (positive at p >= 0.5), correct (against the label; None without labels)."""
    table = view.probabilities.copy()
    table["predicted"] = table["probability"] >= 0.5
    table["correct"] = np.where(table["label"].isna(), None, table["predicted"] == (table["label"] == 1))
    return table


def _method_module(method: str) -> tuple[str, str]:
    """(display name, key) from either (:func:`shamsul_utils.explainers.registry.method`)."""
    record = registry_method(method)
    return record.name, record.key


@contextmanager
def _sample_progress(model: torch.nn.Module, total: int, description: str, enabled: bool) -> Iterator[None]:
    """A tqdm bar advanced by every batch the model sees (the perturbed samples of LIME/SHAP)."""
    if not enabled:
        yield
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=description, unit="sample")

    def advance(module, inputs, output):
        bar.update(min(int(inputs[0].shape[0]), bar.total - bar.n))

    handle = model.register_forward_hook(advance)
    try:
        yield
        bar.update(bar.total - bar.n)
    finally:
        handle.remove()
        bar.close()


class Explorer:
    """The explorer's state and callbacks for one profile (no widgets here).

    Parameters
    ----------
    profile : str or Profile
        Its trained model (notebook 02) and explanation set are loaded; heatmaps are read from the
        run's cache (notebooks 03-06) and computed, then cached, where missing.
    """

    def __init__(self, profile: str | Profile):
        from ..models import load_trained_model
        from ..store import model_fingerprint

        self.config = profile if isinstance(profile, Profile) else load_profile(profile)
        try:
            self.model, self.checkpoint = load_trained_model(self.config)
        except DataError as error:
            raise DataError(missing_run_message(self.config, error)) from None
        self.explanation = study.explanation_set(self.config)
        self._fingerprint = model_fingerprint(self.model)
        self._entries: dict[str, _Entry] = {}
        self._maps: dict[tuple[str, str], np.ndarray] = {}
        self._uploads = 0
        self._digests: dict[str, str] | None = None  # content digest -> cxr_id of the explanation set
        self._familiar = None  # familiarity.LayoutReference, fitted at the first upload
        self._reference_paths = {split: datasets.read_split(self.config, split).table["image_path"].tolist()
                                 for split in ("train", "valid")}
        findings = self.explanation.labels
        for row, cxr_id in enumerate(self.explanation.cxr_ids):
            positives = [name for name, value in zip(CLASSES[1:], findings[row, 1:], strict=True) if value == 1]
            self._entries[cxr_id] = _Entry(
                key=cxr_id, label=f"{cxr_id.split('_')[0]}: {', '.join(positives) or 'No Finding'}",
                image=self.explanation.images[row], probabilities=self.explanation.probabilities[row],
                labels=findings[row], masks=self.explanation.masks.view(row),
                path=str(self.explanation.table["image_path"].iloc[row]))

    # -- choices
    def images(self) -> list[tuple[str, str]]:
        """``(label, key)`` of every image, the explanation set first, then the uploads."""
        return [(entry.label, key) for key, entry in self._entries.items()]

    @property
    def default_key(self) -> str:
        return next(iter(self._entries))

    def default_class(self, key: str) -> str:
        """The most probable labelled-positive localised class of an image (else the most probable class)."""
        entry = self._entry(key)
        scores = entry.probabilities.copy()
        if entry.labels is not None and any(entry.labels[CLASSES.index(name)] == 1 for name in LOCALIZED_CLASSES):
            scores = np.where([name in LOCALIZED_CLASSES and entry.labels[i] == 1 for i, name in enumerate(CLASSES)],
                              scores, -1.0)
        return CLASSES[int(np.argmax(scores))]

    def is_cached(self, key: str, method: str) -> bool:
        """Whether a view of this image and method is instant (maps in memory or in the run's cache)."""
        _, module = _method_module(method)
        return (key, module) in self._maps or (key in self.explanation.cxr_ids and self._store(module).has(key))

    # -- callbacks
    def upload(self, data: bytes, filename: str = "upload") -> Upload:
        """Add an uploaded radiograph; never raises for a bad file (the message says what is wrong)."""
        try:
            gray, note = decode_upload(data, filename)
        except UploadError as error:
            return Upload(None, str(error))
        known = self._explanation_digests().get(_content_digest(gray))
        if known is not None:  # the same pixels as an image of the set: its masks and labels apply
            return Upload(known, f"{note}; the same image as {known} of the explanation set, shown with its "
                                 "expert masks and labels")
        from PIL import Image

        size = self.config.model.input_size
        picture = Image.fromarray(gray)
        model_input = np.asarray(picture.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))
        scale = min(1.0, _DISPLAY_SIDE / max(picture.size))
        if scale < 1.0:
            picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                     Image.Resampling.BILINEAR)
        warning = self.familiarity().note(model_input)
        image = datasets.normalize(model_input)
        device = model_device(self.model)
        with torch.inference_mode():
            probabilities = torch.sigmoid(self.model(image[None].to(device))).cpu().numpy()[0]
        self._uploads += 1
        key = f"upload-{self._uploads}"
        self._entries[key] = _Entry(key=key, label=f"upload {self._uploads}: {Path(filename or 'upload').name}",
                                    image=image, probabilities=probabilities.astype(np.float32), labels=None,
                                    masks=None, display=np.asarray(picture, dtype=np.float32) / 255.0,
                                    warning=warning)
        for method in (key for key, record in REGISTRY.items() if record.cheap):  # a few model passes each
            self.heatmaps(key, method)
        return Upload(key, note if warning is None else f"{note}. Note: {warning}")

    def familiarity(self):
        """What uploads are compared with (:class:`~.familiarity.LayoutReference`): fitted once, on the
        first 1000 training images, its limit from the validation images."""
        if self._familiar is None:
            from .familiarity import LayoutReference

            size = self.config.model.input_size
            train = datasets.load_images(self._reference_paths["train"][:1000], size)
            valid = datasets.load_images(self._reference_paths["valid"], size)
            self._familiar = LayoutReference.fit(train, valid)
        return self._familiar

    def heatmaps(self, key: str, method: str, *, progress: bool = False) -> np.ndarray:
        """float32 ``[14, S, S]`` maps of one image: from memory, the run's cache, or computed now."""
        entry = self._entry(key)
        name, module = _method_module(method)
        if (key, module) in self._maps:
            return self._maps[(key, module)]
        store = self._store(module) if entry.masks is not None else None
        digest = input_digest(entry.image)
        if store is not None and store.has(key, digest):
            maps = store.load(key, digest)
        else:
            record = registry_method(module)
            _, options = record.options(self.config)
            device = model_device(self.model)
            samples = record.samples(self.config)
            with _sample_progress(self.model, samples, f"{name} ({samples} samples)", progress and not record.cheap):
                maps = _explain(module, self.model, entry.image[None].to(device),
                                batch_size=self.config.explain.batch_size, **options)[0]
            if store is not None:
                store.save(key, maps, digest=digest)
        self._maps[(key, module)] = maps
        return maps

    def view(self, key: str, class_name: str, method: str, threshold: float | str = "otsu", *,
             progress: bool = False) -> ExplorerView:
        """Everything the explorer shows for one choice of image, class, method and threshold.

        ``threshold`` is ``"otsu"`` (CheXlocalize's default) or a fixed value in [0, 1] on the
        min-max normalised map (:func:`~shamsul_utils.segmentation.heatmap_to_mask`); negative
        relevance is handled as the profile's ``evaluation.signed`` says.
        """
        entry = self._entry(key)
        name, module = _method_module(method)
        if class_name not in CLASSES:
            raise ValueError(f"unknown class {class_name!r}; expected one of the 14 CheXpert classes")
        if not (threshold == "otsu" or (isinstance(threshold, (int, float)) and 0 <= threshold <= 1)):
            raise ValueError(f"threshold must be 'otsu' or a number in [0, 1], got {threshold!r}")
        heatmap = self.heatmaps(key, module, progress=progress)[CLASSES.index(class_name)]
        image = self._display(entry)
        segmentation = heatmap_to_mask(heatmap, output_size=image.shape, signed=self.config.evaluation.signed,
                                       threshold=threshold if threshold == "otsu" else float(threshold))
        otsu = _otsu_value(heatmap, image.shape, self.config.evaluation.signed) if threshold == "otsu" else None
        truth = iou = hit = None
        if entry.masks is not None and class_name in LOCALIZED_CLASSES:
            truth = entry.masks[LOCALIZED_CLASSES.index(class_name)]
            if truth.any():
                iou = float(np.nan_to_num(metrics.iou(segmentation, truth)))
                hit = bool(metrics.pointing_game(heatmap[None, None], truth[None, None])[0, 0] == 1)
        probabilities = pd.DataFrame({"class": CLASSES, "probability": entry.probabilities.astype(float),
                                      "label": entry.labels if entry.labels is not None else np.nan})
        return ExplorerView(key=key, title=entry.label, class_name=class_name, method=name, threshold=threshold,
                            image=image, heatmap=heatmap, segmentation=segmentation, ground_truth=truth, iou=iou,
                            hit=hit, probabilities=probabilities, otsu=otsu, warning=entry.warning)

    def comparison(self, key: str, class_name: str | None = None, threshold: float | str = "otsu", *,
                   methods: list[str] | None = None, progress: bool = False) -> Comparison:
        """Every method side by side for one image (:class:`Comparison`).

        Rows are the localised classes labelled positive in the image (those with an expert mask),
        then ``class_name`` if it is not among them (default: :meth:`default_class`). ``methods``
        defaults to every registered method (display names); an upload's perturbation maps are
        computed when first needed, as in :meth:`view`.
        """
        entry = self._entry(key)
        chosen = class_name or self.default_class(key)
        classes = [name for name in LOCALIZED_CLASSES
                   if entry.labels is not None and entry.labels[CLASSES.index(name)] == 1]
        classes += [] if chosen in classes else [chosen]
        names = methods or [record.name for record in REGISTRY.values()]
        names = [_method_module(name)[0] for name in names]
        views = {(name, method): self.view(key, name, method, threshold, progress=progress)
                 for name in classes for method in names}
        cells = pd.DataFrame([{"class": name, "method": method, "iou": view.iou, "hit": view.hit,
                               "segmented_pixels": int(view.segmentation.sum())}
                              for (name, method), view in views.items()])
        cells["iou"] = cells["iou"].astype(float)
        first = views[(classes[0], names[0])]
        predictions = predictions_table(first)
        return Comparison(key=key, title=entry.label, image=first.image, classes=classes, methods=names,
                          views=views, cells=cells, predictions=predictions)

    # -- helpers
    def _explanation_digests(self) -> dict[str, str]:
        """Content digests of the explanation set's images (read once, at the first upload)."""
        if self._digests is None:
            self._digests = {_content_digest(datasets.load_image(entry.path)): key
                             for key, entry in self._entries.items() if entry.path is not None}
        return self._digests

    def _entry(self, key: str) -> _Entry:
        try:
            return self._entries[key]
        except KeyError:
            raise KeyError(f"unknown image {key!r}; choose one of Explorer.images()") from None

    def _store(self, module: str):
        return study.heatmap_store(self.config, module, self._fingerprint)

    def _display(self, entry: _Entry) -> np.ndarray:
        """The image at the expert masks' size (explanation set) or at most 512 px (uploads)."""
        if entry.display is None:
            height, width = entry.masks.shape[-2:]
            gray = datasets.load_image(entry.path)
            if gray.shape != (height, width):
                from PIL import Image

                gray = np.asarray(Image.fromarray(gray).resize((width, height), Image.Resampling.BILINEAR))
            entry.display = gray.astype(np.float32) / 255.0
        return entry.display


def _explain(module: str, model, images, **options) -> np.ndarray:
    from ..explainers import EXPLAINERS

    return EXPLAINERS[module](model, images, **options)
