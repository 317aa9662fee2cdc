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

from shamsul_utils import workshop
from shamsul_utils.chain import NOTEBOOK_FOLDER
from shamsul_utils.labels import CLASSES

pytestmark = pytest.mark.slow
NOW = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A minimal smoke run in a temporary SHAMSUL_RUNS (about 15 s on 2 cores)."""
    from shamsul_utils import datasets, evaluation, study, training
    from shamsul_utils.config import load_profile
    from shamsul_utils.files import write_table
    from shamsul_utils.models import load_trained_model
    from shamsul_utils.phantom import PhantomSettings, write_dataset

    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("SHAMSUL_RUNS", str(runs))
        config = load_profile("smoke")
        write_dataset(config.data_root, sizes=config.data.sizes, seed=config.seed,
                      settings=PhantomSettings(**config.data.phantom))
        training.train(config, progress=False)
        model, _ = load_trained_model(config)
        training.predict_split(config, model, datasets.read_split(config, "test"))
        explanation = study.explanation_set(config)
        maps = {name: study.explain_cached(config, model, explanation, study.METHODS[name], progress=False)
                for name in ("Grad-CAM", "LRP")}
        scores = {name: evaluation.score_method(name, explanation, value, signed=config.evaluation.signed)
                  for name, value in maps.items()}
        write_table(evaluation.per_pair_table(scores, explanation), config.paths.tables / "localisation_pairs.csv")
    return runs


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


def test_view_figure_has_four_panels(explorer):
    import matplotlib.pyplot as plt

    view = explorer.view(explorer.default_key, "Cardiomegaly", "LRP", 0.4)
    figure = view.figure()
    assert len(figure.axes) == 4
    plt.close(figure)
    assert view.png()[:8] == b"\x89PNG\r\n\x1a\n"


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


def test_sixteen_bit_upload_is_scaled_to_the_full_gray_range():
    gray, note = workshop.decode_upload(GOOD_UPLOADS["sixteen_bit.png"](), "sixteen_bit.png")
    assert gray.dtype == np.uint8 and gray.min() == 0 and gray.max() == 255
    assert "scaled" in note


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
