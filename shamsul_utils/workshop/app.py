"""The explorer's ipywidgets (:class:`ExplorerApp`), wired to an :class:`~.explorer.Explorer`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..config import Profile
from ..errors import DataError
from ..explainers.registry import REGISTRY
from ..labels import CLASSES
from .explorer import Comparison, Explorer, ExplorerView, predictions_table
from .uploads import Upload

__all__ = ["ExplorerApp", "MODES", "DEAD_KERNEL_HINT"]

MODES = ("one method", "all methods")  # the single-panel view and the side-by-side comparison
DEAD_KERNEL_HINT = ("If a click changes nothing (no \u201ccomputing\u201d line), the kernel has stopped: "
                    "Kernel \u203a Restart Kernel and Run All Cells.")


class ExplorerApp:
    """The explorer's ipywidgets, wired to an :class:`Explorer`; display ``app.widget``.

    Two modes: ``"one method"`` (image, heatmap, segmentation, probabilities for the chosen class
    and method) and ``"all methods"`` (per class of the image, the expert mask beside every
    method's map and segmentation, with the predictions and IoU tables below). Every callback
    catches what goes wrong and shows one line in ``status``; no traceback reaches the participant.
    While a view is computed the controls are disabled and the status says so; the picture is
    replaced only by the view the status then describes. The widgets can be driven from Python
    (tests set their values).
    """

    def __init__(self, explorer: Explorer | None, *, method: str | None = None, message: str = ""):
        import ipywidgets as widgets

        self.explorer = explorer
        self.status = widgets.HTML(layout=widgets.Layout(width="100%"))
        if explorer is None:  # no run to explore: one line saying what to do, no controls
            self.widget = widgets.VBox([self.status])
            self._say(message, error=True)
            return
        key = explorer.default_key
        wide = {"description_width": "initial"}
        self.image = widgets.Dropdown(options=explorer.images(), value=key, description="image", style=wide,
                                      layout=widgets.Layout(width="360px"))
        self.class_name = widgets.Dropdown(options=list(CLASSES), value=explorer.default_class(key),
                                           description="class", style=wide, layout=widgets.Layout(width="290px"))
        names = [record.name for record in REGISTRY.values()]  # every registered method, the study's first
        self.method = widgets.ToggleButtons(options=names, value=method or names[0], description="method",
                                            tooltips=[f"{record.name}: {record.kind} method, "
                                                      f"{'signed' if record.signed else 'unsigned'} maps"
                                                      for record in REGISTRY.values()],
                                            style={"button_width": "auto", **wide})
        self.mode = widgets.ToggleButtons(options=list(MODES), value=MODES[0], description="show",
                                          tooltips=["the chosen method in detail", "every method side by side"],
                                          style={"button_width": "auto", **wide})
        self.otsu = widgets.Checkbox(value=True, description="Otsu threshold (CheXlocalize)", indent=False,
                                     layout=widgets.Layout(width="auto"))
        self.threshold = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, description="threshold",
                                             disabled=True, continuous_update=False, style=wide,
                                             layout=widgets.Layout(width="300px"))
        self.upload = widgets.FileUpload(accept=".png,.jpg,.jpeg,image/png,image/jpeg", multiple=False,
                                         description="upload", tooltip="a PNG or JPEG chest radiograph",
                                         layout=widgets.Layout(width="auto"))
        self.figure = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.tables = widgets.HTML()
        self.progress = widgets.Output()
        picture = widgets.Box([self.figure], layout=widgets.Layout(overflow="auto", width="100%"))
        # Widgets cannot report a kernel that has stopped (they are drawn by the browser, their callbacks run
        # in the kernel): this line, always shown, says what to do when a click changes nothing.
        self.hint = widgets.HTML(f'<span style="color:#666666">{DEAD_KERNEL_HINT}</span>')
        self.widget = widgets.VBox([
            widgets.HBox([self.image, self.class_name, self.upload], layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([self.method], layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([self.mode, self.otsu, self.threshold], layout=widgets.Layout(flex_flow="row wrap")),
            self.status, self.progress, picture, self.tables, self.hint])
        self._controls = (self.image, self.class_name, self.method, self.mode, self.otsu, self.threshold, self.upload)
        for control in (self.image, self.class_name, self.method, self.mode, self.threshold):
            control.observe(self._changed, names="value")
        self.otsu.observe(self._otsu_changed, names="value")
        self.upload.observe(self._uploaded, names="value")
        self._holding = False  # True while the app itself sets values (one refresh, not several)
        self.refresh()

    @classmethod
    def open(cls, profile: str | Profile, **options) -> ExplorerApp:
        """The app of a profile's run; where the profile has no run (or it cannot be read), an app
        whose widget is the one line :class:`Explorer` gives, saying what to do."""
        try:
            explorer = Explorer(profile)
        except DataError as error:
            return cls(None, message=str(error))
        return cls(explorer, **options)

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

    @contextmanager
    def _busy(self) -> Iterator[None]:
        """Controls disabled while a view is computed; each back to its own state afterwards."""
        states = [(control, control.disabled) for control in self._controls]
        for control, _ in states:
            control.disabled = True
        try:
            yield
        finally:
            for control, state in states:
                control.disabled = state
            self.threshold.disabled = bool(self.otsu.value)

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

    def refresh(self) -> ExplorerView | Comparison | None:
        """Recompute the view from the widgets' values; returns it (None after an error).

        The controls stay disabled until the picture, the tables and the status line all show the
        new view (or the error).
        """
        threshold = "otsu" if self.otsu.value else float(self.threshold.value)
        comparing = self.mode.value == MODES[1]
        methods = list(self.method.options) if comparing else [self.method.value]
        with self._busy():
            slow = not all(self.explorer.is_cached(self.image.value, method) for method in methods)
            what = "every method" if comparing else self.method.value
            self._say(f"computing {what} for this image" + (" (progress below) ..." if slow else " ..."))
            if slow:
                self.figure.value = b""  # never an old picture under a "computing" line
            try:
                self.progress.clear_output()
                with self.progress:
                    if comparing:
                        view = self.explorer.comparison(self.image.value, self.class_name.value, threshold,
                                                        progress=slow)
                    else:
                        view = self.explorer.view(self.image.value, self.class_name.value, self.method.value,
                                                  threshold, progress=slow)
                self.progress.clear_output()
                picture = view.png()
            except Exception as error:  # shown as one line in the widget, never as a traceback
                self.figure.value = b""
                self.tables.value = ""
                text = str(error).splitlines()[0] if str(error) else ""
                self._say(f"{error.__class__.__name__}: {text}", error=True)
                return None
            # one method fits the cell (three ~300 px panels); all methods keep ~300 px panels and scroll sideways
            self.figure.layout.max_width = "none" if comparing else "100%"
            self.figure.value = picture
            self.tables.value = _tables_html(view) if comparing else _predictions_html(predictions_table(view))
            if not comparing and view.otsu is not None:
                with self._hold():  # the disabled slider shows Otsu's actual threshold
                    self.threshold.value = round(view.otsu, 2)
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
        with self._hold():
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


def _predictions_html(table) -> str:
    """The predictions table (confidence; correct or not against the image's labels) as HTML."""
    shown = table.assign(
        probability=table["probability"].map("{:.2f}".format),
        label=table["label"].map(lambda value: "-" if value != value else int(value)),
        predicted=table["predicted"].map({True: "positive", False: "negative"}),
        correct=table["correct"].map(lambda value: "-" if value is None else "yes" if value else "no"))
    return ("<b>Predictions</b> (positive at p &ge; 0.5; correct against the image's labels, - for an upload)"
            + shown.to_html(index=False, border=0))


def _tables_html(comparison: Comparison) -> str:
    """The comparison's IoU table (class x method) and predictions table, as HTML."""
    iou = comparison.iou_table.map(lambda value: "-" if value != value else f"{value:.2f}")
    return ("<b>IoU per class and method</b> (- : no expert mask to score)" + iou.to_html(border=0)
            + _predictions_html(comparison.predictions))
