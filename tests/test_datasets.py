"""The CheXpert/CheXlocalize readers on a hand-made fixture in the published formats, and bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from chexpert_fixture import build_chexpert_fixture
from PIL import Image

from shamsul_utils.chexlocalize import encode_mask, read_segmentations
from shamsul_utils.datasets import (
    ImageDataset,
    SplitData,
    load_image,
    masks_for,
    normalize,
    read_chexpert_csv,
)
from shamsul_utils.errors import DataError
from shamsul_utils.labels import CLASSES, LOCALIZED_CLASSES
from shamsul_utils.models import denormalize


@pytest.fixture()
def fixture(tmp_path):
    return build_chexpert_fixture(tmp_path)


def test_labels_uncertain_blank_and_lateral(fixture):
    csv = fixture["root"] / "CheXpert-v1.0-small" / "valid.csv"
    table = read_chexpert_csv(csv)
    assert len(table) == 4, "the lateral view is dropped"
    assert table.loc[2, "Edema"] == 0.0, "uncertain -> 0 under U-Zeros"
    assert read_chexpert_csv(csv, uncertain="ones").loc[2, "Edema"] == 1.0
    assert table[list(CLASSES)].isin([0.0, 1.0]).all().all(), "blanks -> 0"
    assert table.loc[0, "cxr_id"] == "patient00013_study1_view1_frontal"
    assert all(path.endswith(".jpg") for path in table["image_path"])
    assert len(read_chexpert_csv(csv, frontal_only=False)) == 5


def test_non_square_image_and_masks(fixture):
    root = fixture["root"]
    table = read_chexpert_csv(root / "CheXpert-v1.0-small" / "valid.csv")
    width, height = fixture["size"]
    assert load_image(table.loc[0, "image_path"]).shape == (height, width)
    assert load_image(table.loc[0, "image_path"], 32).shape == (32, 32)
    split = SplitData("valid", table, read_segmentations(root / "CheXlocalize" / "gt_segmentations_val.json"))
    masks = masks_for(split, table["cxr_id"])
    assert masks.shape == (4, len(LOCALIZED_CLASSES), height, width)
    opacity = LOCALIZED_CLASSES.index("Lung Opacity")
    assert masks[0, opacity].sum() == 10 * 15, "'Airspace Opacity' is read as Lung Opacity"
    assert masks[1, opacity].sum() == 0
    small = masks_for(split, table["cxr_id"], size=20)
    assert small.shape[-2:] == (20, 20)
    assert small[0, opacity].any()


def test_normalisation_round_trip():
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    tensor = normalize(gray)
    assert tensor.shape == (3, 16, 16)
    assert np.allclose(denormalize(tensor[None])[0], np.repeat(gray[..., None] / 255.0, 3, axis=-1), atol=1e-6)


def test_dataset_items_and_seeded_augmentation(fixture):
    table = read_chexpert_csv(fixture["root"] / "CheXpert-v1.0-small" / "train.csv")
    dataset = ImageDataset(table, 32, augment_shift=0.1, seed=3)
    image, labels = dataset[1]
    assert image.shape == (3, 32, 32) and labels.shape == (14,)
    assert torch.equal(dataset[1][0], image), "augmentation is seeded per item and epoch"
    dataset.epoch = 1
    assert not torch.equal(dataset[1][0], image)


def test_missing_image_names_the_file(fixture):
    root = fixture["root"]
    table = read_chexpert_csv(root / "CheXpert-v1.0-small" / "train.csv")
    missing = table.loc[3, "image_path"]
    Image.open(missing).close()
    (root / missing).unlink()
    with pytest.raises(DataError, match=r"view1_frontal.jpg: image not found"):
        load_image(missing)


def test_unreadable_image(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="broken.jpg: unreadable image"):
        load_image(bad)


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_images_of_more_than_8_bits_are_scaled_by_their_depth_not_clipped(tmp_path, bits):
    """The same picture stored at 8, 12 and 16 bits reads as the same 8-bit gray values (PIL's
    convert("L") clips: a full-range 16-bit image read as 100 % white before)."""
    picture = np.linspace(0, 1, 64 * 48).reshape(48, 64)
    expected = np.floor(255 * picture + 0.5).astype(np.uint8)  # the 8-bit picture, by hand
    stored = np.floor((2**bits - 1) * picture + 0.5).astype(np.uint8 if bits == 8 else np.uint16)
    path = tmp_path / f"image{bits}.png"
    Image.fromarray(stored).save(path)
    gray = load_image(path)
    assert gray.dtype == np.uint8 and gray.shape == (48, 64)
    # round(255 round((2^b - 1) x) / (2^b - 1)) is within one grey level of round(255 x)
    assert np.abs(gray.astype(int) - expected).max() <= 1
    assert (gray == 255).mean() < 0.01 and gray.min() == 0 and gray.max() == 255


def test_unsupported_and_oversized_images_are_one_line_naming_the_file(tmp_path, monkeypatch):
    floating = tmp_path / "float.tiff"
    Image.fromarray(np.zeros((8, 8), np.float32)).save(floating)
    with pytest.raises(DataError, match=r"float.tiff: unreadable image \(ValueError: floating-point"):
        load_image(floating)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses images over twice this
    with pytest.raises(DataError, match=r"big.png: image too large to decode safely"):
        load_image(big)


def test_csv_without_a_label_column(fixture):
    csv = fixture["root"] / "CheXpert-v1.0-small" / "valid.csv"
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("Edema")
    csv.write_text("\n".join(",".join(v for i, v in enumerate(line.split(",")) if i != drop) for line in lines))
    with pytest.raises(DataError, match=r"valid.csv: missing column\(s\) Edema"):
        read_chexpert_csv(csv)


@pytest.mark.parametrize("value, shown", [("2.0", "'2.0'"), ("yes", "'yes'"), ("TRUE", "'TRUE'"),
                                          ("positive", "'positive'"), ('"1,0"', "'1,0'"),
                                          # pandas reads these as missing by default: never silently blank
                                          ("NULL", "'NULL'"), ("None", "'None'"), ("N/A", "'N/A'"),
                                          ("nan", "'nan'"), ("NA", "'NA'")])
def test_bad_label_value(fixture, value, shown):
    """Never read as 0 (``to_numeric(errors="coerce")`` turned words into NaN, then 0)."""
    csv = fixture["root"] / "CheXpert-v1.0-small" / "valid.csv"
    csv.write_text(csv.read_text().replace(",-1.0,", f",{value},", 1))
    with pytest.raises(DataError, match=rf"column 'Edema': label {shown} is not 1, 0, -1 or blank"):
        read_chexpert_csv(csv)


def test_a_bad_label_names_its_line_in_the_file_counting_lateral_rows(fixture):
    csv = fixture["root"] / "CheXpert-v1.0-small" / "valid.csv"
    header, *rows = csv.read_text().splitlines()
    lateral = next(row for row in rows if "lateral" in row)
    rows = [lateral, *[row for row in rows if row != lateral]]  # a lateral view on line 2
    bad = next(index for index, row in enumerate(rows) if ",-1.0," in row)
    rows[bad] = rows[bad].replace(",-1.0,", ",yes,", 1)
    csv.write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(DataError, match=rf"valid.csv: line {bad + 2}, column 'Edema': label 'yes'"):
        read_chexpert_csv(csv)


@pytest.mark.parametrize("path", ["../../elsewhere/view1_frontal.jpg", "/etc/view1_frontal.jpg",
                                  "CheXpert-v1.0-small/valid/../../../x.jpg", "C:\\images\\view1_frontal.jpg"])
def test_image_paths_that_leave_the_data_folder_are_refused(fixture, path):
    csv = fixture["root"] / "CheXpert-v1.0-small" / "valid.csv"
    header, first, *rest = csv.read_text().splitlines()
    csv.write_text("\n".join([header, first, path + first[first.index(","):], *rest]) + "\n")
    with pytest.raises(DataError, match=r"valid.csv: line 3: image path .* is absolute or leaves the data folder"):
        read_chexpert_csv(csv)


def test_missing_csv(tmp_path):
    with pytest.raises(DataError, match="label CSV not found"):
        read_chexpert_csv(tmp_path / "nope.csv")


def test_rle_whose_size_disagrees(fixture):
    root = fixture["root"]
    path = root / "CheXlocalize" / "gt_segmentations_val.json"
    content = json.loads(path.read_text())
    first = next(iter(content))
    content[first] = {task: encode_mask(np.zeros((7, 9), bool)) for task in content[first]}
    path.write_text(json.dumps(content))
    table = read_chexpert_csv(root / "CheXpert-v1.0-small" / "valid.csv")
    split = SplitData("valid", table, read_segmentations(path))
    with pytest.raises(DataError, match=rf"{first}: mask size \(7, 9\) does not fit its image's \(40, 48\)"):
        masks_for(split, table["cxr_id"])


def test_every_image_is_checked_not_only_the_sampled_ones(tmp_path):
    from shamsul_utils.datasets import SplitData, verify_split_files

    build_chexpert_fixture(tmp_path)
    table = read_chexpert_csv(tmp_path / "CheXpert-v1.0-small" / "train.csv")
    split = SplitData("train", table, None)
    assert verify_split_files(split, sample=2)["images"] == len(table)
    broken = table["image_path"].iloc[10]  # beyond the decoded sample
    Path(broken).write_bytes(b"not an image")
    with pytest.raises(DataError, match=rf"{broken}: unreadable image"):
        verify_split_files(split, sample=2)
