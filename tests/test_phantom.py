"""Tests of the chest-radiograph phantom: determinism, masks, formats, label statistics, shortcut, reruns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from shamsul_utils.chexlocalize import cxr_id_from_path, decode_mask, read_segmentations
from shamsul_utils.errors import DataError
from shamsul_utils.labels import CHEXLOCALIZE_TASK_NAMES, CLASSES, LOCALIZED_CLASSES
from shamsul_utils.phantom import (
    DATASET_FOLDER,
    PhantomSettings,
    csv_columns,
    generate_case,
    write_dataset,
)

SMALL = PhantomSettings(image_size=64)
SIZES = {"train": 12, "valid": 4, "test": 4}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "phantom_manifest.json"
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    write_dataset(root, sizes=SIZES, seed=3, settings=SMALL)
    return root


def test_same_seed_gives_identical_bytes_and_another_seed_differs(dataset, tmp_path):
    again = tmp_path / "again"
    write_dataset(again, sizes=SIZES, seed=3, settings=SMALL)
    assert _all_bytes(dataset) == _all_bytes(again)
    other = tmp_path / "other"
    write_dataset(other, sizes=SIZES, seed=4, settings=SMALL)
    first = f"{DATASET_FOLDER}/train/patient00001/study1/view1_frontal.png"
    assert (dataset / first).read_bytes() != (other / first).read_bytes()
    assert (dataset / DATASET_FOLDER / "train.csv").read_bytes() != (
        other / DATASET_FOLDER / "train.csv"
    ).read_bytes()


def test_parallel_generation_writes_the_same_bytes(dataset, tmp_path):
    """Every case depends on (seed, split, index) only, so two processes write what one does."""
    parallel = tmp_path / "parallel"
    write_dataset(parallel, sizes=SIZES, seed=3, settings=SMALL, workers=2)
    assert _all_bytes(parallel) == _all_bytes(dataset)
    shortcut = PhantomSettings(image_size=64, shortcut=("Lung Lesion", 1.0, 0.2))
    one, two = tmp_path / "one", tmp_path / "two"
    write_dataset(one, sizes={"train": 9}, seed=1, settings=shortcut, workers=1)
    write_dataset(two, sizes={"train": 9}, seed=1, settings=shortcut, workers=2)
    assert _all_bytes(one) == _all_bytes(two)
    with pytest.raises(DataError, match="workers must be a positive int"):
        write_dataset(tmp_path / "bad", sizes=SIZES, seed=3, settings=SMALL, workers=0)


def test_case_does_not_depend_on_how_many_were_generated():
    """Case 5 is the same whether it comes sixth in a run or alone, whatever the global RNG holds."""
    in_a_run = [generate_case(index, "valid", 7, SMALL) for index in range(6)][5]
    np.random.seed(123)  # a global RNG state the generator must not read
    alone = generate_case(5, "valid", 7, SMALL)
    assert np.array_equal(alone.image, in_a_run.image)
    assert all(np.array_equal(alone.masks[name], in_a_run.masks[name]) for name in alone.masks)
    assert not np.array_equal(alone.image, generate_case(5, "test", 7, SMALL).image)


def test_positive_masks_are_nonempty_and_inside_the_body():
    for index in range(60):
        case = generate_case(11, "train", index, PhantomSettings(image_size=96))
        assert case.image.dtype == np.uint8 and case.image.shape == (96, 96)
        positives = {CLASSES[i] for i in np.flatnonzero(case.labels)}
        for name in LOCALIZED_CLASSES:
            if name in positives:
                mask = case.masks[name]
                assert mask.dtype == bool and mask.any(), (index, name)
                assert not (mask & ~case.body).any(), (index, name)
            else:
                assert name not in case.masks


def test_written_rle_decodes_to_the_generated_masks(dataset):
    segmentations = json.loads((dataset / "CheXlocalize" / "gt_segmentations_train.json").read_text())
    rows = _read_csv(dataset / DATASET_FOLDER / "train.csv")
    assert len(segmentations) == len(rows) == SIZES["train"]
    for index, row in enumerate(rows):
        case = generate_case(3, "train", index, SMALL)
        entry = segmentations[cxr_id_from_path(row["Path"])]
        assert set(entry) == set(CHEXLOCALIZE_TASK_NAMES.values())
        for name, task in CHEXLOCALIZE_TASK_NAMES.items():
            rle = entry[task]
            decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(
                bool
            )
            expected = case.masks.get(name, np.zeros((64, 64), dtype=bool))
            assert np.array_equal(decoded, expected), (index, name)
            assert decoded.any() == (float(row[name]) == 1.0)
    assert set(read_segmentations(dataset / "CheXlocalize" / "gt_segmentations_valid.json")) == {
        cxr_id_from_path(row["Path"]) for row in _read_csv(dataset / DATASET_FOLDER / "valid.csv")
    }


def test_csv_columns_paths_and_images(dataset):
    paths = []
    for split, count in SIZES.items():
        csv_path = dataset / DATASET_FOLDER / f"{split}.csv"
        with open(csv_path, newline="") as handle:
            header = next(csv.reader(handle))
        assert header == csv_columns() == ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CLASSES]
        rows = _read_csv(csv_path)
        assert len(rows) == count
        for row in rows:
            assert row["Path"].startswith(f"{DATASET_FOLDER}/{split}/patient")
            assert row["Frontal/Lateral"] == "Frontal" and row["AP/PA"] in ("AP", "PA")
            assert row["Sex"] in ("Male", "Female") and 18 <= int(row["Age"]) <= 90
            image = Image.open(dataset / row["Path"])
            assert image.mode == "L" and image.size == (64, 64)
            paths.append(row["Path"])
    patients = [path.split("/")[2] for path in paths]
    assert len(set(patients)) == len(patients)
    assert patients[0] == "patient00001"


def test_no_finding_and_prevalences():
    labels = np.stack([generate_case(1, "train", index, SMALL).labels for index in range(300)])
    assert set(np.unique(labels)) <= {0.0, 1.0}
    others = labels[:, 1:].any(axis=1)
    assert np.array_equal(labels[:, 0] == 1, ~others)
    assert 0.1 <= labels[:, 0].mean() <= 0.4
    for name in LOCALIZED_CLASSES:
        prevalence = labels[:, CLASSES.index(name)].mean()
        assert 0.05 <= prevalence <= 0.4, (name, prevalence)


def test_shortcut_confounder_rates_and_no_support_devices():
    settings = PhantomSettings(image_size=64, shortcut=("Pneumothorax", 0.9, 0.1))
    drawn_positive, drawn_negative, positives, negatives = 0, 0, 0, 0
    for index in range(250):
        case = generate_case(2, "train", index, settings)
        plain = generate_case(2, "train", index, SMALL)
        assert np.array_equal(case.labels, plain.labels)
        has_drain = "Confounder" in case.masks
        if has_drain:
            assert case.masks["Confounder"].any() and not (case.masks["Confounder"] & ~case.body).any()
        else:
            assert np.array_equal(case.image, plain.image)
        if case.labels[CLASSES.index("Pneumothorax")]:
            positives += 1
            drawn_positive += has_drain
        else:
            negatives += 1
            drawn_negative += has_drain
    assert positives >= 15
    assert drawn_positive / positives > 0.7
    assert drawn_negative / negatives < 0.2


def test_confounder_json_is_written_separately(tmp_path):
    settings = PhantomSettings(image_size=64, shortcut=("Lung Lesion", 1.0, 1.0))
    write_dataset(tmp_path, sizes={"train": 3}, seed=0, settings=settings)
    confounders = json.loads((tmp_path / "CheXlocalize" / "confounder_masks_train.json").read_text())
    segmentations = json.loads((tmp_path / "CheXlocalize" / "gt_segmentations_train.json").read_text())
    for cxr_id, entry in confounders.items():
        assert set(entry) == {"Confounder"} and decode_mask(entry["Confounder"]).any()
        assert "Confounder" not in segmentations[cxr_id]


def test_manifest_short_circuits_reruns(tmp_path):
    sizes = {"train": 3, "valid": 1}
    first = write_dataset(tmp_path, sizes=sizes, seed=0, settings=SMALL)
    assert not first["skipped"] and first["counts"] == {"train": 3, "valid": 1}
    image = tmp_path / DATASET_FOLDER / "train" / "patient00001" / "study1" / "view1_frontal.png"
    stamp = image.stat().st_mtime_ns
    manifest = json.loads((tmp_path / "phantom_manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["settings"]["image_size"] == 64 and manifest["version"]
    assert write_dataset(tmp_path, sizes=sizes, seed=0, settings=SMALL)["skipped"]
    assert image.stat().st_mtime_ns == stamp
    assert not write_dataset(tmp_path, sizes=sizes, seed=1, settings=SMALL)["skipped"]
    assert image.stat().st_mtime_ns != stamp


def test_a_phantom_made_by_other_code_is_generated_again(tmp_path, monkeypatch):
    from shamsul_utils import phantom

    sizes = {"valid": 1}
    assert not write_dataset(tmp_path, sizes=sizes, seed=0, settings=SMALL)["skipped"]
    assert write_dataset(tmp_path, sizes=sizes, seed=0, settings=SMALL)["skipped"]
    monkeypatch.setattr(phantom, "_code_digest", lambda: "edited generator")
    assert not write_dataset(tmp_path, sizes=sizes, seed=0, settings=SMALL)["skipped"]


def test_jpeg_output(tmp_path):
    write_dataset(tmp_path, sizes={"valid": 2}, seed=0, settings=SMALL, image_format="jpg")
    rows = _read_csv(tmp_path / DATASET_FOLDER / "valid.csv")
    assert all(row["Path"].endswith(".jpg") for row in rows)
    assert Image.open(tmp_path / rows[0]["Path"]).format == "JPEG"


def test_bad_settings_are_rejected():
    with pytest.raises(DataError):
        PhantomSettings(shortcut=("Not A Class", 0.5, 0.5))
    with pytest.raises(DataError):
        PhantomSettings(shortcut=("Pneumothorax", 1.5, 0.5))
    with pytest.raises(DataError):
        PhantomSettings(contrast=-1.0)
    with pytest.raises(DataError):
        write_dataset("unused", sizes={"train": 1}, seed=0, image_format="tiff")
