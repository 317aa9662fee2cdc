"""The workshop kit: the explorer's callbacks without a browser, bad uploads, the exercises notebook under
papermill on the smoke profile, and the participants' copies (no solutions).

The smoke run is built once per module in a temporary ``SHAMSUL_RUNS`` with the library (data, a
2-epoch model, test predictions, cached Grad-CAM and LRP maps, the localisation pairs table), which is
much cheaper than running notebooks 01-07.
"""

import datetime
import io

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest
from PIL import Image
from smoke_run import build_smoke_run

from shamsul_utils import workshop
from shamsul_utils.chain import NOTEBOOK_FOLDER
from shamsul_utils.explainers.registry import REGISTRY
from shamsul_utils.labels import CLASSES

pytestmark = pytest.mark.slow
NOW = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A minimal smoke run in a temporary SHAMSUL_RUNS (about 15 s on 2 cores)."""
    return build_smoke_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture()
def runs(smoke_run, monkeypatch):
    monkeypatch.setenv("SHAMSUL_RUNS", str(smoke_run))
    return smoke_run


@pytest.fixture(scope="module")
def explorer(smoke_run):
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("SHAMSUL_RUNS", str(smoke_run))
        return workshop.Explorer("smoke")


def _encode(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _radiograph(size=(200, 240)) -> np.ndarray:
    """A smooth bright-centre image, (height, width)."""
    rows, columns = np.mgrid[0:size[0], 0:size[1]]
    return 1.0 - np.hypot(rows / size[0] - 0.5, columns / size[1] - 0.5)


# ------------------------------------------------------------------------------------------ views

def test_cached_view_matches_the_evaluation_table(explorer, runs):
    pairs = pd.read_csv(runs / "smoke" / "tables" / "localisation_pairs.csv")
    for method in ("Grad-CAM", "LRP"):
        assert all(explorer.is_cached(key, method) for _, key in explorer.images())
        for _, row in pairs[pairs["method"] == method].head(4).iterrows():
            view = explorer.view(row["cxr_id"], row["class"], method, "otsu")
            assert view.iou == pytest.approx(row["iou"], abs=1e-9)
            assert view.hit == bool(row["hit"])
            assert view.ground_truth is not None and view.ground_truth.any()
            assert view.segmentation.shape == view.ground_truth.shape == view.image.shape
            assert view.probability == pytest.approx(row["probability"], abs=1e-6)


def test_view_threshold_controls_the_segmentation(explorer):
    key = explorer.default_key
    class_name = explorer.default_class(key)
    areas = [explorer.view(key, class_name, "Grad-CAM", threshold).segmentation.mean() for threshold in (0.1, 0.5, 0.9)]
    assert areas[0] >= areas[1] >= areas[2]
    assert not explorer.view(key, class_name, "Grad-CAM", 1.0).segmentation.any()
    view = explorer.view(key, class_name, "gradcam", 0.3)  # the module name works too
    assert view.method == "Grad-CAM" and "threshold 0.30" in view.summary()
    table = view.probabilities
    assert list(table["class"]) == list(CLASSES) and table["probability"].between(0, 1).all()
    assert set(table["label"].unique()) <= {0.0, 1.0}


def test_view_without_an_expert_mask_has_no_scores(explorer):
    key = explorer.default_key
    view = explorer.view(key, "Pneumonia", "LRP")  # not a localised class
    assert view.ground_truth is None and view.iou is None and view.hit is None
    assert "no expert mask" in view.summary()
    absent = next(name for name in ("Cardiomegaly", "Pneumothorax", "Support Devices", "Edema")
                  if explorer.explanation.labels[0, CLASSES.index(name)] == 0)
    view = explorer.view(key, absent, "Grad-CAM")
    assert view.iou is None and "class absent" in view.summary()


def test_view_rejects_bad_choices(explorer):
    key = explorer.default_key
    with pytest.raises(ValueError, match="unknown method"):
        explorer.view(key, "Cardiomegaly", "Occlusion")
    with pytest.raises(ValueError, match="unknown class"):
        explorer.view(key, "Cardiomegally", "LRP")
    with pytest.raises(ValueError, match="threshold"):
        explorer.view(key, "Cardiomegaly", "LRP", 1.5)
    with pytest.raises(KeyError, match="unknown image"):
        explorer.view("nobody", "Cardiomegaly", "LRP")


def test_view_figure_has_three_panels_and_a_predictions_table(explorer):
    import matplotlib.pyplot as plt

    view = explorer.view(explorer.default_key, "Cardiomegaly", "LRP", 0.4)
    table = workshop.predictions_table(view)
    assert list(table.columns) == ["class", "probability", "label", "predicted", "correct"]
    figure = view.figure()
    assert len(figure.axes) == 3
    plt.close(figure)
    assert view.png()[:8] == b"\x89PNG\r\n\x1a\n"


def test_otsu_threshold_is_stated_and_is_the_one_applied(explorer):
    key = explorer.default_key
    class_name = explorer.default_class(key)
    view = explorer.view(key, class_name, "Grad-CAM", "otsu")
    assert 0 < view.otsu < 1 and f"Otsu threshold {view.otsu:.2f}" in view.summary()
    # The value shown is the one applied. Exact on any CPU: Otsu mode keeps uint8(255 x) > T on the
    # normalised map x, with T / 255 the value shown (T an integer level), then fills holes (scipy,
    # 4-connected background) and drops isolated pixels; that arithmetic by hand gives the same bits.
    from scipy import ndimage

    from shamsul_utils.segmentation import drop_isolated_pixels, normalise_heatmaps

    threshold = round(view.otsu * 255)
    assert threshold == view.otsu * 255
    normalised = normalise_heatmaps(view.heatmap, output_size=view.image.shape,
                                    signed=explorer.config.evaluation.signed)
    kept = (np.float32(255) * normalised).astype(np.uint8) > threshold
    by_hand = drop_isolated_pixels(ndimage.binary_fill_holes(kept, structure=ndimage.generate_binary_structure(2, 1)))
    np.testing.assert_array_equal(by_hand, view.segmentation)
    # The same cut as a fixed threshold, x > (T + 1) / 255, agrees except where float32's 255 x rounds
    # across T + 1: within 255 x 2^-24 (1.5e-5) of it, bounded here by 1e-4 (an AVX-512 CPU once put
    # 1 of 16384 pixels there, which an exact comparison of the two turned into a failure).
    as_fixed = normalised > (threshold + 1) / 255
    near_the_cut = np.abs(normalised.astype(np.float64) * 255 - (threshold + 1)) < 1e-4
    assert not (as_fixed != kept)[~near_the_cut].any()
    assert explorer.view(key, class_name, "Grad-CAM", 0.5).otsu is None


def test_panels_are_legible_outlines_are_vector_lines_and_titles_say_when_there_is_no_mask(explorer):
    import matplotlib.pyplot as plt

    key = explorer.default_key
    view = explorer.view(key, explorer.default_class(key), "Grad-CAM", "otsu")
    figure = view.figure()
    assert view.ground_truth is not None and view.ground_truth.any()
    assert figure.axes[0].get_title().endswith("expert mask")
    assert len(figure.axes[2].lines) >= 2  # expert mask and segmentation outlines, drawn as lines
    assert {line.get_color() for line in figure.axes[2].lines} == {"#00c853", "#ffd600"}
    plt.close(figure)
    width = Image.open(io.BytesIO(view.png())).width
    assert 900 <= width <= 960  # three panels of ~300 px: they fit beside JupyterLab's file browser at 1280 px
    upload = explorer.upload(GOOD_UPLOADS["gray.png"](), "titles.png")
    figure = explorer.view(upload.key, "Cardiomegaly", "Grad-CAM").figure()
    assert "no expert mask" in figure.axes[0].get_title() and "expert mask\n" not in figure.axes[0].get_title()
    plt.close(figure)


def test_comparison_shows_every_method_for_every_class_of_the_image(explorer):
    import matplotlib.pyplot as plt

    row = int(np.argmax(explorer.explanation.masks.present.sum(axis=1)))  # the image with most masks
    key = explorer.explanation.cxr_ids[row]
    comparison = explorer.comparison(key, "Pneumonia")
    positives = [name for name in comparison.classes[:-1]]
    assert comparison.classes[-1] == "Pneumonia" and len(positives) >= 1
    assert comparison.methods == [record.name for record in REGISTRY.values()]
    for (class_name, method), view in comparison.views.items():
        single = explorer.view(key, class_name, method)
        cell = comparison.cells[(comparison.cells["class"] == class_name) & (comparison.cells["method"] == method)]
        assert len(cell) == 1 and (view.iou is None) == np.isnan(cell["iou"].iloc[0])
        if view.iou is not None:
            assert cell["iou"].iloc[0] == pytest.approx(single.iou, abs=1e-12)
    assert comparison.iou_table.loc["Pneumonia"].isna().all()  # no expert mask for a class not localised
    predictions = comparison.predictions
    assert list(predictions["class"]) == list(CLASSES)
    labels = explorer.explanation.labels[row]
    expected = (explorer.explanation.probabilities[row] >= 0.5) == (labels == 1)
    assert list(predictions["correct"]) == list(expected)
    figure = comparison.figure()
    assert len(figure.axes) == len(comparison.classes) * (1 + len(comparison.methods))
    plt.close(figure)
    assert "class(es) x" in comparison.summary()


def test_an_upload_of_an_explanation_set_image_gets_its_masks_and_labels(explorer):
    entry_key = explorer.default_key
    path = explorer.explanation.table["image_path"].iloc[0]
    with open(path, "rb") as handle:
        content = handle.read()
    result = explorer.upload(content, "same.png")
    assert result.key == entry_key and entry_key in result.message and "expert masks" in result.message
    assert explorer.view(result.key, explorer.default_class(result.key), "Grad-CAM").ground_truth is not None
    resaved = _encode(Image.open(io.BytesIO(content)))  # the same pixels in another file: still recognised
    assert explorer.upload(resaved, "resaved.png").key == entry_key


def test_uploads_unlike_the_training_images_get_a_visible_note(explorer, runs):
    from shamsul_utils import datasets

    reference = explorer.familiarity()
    size = explorer.config.model.input_size
    test = datasets.read_split(explorer.config, "test")
    grays = datasets.load_images(test.table["image_path"].tolist(), size)
    flagged = np.mean([reference.note(gray) is not None for gray in grays])
    assert flagged <= 0.05, f"{flagged:.0%} of the test split's phantom images are called unlike the training images"
    rows, columns = np.mgrid[0:size, 0:size]
    unlike = {"gradient": (255 * columns / size).astype(np.uint8),
              "noise": np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8),
              "flat gray": np.full((size, size), 128, np.uint8),
              "inverted radiograph": 255 - grays[0], "shifted radiograph": np.roll(grays[0], size // 3, axis=1)}
    for name, gray in unlike.items():
        assert reference.note(gray) is not None, name
    result = explorer.upload(_encode(Image.fromarray(unlike["gradient"])), "gradient.png")
    assert "unlike the images the model was trained on" in result.message
    view = explorer.view(result.key, "Cardiomegaly", "Grad-CAM")
    assert "Note: unlike" in view.summary()


def test_a_missing_run_is_one_line_saying_what_to_do(tmp_path, monkeypatch):
    from shamsul_utils.errors import DataError

    monkeypatch.setenv("SHAMSUL_RUNS", str(tmp_path / "nothing"))
    with pytest.raises(DataError, match=r"profile 'smoke' has no usable trained run .*make reproduce"):
        workshop.Explorer("smoke")
    app = workshop.ExplorerApp.open("smoke")
    assert app.explorer is None and "make reproduce" in app.status.value and "#b00020" in app.status.value


# ------------------------------------------------------------------------------------------ uploads

GOOD_UPLOADS = {
    "gray.png": lambda: _encode(Image.fromarray((255 * _radiograph()).astype(np.uint8))),
    "one_bit.png": lambda: _encode(Image.fromarray(_radiograph() > 0.6).convert("1")),
    "rgba.png": lambda: _encode(Image.fromarray(np.dstack([(255 * _radiograph()).astype(np.uint8)] * 3
                                                           + [np.full((200, 240), 200, np.uint8)]), "RGBA")),
    "sixteen_bit.png": lambda: _encode(Image.fromarray((4095 * _radiograph()).astype(np.uint16))),
    "palette.png": lambda: _encode(Image.fromarray((255 * _radiograph()).astype(np.uint8)).convert("P")),
    "photo.jpg": lambda: _encode(Image.fromarray((255 * _radiograph()).astype(np.uint8)).convert("RGB"), "JPEG"),
    "photo.jpeg": lambda: _encode(Image.fromarray((255 * _radiograph()).astype(np.uint8)), "JPEG"),
}


@pytest.mark.parametrize("name", sorted(GOOD_UPLOADS))
def test_uploads_of_any_mode_are_converted_and_explained(explorer, name):
    result = explorer.upload(GOOD_UPLOADS[name](), name)
    assert result.ok, result.message
    assert result.message.startswith(name)
    assert explorer.is_cached(result.key, "Grad-CAM") and explorer.is_cached(result.key, "LRP")
    assert not explorer.is_cached(result.key, "LIME")
    assert result.key in dict((key, label) for label, key in explorer.images())
    view = explorer.view(result.key, "Cardiomegaly", "LRP", "otsu")
    assert view.image.shape == (200, 240) and view.segmentation.shape == (200, 240)
    assert view.iou is None and view.ground_truth is None and view.probabilities["label"].isna().all()


def test_sixteen_bit_upload_is_scaled_by_its_bit_depth_as_the_study_reads_images():
    """12-bit values in a 16-bit PNG read as the 8-bit picture (one rule with datasets.load_image),
    neither clipped to white nor contrast-stretched."""
    gray, note = workshop.decode_upload(GOOD_UPLOADS["sixteen_bit.png"](), "sixteen_bit.png")
    stored = (4095 * _radiograph()).astype(np.uint16)
    by_hand = np.floor(stored * (255 / 4095) + 0.5)
    assert gray.dtype == np.uint8 and np.array_equal(gray, by_hand.astype(np.uint8))
    assert "I;16 (12-bit values) scaled to 8-bit gray" in note


def test_transparent_pixels_become_black():
    pixels = np.full((64, 64, 4), 255, np.uint8)
    pixels[:, :32, 3] = 0  # left half transparent white
    gray, note = workshop.decode_upload(_encode(Image.fromarray(pixels, "RGBA")), "alpha.png")
    assert gray[:, :32].max() == 0 and gray[:, 32:].min() == 255 and "black" in note


def _truncated_jpeg() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG", quality=95)
    return data[: len(data) // 2]


BAD_UPLOADS = {
    "notes.png": (lambda: b"these are my notes, not an image\n" * 20, "not a PNG or JPEG"),
    "empty.png": (lambda: b"", "empty"),
    "huge.png": (lambda: _encode(Image.new("L", (4100, 300))), "too large"),
    "huge_file.png": (lambda: b"\x89PNG" + bytes(workshop.MAX_UPLOAD_BYTES), "MB is too large"),
    "tiny.png": (lambda: _encode(Image.new("L", (8, 8))), "too small"),
    "cut.jpg": (_truncated_jpeg, "truncated"),
    "animation.gif": (lambda: _encode(Image.new("L", (64, 64)), "GIF"), "GIF images are not accepted"),
}


@pytest.mark.parametrize("name", sorted(BAD_UPLOADS))
def test_bad_uploads_get_a_one_line_message(explorer, name):
    data, expected = BAD_UPLOADS[name]
    before = explorer.images()
    result = explorer.upload(data(), name)
    assert not result.ok and result.key is None
    assert expected in result.message and result.message.startswith(name)
    assert "\n" not in result.message and "Traceback" not in result.message
    assert explorer.images() == before


def test_lime_and_shap_of_an_upload_run_with_a_progress_bar(explorer, capsys):
    result = explorer.upload(GOOD_UPLOADS["gray.png"](), "lime.png")
    for method in ("LIME", "SHAP"):
        view = explorer.view(result.key, "Pleural Effusion", method, 0.5, progress=True)
        assert view.heatmap.shape == (explorer.config.model.input_size,) * 2
        assert explorer.is_cached(result.key, method)
    progress = capsys.readouterr().err
    assert "LIME (60 samples)" in progress and "100%" in progress and "SHAP" in progress


# ------------------------------------------------------------------------------------------ widgets

def test_app_refreshes_and_reports_upload_errors_in_the_widget(explorer):
    app = workshop.ExplorerApp(explorer)
    first = app.figure.value
    assert first[:4] == b"\x89PNG" and ("IoU" in app.status.value or "no expert mask" in app.status.value)
    app.method.value = "LRP"
    assert app.figure.value != first and "LRP" in app.status.value
    app.otsu.value = False
    assert not app.threshold.disabled
    app.threshold.value = 0.3
    assert "threshold 0.30" in app.status.value
    app.upload.value = ({"name": "notes.png", "type": "image/png", "size": 5, "last_modified": NOW,
                         "content": memoryview(b"hello")},)
    assert "not a PNG or JPEG" in app.status.value and "#b00020" in app.status.value
    app.upload.value = ({"name": "mine.png", "type": "image/png", "size": 1, "last_modified": NOW,
                         "content": memoryview(GOOD_UPLOADS["gray.png"]())},)
    assert app.image.value.startswith("upload-") and "mine.png" in app.status.value
    assert "#b00020" not in app.status.value
    assert app.upload.value == ()  # cleared, so the same file can be uploaded again


def test_app_compares_all_methods_and_shows_otsu_on_the_slider(explorer):
    app = workshop.ExplorerApp(explorer)
    assert "Restart Kernel and Run All Cells" in app.hint.value and app.hint in app.widget.children
    assert app.otsu.value and app.threshold.disabled
    view = app.refresh()
    assert app.threshold.value == pytest.approx(round(view.otsu, 2))  # Otsu's value, not a stale one
    seen = []
    app.figure.observe(lambda change: seen.append((change["new"][:4], app.method.disabled)), names="value")
    app.mode.value = "all methods"
    assert "class(es) x" in app.status.value and "IoU per class and method" in app.tables.value
    assert "Predictions" in app.tables.value and app.figure.value[:4] == b"\x89PNG"
    assert seen and all(disabled for _, disabled in seen)  # the picture changes only while controls are off
    assert not app.method.disabled and not app.image.disabled and app.threshold.disabled  # back after
    app.mode.value = "one method"
    assert "IoU per class" not in app.tables.value and "Predictions" in app.tables.value
    assert "IoU" in app.status.value or "no expert mask" in app.status.value


# ------------------------------------------------------------------------------------------ notebooks

def _execute(name: str, output, **parameters):
    return papermill.execute_notebook(str(NOTEBOOK_FOLDER / name), str(output), parameters=parameters,
                                      kernel_name="python3", cwd=str(NOTEBOOK_FOLDER), progress_bar=False)


def test_exercises_notebook_runs_on_the_smoke_profile(runs, tmp_path):
    executed = _execute("workshop_exercises.ipynb", tmp_path / "exercises.ipynb", profile="smoke")
    solutions = [cell for cell in executed.cells if "solution" in cell.metadata.get("tags", [])]
    assert len(solutions) >= 6
    assert any(cell.cell_type == "markdown" for cell in solutions)
    outputs = [output for cell in solutions if cell.cell_type == "code" for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in outputs)  # the failure case is shown
    assert not any(output.output_type == "error" for output in outputs)


def test_explorer_notebook_executes_top_to_bottom(runs, tmp_path):
    executed = _execute("09_workshop_explorer.ipynb", tmp_path / "explorer.ipynb", profile="smoke")
    data = [output.get("data", {}) for cell in executed.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("application/vnd.jupyter.widget-view+json" in item for item in data)
    assert any("image/png" in item for item in data)


def test_participant_copies_have_no_solutions(tmp_path):
    assert workshop.main(["--output", str(tmp_path / "workshop")]) == 0
    teacher = nbformat.read(NOTEBOOK_FOLDER / "workshop_exercises.ipynb", as_version=4)
    solutions = [cell for cell in teacher.cells if "solution" in cell.metadata.get("tags", [])]
    assert solutions
    copy = nbformat.read(tmp_path / "workshop" / "workshop_exercises.ipynb", as_version=4)
    nbformat.validate(copy)
    assert not [cell for cell in copy.cells if "solution" in cell.metadata.get("tags", [])]
    text = "\n".join(cell.source for cell in copy.cells)
    for cell in solutions:
        assert cell.source not in text
    assert "**Solution.**" not in text
    stubs = [cell for cell in copy.cells if "answer" in cell.metadata.get("tags", [])]
    assert len(stubs) == len(solutions)
    assert len(copy.cells) == len(teacher.cells)
    assert any("parameters" in cell.metadata.get("tags", []) for cell in copy.cells)
    explorer_copy = nbformat.read(tmp_path / "workshop" / "09_workshop_explorer.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in explorer_copy.cells)
