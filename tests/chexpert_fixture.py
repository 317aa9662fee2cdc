"""A tiny directory in the exact published CheXpert + CheXlocalize layout, built by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from shamsul_utils.chexlocalize import encode_mask
from shamsul_utils.labels import CLASSES

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CLASSES]


def _row(path, sex, age, view, projection, labels):
    values = {name: "" for name in CLASSES}
    values.update(labels)
    return [path, sex, str(age), view, projection, *[str(values[name]) for name in CLASSES]]


def build_chexpert_fixture(root: Path, *, size=(48, 40), seed: int = 0, layout: str = "same",
                           sizes=None, short_side: int = 32) -> dict:
    """Write CheXpert's ``{train,valid}.csv`` with JPEG images, and CheXlocalize masks.

    Images are non-square (``size`` = (width, height) of the originals, or ``sizes``, a list of
    them used in turn); the valid CSV holds an uncertain label (-1.0), blanks, and a lateral view;
    masks are only for valid, keyed by CheXlocalize ids and task names ("Airspace Opacity"),
    always at the originals' size. ``layout``:

    * ``"same"``: ``CheXpert-v1.0-small/`` with images at the masks' size;
    * ``"small"``: ``CheXpert-v1.0-small/`` with JPEGs downscaled to a short side of
      ``short_side`` px, as the published small set is (320 px there);
    * ``"full"``: ``CheXpert-v1.0/`` with the originals.
    """
    rng = np.random.default_rng(seed)
    folder = "CheXpert-v1.0" if layout == "full" else "CheXpert-v1.0-small"
    sizes = list(sizes) if sizes is not None else [size]
    dataset = root / folder
    rows = {"train": [], "valid": []}
    masks = {}
    patient = 0
    for split, count in (("train", 12), ("valid", 4)):
        for index in range(count):
            patient += 1
            width, height = sizes[patient % len(sizes)]
            relative = f"{folder}/{split}/patient{patient:05d}/study1/view1_frontal.jpg"
            labels = {"Cardiomegaly": float(index % 2), "Lung Opacity": 1.0 if index % 3 == 0 else 0.0,
                      "Support Devices": 1.0 if index % 4 == 1 else ""}
            if split == "valid" and index == 2:
                labels["Edema"] = -1.0  # uncertain
            labels["No Finding"] = 1.0 if not any(value == 1.0 for value in labels.values()) else ""
            rows[split].append(_row(relative, "Female" if index % 2 else "Male", 40 + index, "Frontal", "AP", labels))
            image = Image.fromarray((rng.random((height, width)) * 255).astype(np.uint8))
            if layout == "small":
                scale = short_side / min(width, height)
                image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / relative, quality=95)
            if split == "valid":
                cxr_id = f"patient{patient:05d}_study1_view1_frontal"
                heart = np.zeros((height, width), bool)
                heart[height // 2:, width // 3: 2 * width // 3] = labels["Cardiomegaly"] == 1.0
                opacity = np.zeros((height, width), bool)
                opacity[5:15, 5:20] = labels["Lung Opacity"] == 1.0
                masks[cxr_id] = {"Cardiomegaly": encode_mask(heart), "Airspace Opacity": encode_mask(opacity)}
        if split == "valid":
            lateral = f"{folder}/valid/patient{patient:05d}/study1/view2_lateral.jpg"
            rows[split].append(_row(lateral, "Male", 50, "Lateral", "", {"Cardiomegaly": 1.0}))
            Image.fromarray((rng.random((height, width)) * 255).astype(np.uint8)).save(root / lateral)
    for split, split_rows in rows.items():
        lines = [",".join(HEADER)] + [",".join(row) for row in split_rows]
        (dataset / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (root / "CheXlocalize").mkdir(exist_ok=True)
    (root / "CheXlocalize" / "gt_segmentations_val.json").write_text(json.dumps(masks))
    return {"root": root, "size": size, "sizes": sizes, "masks": masks, "folder": folder}
