"""Read and write the CheXlocalize formats.

* Segmentation JSON: ``{cxr_id: {task: {"size": [h, w], "counts": <COCO RLE string>}}}``.
* ``cxr_id``: the CheXpert image path without ``.jpg`` and without the leading
  ``CheXpert-v1.0*/`` folder, slashes replaced by underscores
  (``valid/patient64541/study1/view1_frontal.jpg`` -> ``valid_patient64541_study1_view1_frontal``;
  CheXlocalize's own ids start at ``patient...`` because they drop the split as well,
  see :func:`cxr_id_from_path`).
* Task names: CheXlocalize calls CheXpert's "Lung Opacity" "Airspace Opacity"
  (:mod:`shamsul_utils.labels`).

References
----------
Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation.
Nature Machine Intelligence. Code and formats: github.com/rajpurkarlab/cheXlocalize.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools import mask as coco_mask

from .errors import DataError
from .files import atomic_write_text
from .labels import CHEXLOCALIZE_TASK_NAMES, from_chexlocalize_task

__all__ = [
    "cxr_id_from_path",
    "encode_mask",
    "decode_mask",
    "read_segmentations",
    "write_segmentations",
]


def cxr_id_from_path(path: str, *, keep_split: bool = False) -> str:
    """CheXlocalize's image id for a CheXpert ``Path`` value.

    Parameters
    ----------
    path : str
        As in CheXpert's CSV, e.g. ``CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg``.
    keep_split : bool, optional
        CheXlocalize's released files drop the dataset folder and the split
        (``patient64541_study1_view1_frontal``). Patient ids are unique across CheXpert's
        splits, so that is safe there; set ``True`` to keep the split in the id.

    Examples
    --------
    >>> cxr_id_from_path("CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg")
    'patient64541_study1_view1_frontal'
    >>> cxr_id_from_path("test/patient00001/study1/view1_frontal.png", keep_split=True)
    'test_patient00001_study1_view1_frontal'
    """
    parts = list(PurePosixPath(str(path).replace("\\", "/")).with_suffix("").parts)
    for index, part in enumerate(parts):
        if part.startswith("patient"):
            start = index - 1 if keep_split and index > 0 else index
            return "_".join(parts[start:])
    raise DataError(f"{path}: not a CheXpert image path (no 'patientNNNNN' folder in it)")


def encode_mask(mask: np.ndarray) -> dict:
    """COCO run-length encoding of a 2-D binary mask, as CheXlocalize stores it.

    Returns ``{"size": [h, w], "counts": str}``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"mask must be 2-D (h, w), got shape {mask.shape}")
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(encoded["size"][0]), int(encoded["size"][1])], "counts": encoded["counts"].decode("ascii")}


def decode_mask(rle: dict, *, where: str = "segmentation") -> np.ndarray:
    """Decode one CheXlocalize RLE entry to a boolean ``(h, w)`` array."""
    try:
        size = [int(value) for value in rle["size"]]
        counts = rle["counts"]
        counts = counts.encode("ascii") if isinstance(counts, str) else counts
        decoded = coco_mask.decode({"size": size, "counts": counts})
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{where}: not a COCO RLE entry with 'size' and 'counts' ({error})") from None
    if decoded.shape != tuple(size):
        raise DataError(f"{where}: RLE decodes to {decoded.shape}, but its size says {tuple(size)}")
    return decoded.astype(bool)


def read_segmentations(path: str | os.PathLike) -> dict[str, dict[str, dict]]:
    """Read a CheXlocalize segmentation JSON, keeping the RLE entries encoded.

    Returns ``{cxr_id: {chexpert_class_name: rle}}``: task names are translated to
    CheXpert's (``"Airspace Opacity"`` -> ``"Lung Opacity"``) so the rest of the project
    uses one vocabulary. Decode entries with :func:`decode_mask`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: segmentation file not found")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected an object {{cxr_id: {{task: rle}}}} at the top level")
    result: dict[str, dict[str, dict]] = {}
    for cxr_id, tasks in content.items():
        if not isinstance(tasks, dict):
            raise DataError(f"{path}: entry {cxr_id!r} is not an object of tasks")
        converted = {}
        for task, rle in tasks.items():
            try:
                name = from_chexlocalize_task(task)
            except ValueError as error:
                raise DataError(f"{path}: {cxr_id}: {error}") from None
            if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
                raise DataError(f"{path}: {cxr_id}/{task}: not a COCO RLE entry with 'size' and 'counts'")
            converted[name] = rle
        result[cxr_id] = converted
    return result


def write_segmentations(path: str | os.PathLike, masks: dict[str, dict[str, np.ndarray]]) -> None:
    """Write ``{cxr_id: {chexpert_class_name: bool mask}}`` as a CheXlocalize segmentation JSON.

    Every localised task is written for every image (an empty mask where the class is
    absent), as in CheXlocalize's released ground truth. Written atomically.
    """
    content = {}
    for cxr_id, by_class in masks.items():
        shapes = {np.asarray(mask).shape for mask in by_class.values()}
        if len(shapes) > 1:
            raise DataError(f"{cxr_id}: masks of one image differ in size: {sorted(shapes)}")
        shape = shapes.pop() if shapes else None
        entry = {}
        for name, task in CHEXLOCALIZE_TASK_NAMES.items():
            if name in by_class:
                entry[task] = encode_mask(by_class[name])
            elif shape is not None:
                entry[task] = encode_mask(np.zeros(shape, dtype=bool))
        content[cxr_id] = entry
    atomic_write_text(path, json.dumps(content))
