"""The workshop kit: the explorer behind notebook 09, and participant copies of the exercises.

The explorer's callbacks are plain objects that take values and return data, so they are tested
without a browser; :class:`ExplorerApp` only builds the ipywidgets and wires them to them.

* :class:`Explorer` holds a profile's trained model and explanation set. :meth:`Explorer.view`
  returns an :class:`ExplorerView` (image, heatmap, segmentation at a threshold, expert mask,
  IoU, hit, the 14 probabilities, and a figure of them). Heatmaps come from the run's cache
  (:class:`~shamsul_utils.store.HeatmapStore`), so cached images are instant.
* :meth:`Explorer.upload` takes the bytes of a PNG or JPEG radiograph and returns an
  :class:`Upload`: the new image's key, or a one-line message saying why it was refused. Grad-CAM
  and LRP are computed at once; LIME and SHAP (hundreds of model calls) when first viewed, with
  a tqdm progress bar over the perturbed samples.
* ``python -m shamsul_utils.workshop [--output workshop]`` (``make workshop``) writes the
  participants' copies: the exercises without the cells tagged ``solution``, and the explorer.

Examples
--------
>>> decode_upload(b"not an image", "notes.png")
Traceback (most recent call last):
...
shamsul_utils.workshop.UploadError: notes.png: not a PNG or JPEG image (the file could not be decoded)
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from . import datasets, metrics, study
from .config import REPOSITORY_ROOT, Profile, load_profile
from .errors import DataError
from .explainers.registry import REGISTRY
from .explainers.registry import method as registry_method
from .labels import CLASSES, LOCALIZED_CLASSES
from .models import model_device
from .segmentation import heatmap_to_mask

__all__ = ["MAX_UPLOAD_BYTES", "MAX_UPLOAD_SIDE", "MIN_UPLOAD_SIDE", "UploadError", "decode_upload", "Upload",
           "ExplorerView", "Explorer", "ExplorerApp", "strip_solutions", "write_participant_copies", "main"]

MAX_UPLOAD_BYTES = 20 * 2**20  # 20 MB
MAX_UPLOAD_SIDE = 4096  # pixels, either side
MIN_UPLOAD_SIDE = 32
_DISPLAY_SIDE = 512  # uploads are shown (and segmented) at most this large
_FORMATS = ("PNG", "JPEG")
SOLUTION_TAG = "solution"


# ------------------------------------------------------------------------------------------ uploads

class UploadError(DataError):
    """An uploaded file that cannot be used; the message is one line naming the file."""


def decode_upload(data: bytes, filename: str = "upload") -> tuple[np.ndarray, str]:
    """Decode an uploaded PNG/JPEG into uint8 grayscale ``[H, W]``; returns it and a note on conversions.

    Any mode is converted: 1-bit and palette images to 8-bit gray; RGB(A) by luminance, with
    transparent pixels composited over black; 16-bit and 32-bit images (e.g. radiographs exported
    from DICOM) by linear scaling of their own value range to 0-255. JPEG EXIF orientation is
    applied.

    Raises
    ------
    UploadError
        Empty, larger than :data:`MAX_UPLOAD_BYTES`, not PNG/JPEG, truncated or corrupt, larger
        than :data:`MAX_UPLOAD_SIDE` or smaller than :data:`MIN_UPLOAD_SIDE` pixels on a side.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = Path(filename or "upload").name
    if not data:
        raise UploadError(f"{name}: the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: {len(data) / 2**20:.1f} MB is too large (at most {MAX_UPLOAD_BYTES // 2**20} MB)")
    try:
        image = Image.open(io.BytesIO(bytes(data)))
    except Image.DecompressionBombError:
        raise UploadError(f"{name}: the image is too large (at most {MAX_UPLOAD_SIDE} x {MAX_UPLOAD_SIDE} "
                          "pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UploadError(f"{name}: not a PNG or JPEG image (the file could not be decoded)") from None
    with image:
        if image.format not in _FORMATS:
            raise UploadError(f"{name}: {image.format} images are not accepted; upload a PNG or JPEG")
        width, height = image.size
        if max(width, height) > MAX_UPLOAD_SIDE:
            raise UploadError(f"{name}: {width} x {height} pixels is too large (at most {MAX_UPLOAD_SIDE} "
                              f"x {MAX_UPLOAD_SIDE}); downscale it first")
        if min(width, height) < MIN_UPLOAD_SIDE:
            raise UploadError(f"{name}: {width} x {height} pixels is too small (at least {MIN_UPLOAD_SIDE} "
                              "pixels a side)")
        try:
            image.load()
            oriented = ImageOps.exif_transpose(image)
            gray, note = _to_gray(oriented)
        except Image.DecompressionBombError:
            raise UploadError(f"{name}: the image is too large to decode safely") from None
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            reason = "truncated" if "truncated" in str(error).lower() else "corrupt"
            raise UploadError(f"{name}: the {image.format} file is {reason} ({str(error).splitlines()[0]})") from None
    return gray, f"{name}: {width} x {height} {image.format}, {note}"


def _to_gray(image) -> tuple[np.ndarray, str]:
    """uint8 ``[H, W]`` from a PIL image of any mode, and what was done to it."""
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F") or mode.startswith("I;"):
        values = np.asarray(image, dtype=np.float64)
        if values.ndim != 2:
            values = values[..., 0]
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low) * 255.0
        return np.rint(np.nan_to_num(scaled)).astype(np.uint8), f"{mode} scaled from [{low:g}, {high:g}] to 0-255"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(black, rgba).convert("L")), f"{mode} composited over black, to gray"
    if mode == "L":
        return np.asarray(image, dtype=np.uint8), "8-bit gray"
    return np.asarray(image.convert("L"), dtype=np.uint8), f"{mode} converted to 8-bit gray"


class Upload(NamedTuple):
    """What :meth:`Explorer.upload` answers: the new image's key (None when refused) and one line."""

    key: str | None
    message: str

    @property
    def ok(self) -> bool:
        return self.key is not None


# ------------------------------------------------------------------------------------------ explorer

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

    @property
    def probability(self) -> float:
        return float(self.probabilities.set_index("class").loc[self.class_name, "probability"])

    def summary(self) -> str:
        """One line: method, class, probability, threshold, IoU and hit."""
        threshold = "Otsu" if self.threshold == "otsu" else f"{self.threshold:.2f}"
        if self.iou is None:
            scores = "no expert mask" if self.ground_truth is None else "class absent: no expert mask to score"
        else:
            scores = f"IoU {self.iou:.2f}, hit {'yes' if self.hit else 'no'}"
        return (f"{self.method} for {self.class_name} (p = {self.probability:.2f}), threshold {threshold}: "
                f"{scores}")

    def figure(self):
        """Image with expert mask, heatmap, segmentation vs expert mask, and the 14 probabilities."""
        import textwrap

        import matplotlib.pyplot as plt

        from . import plots

        figure, axes = plt.subplots(1, 4, figsize=(11.5, 3.6), gridspec_kw={"width_ratios": [1, 1, 1, 1.1]})
        truth = self.ground_truth if self.ground_truth is not None and self.ground_truth.any() else None
        scores = self.summary().split(": ", 1)[1]
        threshold = "Otsu" if self.threshold == "otsu" else f"{self.threshold:.2f}"
        plots.overlay_heatmap(axes[0], self.image, mask=truth,
                              title=textwrap.fill(self.title, 36) + "\nexpert mask (blue)")
        plots.overlay_heatmap(axes[1], self.image, self.heatmap, signed=registry_method(self.method).signed,
                              title=f"{self.method}: {textwrap.shorten(self.class_name, 26)}\np = {self.probability:.2f}")
        plots.overlay_heatmap(axes[2], self.image, mask=truth, prediction=self.segmentation,
                              title=f"segmentation (red), {threshold}\n{scores}")
        table = self.probabilities.iloc[::-1]
        colours = ["#d95f02" if name == self.class_name else "#7570b3" if label == 1 else "#bbbbbb"
                   for name, label in zip(table["class"], table["label"].fillna(0), strict=True)]
        axes[3].barh(table["class"], table["probability"], color=colours)
        axes[3].set_xlim(0, 1)
        axes[3].tick_params(labelsize=7)
        axes[3].set_title("probabilities (orange: chosen class,\npurple: labelled positive)", fontsize=8)
        figure.tight_layout(w_pad=1.5)
        return figure

    def png(self) -> bytes:
        """The figure as PNG bytes (the figure is closed)."""
        import matplotlib.pyplot as plt

        figure = self.figure()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
        plt.close(figure)
        return buffer.getvalue()


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
        from .models import load_trained_model
        from .store import model_fingerprint

        self.config = profile if isinstance(profile, Profile) else load_profile(profile)
        self.model, self.checkpoint = load_trained_model(self.config)
        self.explanation = study.explanation_set(self.config)
        self._fingerprint = model_fingerprint(self.model)
        self._entries: dict[str, _Entry] = {}
        self._maps: dict[tuple[str, str], np.ndarray] = {}
        self._uploads = 0
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
        from PIL import Image

        size = self.config.model.input_size
        picture = Image.fromarray(gray)
        model_input = np.asarray(picture.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))
        scale = min(1.0, _DISPLAY_SIDE / max(picture.size))
        if scale < 1.0:
            picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                     Image.Resampling.BILINEAR)
        image = datasets.normalize(model_input)
        device = model_device(self.model)
        with torch.inference_mode():
            probabilities = torch.sigmoid(self.model(image[None].to(device))).cpu().numpy()[0]
        self._uploads += 1
        key = f"upload-{self._uploads}"
        self._entries[key] = _Entry(key=key, label=f"upload {self._uploads}: {Path(filename or 'upload').name}",
                                    image=image, probabilities=probabilities.astype(np.float32), labels=None,
                                    masks=None, display=np.asarray(picture, dtype=np.float32) / 255.0)
        for method in (key for key, record in REGISTRY.items() if record.cheap):  # a few model passes each
            self.heatmaps(key, method)
        return Upload(key, note)

    def heatmaps(self, key: str, method: str, *, progress: bool = False) -> np.ndarray:
        """float32 ``[14, S, S]`` maps of one image: from memory, the run's cache, or computed now."""
        entry = self._entry(key)
        name, module = _method_module(method)
        if (key, module) in self._maps:
            return self._maps[(key, module)]
        store = self._store(module) if entry.masks is not None else None
        if store is not None and store.has(key):
            maps = store.load(key)
        else:
            record = registry_method(module)
            _, options = record.options(self.config)
            device = model_device(self.model)
            samples = record.samples(self.config)
            with _sample_progress(self.model, samples, f"{name} ({samples} samples)", progress and not record.cheap):
                maps = _explain(module, self.model, entry.image[None].to(device),
                                batch_size=self.config.explain.batch_size, **options)[0]
            if store is not None:
                store.save(key, maps)
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
                            hit=hit, probabilities=probabilities)

    # -- helpers
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
    from .explainers import EXPLAINERS

    return EXPLAINERS[module](model, images, **options)


# ------------------------------------------------------------------------------------------ widgets

class ExplorerApp:
    """The explorer's ipywidgets, wired to an :class:`Explorer`; display ``app.widget``.

    Every callback catches what goes wrong and shows one line in ``status``; no traceback reaches
    the participant. The widgets can be driven from Python (tests set their values).
    """

    def __init__(self, explorer: Explorer, *, method: str | None = None):
        import ipywidgets as widgets

        self.explorer = explorer
        key = explorer.default_key
        layout = widgets.Layout(width="330px")
        self.image = widgets.Dropdown(options=explorer.images(), value=key, description="image", layout=layout)
        self.class_name = widgets.Dropdown(options=list(CLASSES), value=explorer.default_class(key),
                                           description="class", layout=layout)
        self.method = widgets.ToggleButtons(options=list(study.METHODS), value=method or next(iter(study.METHODS)),
                                            description="method",
                                            style={"button_width": "80px"})
        self.otsu = widgets.Checkbox(value=True, description="Otsu threshold (CheXlocalize)", indent=False)
        self.threshold = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="threshold",
                                             disabled=True, continuous_update=False)
        self.upload = widgets.FileUpload(accept=".png,.jpg,.jpeg,image/png,image/jpeg", multiple=False,
                                         description="upload PNG/JPEG")
        self.status = widgets.HTML()
        self.figure = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.progress = widgets.Output()
        self.widget = widgets.VBox([
            widgets.HBox([self.image, self.class_name, self.upload]),
            widgets.HBox([self.method, self.otsu, self.threshold]),
            self.status, self.progress, self.figure])
        for control in (self.image, self.class_name, self.method, self.threshold):
            control.observe(self._changed, names="value")
        self.otsu.observe(self._otsu_changed, names="value")
        self.upload.observe(self._uploaded, names="value")
        self._holding = False  # True while the app itself sets values (one refresh, not several)
        self.refresh()

    def _say(self, text: str, *, error: bool = False) -> None:
        import html

        colour = "#b00020" if error else "#1b5e20"
        self.status.value = f'<span style="color:{colour}">{html.escape(text)}</span>'

    @contextmanager
    def _hold(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def _changed(self, change) -> None:
        if self._holding:
            return
        if change["owner"] is self.image:
            with self._hold():
                self.class_name.value = self.explorer.default_class(change["new"])
        self.refresh()

    def _otsu_changed(self, change) -> None:
        self.threshold.disabled = bool(change["new"])
        self.refresh()

    def refresh(self) -> ExplorerView | None:
        """Recompute the view from the widgets' values; returns it (None after an error)."""
        threshold = "otsu" if self.otsu.value else float(self.threshold.value)
        try:
            slow = not self.explorer.is_cached(self.image.value, self.method.value)
            if slow:
                self._say(f"computing {self.method.value} for this image (progress below) ...")
            self.progress.clear_output()
            with self.progress:
                view = self.explorer.view(self.image.value, self.class_name.value, self.method.value, threshold,
                                          progress=slow)
            self.progress.clear_output()
            self.figure.value = view.png()
        except Exception as error:  # shown as one line in the widget, never as a traceback
            self._say(f"{error.__class__.__name__}: {str(error).splitlines()[0] if str(error) else ''}", error=True)
            return None
        self._say(view.summary())
        return view

    def _uploaded(self, change) -> None:
        files = change["new"]
        if not files:
            return
        item = files[-1]
        try:
            result = self.explorer.upload(bytes(item["content"]), item.get("name", "upload"))
        except Exception as error:  # an unexpected failure is still one line
            result = Upload(None, f"{item.get('name', 'upload')}: {error.__class__.__name__}: {error}")
        self.upload.value = ()  # so that the same file can be uploaded again
        if not result.ok:
            self._say(result.message, error=True)
            return
        with self._hold():
            self.image.options = self.explorer.images()
            self.image.value = result.key
            self.class_name.value = self.explorer.default_class(result.key)
        view = self.refresh()
        if view is not None:
            self._say(f"{result.message}. {view.summary()}")


# ------------------------------------------------------------------------------ participant copies

def strip_solutions(notebook):
    """A copy of a notebook without outputs, each cell tagged ``solution`` replaced by an answer stub.

    A code solution becomes a code cell ``# your answer here``; a markdown solution becomes
    ``*Your answer here.*``. Stubs are tagged ``answer``.
    """
    import copy

    import nbformat

    result = copy.deepcopy(notebook)
    cells = []
    for cell in result.cells:
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            if cell.cell_type == "code":
                stub = nbformat.v4.new_code_cell("# your answer here\n")
            else:
                stub = nbformat.v4.new_markdown_cell("*Your answer here.*")
            stub.metadata["tags"] = ["answer"]
            cells.append(stub)
            continue
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cells.append(cell)
    result.cells = cells
    result.metadata.pop("papermill", None)
    result.metadata.pop("widgets", None)
    return result


def write_participant_copies(output: str | Path) -> list[Path]:
    """Write the exercises (solutions removed) and the explorer to ``output``; returns the files."""
    import nbformat

    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    sources = REPOSITORY_ROOT / "notebooks"
    written = []
    for name in ("workshop_exercises.ipynb", "09_workshop_explorer.ipynb"):
        notebook = nbformat.read(sources / name, as_version=4)
        target = folder / name
        nbformat.write(strip_solutions(notebook), target)
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the participants' copies of the workshop notebooks "
                                                 "(solutions removed).")
    parser.add_argument("--output", default=str(REPOSITORY_ROOT / "workshop"),
                        help="folder to write to (default: workshop/, git-ignored)")
    arguments = parser.parse_args(argv)
    for path in write_participant_copies(arguments.output):
        print(f"[workshop] wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
