"""The blinded rating sheet: nothing names a method, the shuffle follows the seed, a filled sheet
reads back and unblinds, bad sheets fail with one line, a filled sheet is not overwritten."""

import json
import shutil

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from shamsul_utils.errors import DataError
from shamsul_utils.rating import (
    KEY_FILE,
    MANIFEST_FILE,
    RATING_SCALE,
    README_FILE,
    SHEET_COLUMNS,
    SHEET_FILE,
    RatingItem,
    rating_summary,
    read_ratings,
    write_rating_sheet,
)

METHODS = ("Grad-CAM", "LIME", "SHAP")
MODEL = "densenet-seed-17"
GIVEN = {"Grad-CAM": 3, "LIME": 4, "SHAP": 2}  # what our imaginary clinician gives each method...
BLANK = {"p1": "LIME", "p3": "SHAP"}  # ...except these (cxr_id: method), left unrated


def make_items(n_images=4, size=32):
    rows, columns = np.mgrid[0:size, 0:size] / size
    items = []
    for index in range(n_images):
        blob = np.exp(-((rows - 0.5) ** 2 + (columns - index / 8) ** 2) * 9)  # a smooth "finding"
        image = np.clip(0.2 + 0.5 * columns + 0.3 * blob, 0, 1)
        if index % 2:
            image = (image * 255).astype(np.uint8)
        expert = np.zeros((size, size), bool)
        expert[8:24, 6 + index : 20 + index] = True
        for shift, method in enumerate(METHODS):
            segmentation = np.zeros((size, size), bool)
            segmentation[4 + 3 * shift : 20 + shift, 5:26 - index] = True
            items.append(RatingItem(cxr_id=f"p{index}", class_name=("Lung Opacity", "Cardiomegaly")[index % 2],
                                    method=method, model=MODEL, image=image, segmentation=segmentation,
                                    expert_mask=expert))
    return items


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rating") / "sheet"
    write_rating_sheet(folder, make_items(), seed=7)
    return folder


@pytest.fixture
def sheet(written, tmp_path):
    """A fresh copy of a 12-item sheet (4 images x 3 methods), written once per module."""
    return shutil.copytree(written, tmp_path / "sheet")


def fill(folder, ratings, *, comments=None):
    """Write ratings into the sheet as a clinician's spreadsheet would: {item: rating or ""}."""
    table = pd.read_csv(folder / SHEET_FILE, dtype=str, keep_default_na=False)
    table["rating"] = [ratings.get(item, "") for item in table["item"]]
    if comments:
        table["comment"] = [comments.get(item, "") for item in table["item"]]
    table.to_csv(folder / SHEET_FILE, index=False)


def clinician(folder):
    """The clinician's ratings, found through the key (only the test may look at it)."""
    key = pd.read_csv(folder / KEY_FILE, dtype=str, keep_default_na=False)
    return {row.item: ("" if BLANK.get(row.cxr_id) == row.method else GIVEN[row.method] + (row.cxr_id == "p2"))
            for row in key.itertuples()}


def test_no_file_of_the_sheet_names_a_method(sheet):
    images = sorted((sheet / "images").glob("*.png"))
    assert [path.name for path in images] == [f"item-{index:03d}.png" for index in range(1, 13)]
    for path in (sheet / SHEET_FILE, sheet / README_FILE, sheet / MANIFEST_FILE):
        text = path.read_text().lower()
        for name in (*METHODS, MODEL):
            assert name.lower() not in text, (path.name, name)
    for path in images:
        data = path.read_bytes()
        with Image.open(path) as image:
            metadata = json.dumps({**image.info, **getattr(image, "text", {})}, default=str)
        for name in (*METHODS, MODEL):
            assert name.encode() not in data and name not in metadata, (path.name, name)
    sheet_table = pd.read_csv(sheet / SHEET_FILE, dtype=str, keep_default_na=False)
    assert tuple(sheet_table.columns) == SHEET_COLUMNS
    assert (sheet_table["rating"] == "").all() and (sheet_table["comment"] == "").all()
    readme = (sheet / README_FILE).read_text()
    assert all(anchor in readme for anchor in RATING_SCALE.values())


def test_shuffle_follows_the_seed(tmp_path):
    def written(name, seed):
        write_rating_sheet(tmp_path / name, make_items(2), seed=seed)
        key = pd.read_csv(tmp_path / name / KEY_FILE, dtype=str, keep_default_na=False)
        return list(zip(key["cxr_id"], key["method"], strict=True)), (tmp_path / name / "images" / "item-001.png")

    first, png = written("a", 1)
    again, png_again = written("b", 1)
    other, _ = written("c", 2)
    assert first == again and png.read_bytes() == png_again.read_bytes()
    assert first != other and sorted(first) == sorted(other)


def test_round_trip_unblinds_and_summarises(sheet):
    given = clinician(sheet)
    fill(sheet, given, comments={"item-002": "spills over the heart, ok"})
    ratings = read_ratings(sheet)
    assert ratings.attrs == {"items": 12, "unrated": 2}
    assert len(ratings) == 10 and ratings["rating"].dtype == "int64"
    assert set(ratings["model"]) == {MODEL} and ratings["iou"].between(0, 1).all()
    key = pd.read_csv(sheet / KEY_FILE, dtype=str, keep_default_na=False).set_index("item")
    for row in ratings.itertuples():
        assert (row.cxr_id, row.method, row.rating) == (key.at[row.item, "cxr_id"], key.at[row.item, "method"],
                                                        given[row.item])
    # by hand: 4 images per method, p2 rated one higher, one image of LIME and SHAP left blank
    expected = {"Grad-CAM": (3 + 3 + 4 + 3) / 4, "LIME": (4 + 5 + 4) / 3, "SHAP": (2 + 2 + 3) / 3}
    summary = rating_summary(ratings, n_resamples=200).set_index("method")
    assert list(summary.index) == sorted(METHODS)
    assert summary["items"].to_dict() == {"Grad-CAM": 4, "LIME": 3, "SHAP": 3}
    for method, mean in expected.items():
        assert summary.at[method, "mean_rating"] == pytest.approx(mean)
        assert summary.at[method, "mean_low"] <= mean <= summary.at[method, "mean_high"]
    assert summary.at["LIME", "share_good"] == 1.0 and summary.at["SHAP", "share_good"] == 0.0
    assert summary.at["Grad-CAM", "share_good"] == pytest.approx(0.25)


def test_summary_resamples_images_not_items():
    # one radiograph rated twice under one method: a single cluster, so no spread at all
    ratings = pd.DataFrame({"cxr_id": ["p0", "p0"], "method": ["LIME", "LIME"], "rating": [1, 5]})
    summary = rating_summary(ratings, n_resamples=100)
    assert summary.loc[0, ["mean_rating", "mean_low", "mean_high"]].tolist() == [3.0, 3.0, 3.0]
    with pytest.raises(NotImplementedError):
        rating_summary(ratings.assign(rater=["a", "b"]))


def test_key_may_live_elsewhere_and_rcparams_stay(tmp_path):
    settings = dict(matplotlib.rcParams)
    key_path = tmp_path / "organiser" / "key.csv"
    write_rating_sheet(tmp_path / "sheet", make_items(1), seed=0, key_path=key_path)
    assert dict(matplotlib.rcParams) == settings
    assert not (tmp_path / "sheet" / KEY_FILE).exists()
    fill(tmp_path / "sheet", {"item-001": 4.0})  # as pandas writes a float column
    assert read_ratings(tmp_path / "sheet", key_path=key_path)["rating"].tolist() == [4]


def _edit_sheet(folder, change):
    table = pd.read_csv(folder / SHEET_FILE, dtype=str, keep_default_na=False)
    change(table).to_csv(folder / SHEET_FILE, index=False)


def _rate(value):
    def change(table):
        table.loc[3, "rating"] = value
        return table
    return change


BAD_SHEETS = {
    "rating 7": (_rate("7"), r"rating must be blank or a whole number 1-5; got '7' \(item-004, line 5\)"),
    "rating good": (_rate("good"), r"got 'good'"),
    "rating 3.5": (_rate("3.5"), r"got '3.5'"),
    "duplicated item": (lambda table: pd.concat([table, table.iloc[[2]]]), r"duplicated item\(s\) 'item-003'"),
    "missing column": (lambda table: table.drop(columns="finding"), r"missing column\(s\) finding"),
    "renamed column": (lambda table: table.rename(columns={"rating": "score"}), r"missing column\(s\) rating"),
    "unknown item": (lambda table: table.replace({"item": {"item-005": "item-099"}}),
                     r"not in the key 'item-099'"),
    "deleted row": (lambda table: table.drop(index=5), r"missing from the sheet: item-006"),
    "changed finding": (lambda table: table.assign(finding="Edema"), r"finding differs from the key"),
}


@pytest.mark.parametrize("case", list(BAD_SHEETS))
def test_bad_sheets_fail_with_one_line(sheet, case):
    change, message = BAD_SHEETS[case]
    _edit_sheet(sheet, change)
    with pytest.raises(DataError, match=message) as error:
        read_ratings(sheet)
    assert "\n" not in str(error.value)


def test_edited_key_and_missing_files(sheet):
    key = sheet / KEY_FILE
    key.write_text(key.read_text().replace("LIME", "SHAP", 1))
    with pytest.raises(DataError, match=r"differs from the key written with this sheet") as error:
        read_ratings(sheet)
    assert "\n" not in str(error.value)
    key.unlink()
    with pytest.raises(DataError, match=r"rating_key.csv: not found"):
        read_ratings(sheet)


def test_bad_items_fail_at_write_time(tmp_path):
    items = make_items(1)
    wrong = RatingItem(cxr_id="p9", class_name="Edema", method="LIME", image=np.zeros((32, 32)),
                       segmentation=np.zeros((16, 16), bool))
    message = r"segmentation \(16, 16\) differs in size from the image \(32, 32\)"
    with pytest.raises(DataError, match=message) as error:
        write_rating_sheet(tmp_path, [*items, wrong], seed=0)
    assert "\n" not in str(error.value) and not (tmp_path / SHEET_FILE).exists()
    bright = RatingItem(cxr_id="p9", class_name="Edema", method="LIME", image=np.full((32, 32), 2.0),
                        segmentation=np.zeros((32, 32), bool))
    with pytest.raises(DataError, match=r"must lie in \[0, 1\]"):
        write_rating_sheet(tmp_path, [bright], seed=0)
    with pytest.raises(DataError, match=r"the same cxr_id, class, method and model"):
        write_rating_sheet(tmp_path, [items[0], items[0]], seed=0)
    typo = RatingItem(cxr_id="p9", class_name="Lung opacity", method="LIME", image=np.zeros((8, 8)),
                      segmentation=np.zeros((8, 8), bool))
    with pytest.raises(DataError, match=r"unknown class 'Lung opacity'"):
        write_rating_sheet(tmp_path, [typo], seed=0)


def test_a_filled_sheet_is_not_overwritten(sheet):
    write_rating_sheet(sheet, make_items(2), seed=7)  # nothing filled in yet: replaced without asking
    fill(sheet, {"item-004": 2})
    with pytest.raises(DataError, match=r"1 row\(s\) already rated or commented; pass overwrite=True") as error:
        write_rating_sheet(sheet, make_items(2), seed=7)
    assert "\n" not in str(error.value)
    assert read_ratings(sheet)["rating"].tolist() == [2]  # untouched
    write_rating_sheet(sheet, make_items(1), seed=7, overwrite=True)
    assert sorted(path.name for path in (sheet / "images").iterdir()) == ["item-001.png", "item-002.png",
                                                                         "item-003.png"]  # stale PNGs gone
    assert read_ratings(sheet).attrs == {"items": 3, "unrated": 3}
