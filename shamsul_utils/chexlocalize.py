"""Read and write the CheXlocalize formats.

* Segmentation JSON: ``{cxr_id: {task: {"size": [h, w], "counts": <COCO RLE string>}}}``.
* ``cxr_id``: the CheXpert image path without ``.jpg`` and without the leading
  ``CheXpert-v1.0*/`` folder, slashes replaced by underscores
  (``valid/patient64541/study1/view1_frontal.jpg`` -> ``valid_patient64541_study1_view1_frontal``;
  CheXlocalize's own ids start at ``patient...`` because they drop the split as well,
  see :func:`cxr_id_from_path`).
* Task names: CheXlocalize calls CheXpert's "Lung Opacity" "Airspace Opacity"
  (:mod:`shamsul_utils.labels`).
* Heatmap pickle, one per image and task, ``<cxr_id>_<Task>_map.pkl``: a dict with ``map``
  (float tensor ``1 x 1 x h x w``), ``prob`` (float), ``task`` (task name), ``gt`` (0/1 label),
  ``cxr_img`` (the image, tensor ``3 x H x W``) and ``cxr_dims`` = **(W, H)** of the original
  image (CheXlocalize's README and ``heatmap_to_segmentation.py``, which resizes the map with
  ``size=(cxr_dims[1], cxr_dims[0])``).

References
----------
Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation.
Nature Machine Intelligence. Code and formats: github.com/rajpurkarlab/cheXlocalize.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
import torch
from pycocotools import mask as coco_mask

from .errors import DataError
from .files import atomic_write_bytes, atomic_write_text
from .labels import CHEXLOCALIZE_TASK_NAMES, CLASSES, LOCALIZED_CLASSES, from_chexlocalize_task

__all__ = [
    "cxr_id_from_path",
    "encode_mask",
    "decode_mask",
    "check_rle",
    "rle_counts",
    "MAX_MASK_SIDE",
    "MAX_MASK_PIXELS",
    "read_segmentations",
    "write_segmentations",
    "export_segmentations",
    "HEATMAP_PKL_KEYS",
    "HeatmapEntry",
    "heatmap_pkl_name",
    "export_heatmap_pkls",
    "import_heatmap_pkls",
]

# The keys of CheXlocalize's heatmap pickles, as documented in its README.
HEATMAP_PKL_KEYS: tuple[str, ...] = ("map", "prob", "task", "gt", "cxr_img", "cxr_dims")
_REQUIRED_PKL_KEYS = ("map", "prob", "cxr_dims")  # what CheXlocalize's scripts read


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
    return {
        "size": [int(encoded["size"][0]), int(encoded["size"][1])],
        "counts": encoded["counts"].decode("ascii"),
    }


# The largest mask accepted (CheXpert's originals are at most about 4000 px a side): bounds checked
# before anything is allocated, so that a crafted "size" or map shape cannot ask for gigabytes. At
# the limit one image's 10 masks take 168 MB and one map resized to them 67 MB.
MAX_MASK_SIDE = 8192
MAX_MASK_PIXELS = 1 << 24  # 4096 x 4096


def rle_counts(counts: str | bytes) -> list[int]:
    """The run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``, in Python).

    Runs alternate background / foreground, starting with background. Used to check an entry
    before pycocotools decodes it (which does not check that the runs fill the mask).

    Examples
    --------
    >>> rle_counts(encode_mask(np.array([[0, 1], [1, 1]], bool))["counts"])
    [1, 3]
    """
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    codes = np.frombuffer(data, dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return []
    if codes.min() < 0 or codes.max() >= 64:
        raise ValueError("a character is not in the RLE alphabet")
    last = (codes & 0x20) == 0  # the last character of each run length
    if not last[-1]:
        raise ValueError("truncated run length")
    starts = np.concatenate([[0], np.flatnonzero(last)[:-1] + 1])
    lengths = np.flatnonzero(last) + 1 - starts
    if lengths.max() > 12:
        raise ValueError("a run length is too long")
    place = np.arange(codes.size) - np.repeat(starts, lengths)  # 5-bit digit number within its run
    values = np.add.reduceat((codes & 0x1F) << (5 * place), starts)
    negative = (codes[last] & 0x10) != 0
    values = np.where(negative, values - (np.int64(1) << (5 * lengths)), values)
    # from the fourth run on, each is stored as the difference to the run two before it
    runs = values.copy()
    for parity in (1, 2):
        runs[parity::2] = np.cumsum(values[parity::2])
    return runs.tolist()


def check_rle(rle: dict, *, where: str = "segmentation") -> tuple[tuple[int, int], list[int]]:
    """``(size, run lengths)`` of one RLE entry, or a one-line :class:`DataError`: the size must be
    two integers in ``[1, MAX_MASK_SIDE]`` with at most ``MAX_MASK_PIXELS`` pixels, ``counts`` a
    COCO string or a list of integers, and the runs non-negative, summing to ``h x w``. Nothing
    larger than the entry itself is allocated before the size is checked."""
    try:
        size = tuple(int(value) for value in rle["size"])
        counts = rle["counts"]
        if not isinstance(counts, (str, bytes, list)):  # bytes(2e8) would allocate 200 MB of zeros
            raise TypeError(f"counts is a {type(counts).__name__}, not a string or a list")
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise DataError(f"{where}: not a COCO RLE entry with 'size' and 'counts' ({error})") from None
    if len(size) != 2 or not all(1 <= side <= MAX_MASK_SIDE for side in size) or size[0] * size[1] > MAX_MASK_PIXELS:
        raise DataError(f"{where}: RLE size {list(size)} is not [h, w] with sides from 1 to {MAX_MASK_SIDE} and "
                        f"at most {MAX_MASK_PIXELS} pixels")
    try:
        runs = [int(value) for value in counts] if isinstance(counts, list) else rle_counts(counts)
    except (TypeError, ValueError, OverflowError) as error:
        raise DataError(f"{where}: not a COCO RLE entry with 'size' and 'counts' ({error})") from None
    if any(run < 0 for run in runs) or sum(runs) != size[0] * size[1]:
        raise DataError(f"{where}: RLE runs sum to {sum(runs)} pixels (or are negative), but its size "
                        f"{size[0]} x {size[1]} has {size[0] * size[1]}")
    return size, runs


def decode_mask(rle: dict, *, where: str = "segmentation") -> np.ndarray:
    """Decode one CheXlocalize RLE entry to a boolean ``(h, w)`` array (checked by :func:`check_rle` first)."""
    size, _ = check_rle(rle, where=where)
    counts = rle["counts"]
    if isinstance(counts, list):
        encoded = coco_mask.frPyObjects({"size": list(size), "counts": counts}, *size)
    else:
        encoded = {"size": list(size), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    decoded = coco_mask.decode(encoded)
    if decoded.shape != size:
        raise DataError(f"{where}: RLE decodes to {decoded.shape}, but its size says {size}")
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


def export_segmentations(
    path: str | os.PathLike, masks, cxr_ids: Sequence[str], class_names: Sequence[str]
) -> None:
    """Write predicted masks ``[N, C, H, W]`` (or a list of ``[C, H_n, W_n]``) as CheXlocalize JSON.

    Only CheXlocalize's 10 localised classes among ``class_names`` are written (the others are
    ignored); missing localised tasks get empty masks (:func:`write_segmentations`).
    """
    if len(masks) != len(cxr_ids):
        raise DataError(f"{len(masks)} mask sets for {len(cxr_ids)} cxr_ids")
    chosen = [(index, name) for index, name in enumerate(class_names) if name in LOCALIZED_CLASSES]
    content = {}
    for cxr_id, per_image in zip(cxr_ids, masks, strict=True):
        if len(per_image) != len(class_names):
            raise DataError(f"{cxr_id}: {len(per_image)} masks for {len(class_names)} class names")
        content[cxr_id] = {name: np.asarray(per_image[index], dtype=bool) for index, name in chosen}
    write_segmentations(path, content)


class HeatmapEntry(NamedTuple):
    """One heatmap read back by :func:`import_heatmap_pkls`."""

    map: np.ndarray  # float32 (h, w), at the resolution it was stored
    probability: float
    size: tuple[int, int]  # original image (H, W): CheXlocalize's cxr_dims (W, H), swapped
    label: int | None  # the pickle's "gt"


def heatmap_pkl_name(cxr_id: str, class_name: str) -> str:
    """``<cxr_id>_<Task>_map.pkl``, with CheXlocalize's task name ("Airspace Opacity" for Lung Opacity)."""
    return f"{cxr_id}_{_task_name(class_name)}_map.pkl"


def _task_name(class_name: str) -> str:
    """CheXlocalize's task name for a localised class, the name itself otherwise."""
    return CHEXLOCALIZE_TASK_NAMES.get(class_name, class_name)


def _as_tensor(value, shape: tuple[int, ...]) -> torch.Tensor:
    # A fresh, contiguous tensor: pickling a view would store the whole underlying buffer.
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return torch.tensor(np.array(array, dtype=np.float32).reshape(shape))


def export_heatmap_pkls(
    folder: str | os.PathLike,
    heatmaps,
    cxr_ids: Sequence[str],
    class_names: Sequence[str],
    probabilities,
    *,
    images=None,
    original_sizes: Sequence[tuple[int, int]] | None = None,
    labels=None,
) -> list[Path]:
    """Write one CheXlocalize heatmap pickle per image and localised class.

    Parameters
    ----------
    folder : path-like
    heatmaps : array-like or Tensor, shape (N, C, h, w)
        Stored as they are (CheXlocalize resizes them to ``cxr_dims`` when segmenting).
    cxr_ids : sequence of str, length N
    class_names : sequence of str, length C
        CheXpert names; only the 10 localised classes are written (CheXlocalize's scripts skip
        other tasks), under CheXlocalize's task names.
    probabilities : array-like, shape (N, C)
    images : Tensor, array (N, 3, H, W) or list of (3, H_n, W_n), optional
        Stored as ``cxr_img`` (float32); ``None`` stores ``cxr_img=None``.
    original_sizes : sequence of (H, W), optional
        Size of each original image, i.e. of its ground-truth masks; default the image's size.
        Stored as ``cxr_dims = (W, H)``. One of ``images`` and ``original_sizes`` is required.
    labels : array-like of {0, 1}, shape (N, C), optional
        Stored as ``gt`` (int); ``None`` stores ``gt=None``.

    Returns
    -------
    list of Path
        The files written (atomically).
    """
    maps = heatmaps.detach().cpu().numpy() if isinstance(heatmaps, torch.Tensor) else np.asarray(heatmaps)
    probs = np.asarray(probabilities, dtype=float)
    count = len(cxr_ids)
    if maps.ndim != 4 or maps.shape[:2] != (count, len(class_names)) or probs.shape != maps.shape[:2]:
        raise DataError(
            f"heatmaps {maps.shape} and probabilities {probs.shape} must be (N={count}, C={len(class_names)}, ...)"
        )
    if images is None and original_sizes is None:
        raise DataError("export_heatmap_pkls needs images or original_sizes (for cxr_dims)")
    if images is not None and len(images) != count:
        raise DataError(f"{len(images)} images for {count} cxr_ids")
    if original_sizes is not None and len(original_sizes) != count:
        raise DataError(f"{len(original_sizes)} original sizes for {count} cxr_ids")
    folder = Path(folder)
    written = []
    for n, cxr_id in enumerate(cxr_ids):
        image = None
        if images is not None:
            image = images[n]
            image = _as_tensor(image, tuple(image.shape))
            if image.ndim != 3:
                raise DataError(f"{cxr_id}: image must be (3, H, W), got {tuple(image.shape)}")
        height, width = original_sizes[n] if original_sizes is not None else tuple(image.shape[-2:])
        for c, name in enumerate(class_names):
            if name not in LOCALIZED_CLASSES:
                continue
            content = {
                "map": _as_tensor(maps[n, c], (1, 1, *maps.shape[-2:])),
                "prob": float(probs[n, c]),
                "task": _task_name(name),
                "gt": None if labels is None else int(np.asarray(labels)[n, c]),
                "cxr_img": image,
                "cxr_dims": (int(width), int(height)),
            }
            path = folder / heatmap_pkl_name(cxr_id, name)
            atomic_write_bytes(path, pickle.dumps(content))
            written.append(path)
    return written


def _probability(value, name: str, path: Path) -> float:
    """A pkl's ``prob`` (or ``gt``): a number, a one-element tensor, or a 14-vector in CheXpert's class
    order (CheXlocalize writes the task's own value; some pipelines store the model's whole output)."""
    try:
        if isinstance(value, torch.Tensor):
            if value.numel() > len(CLASSES):  # checked before a copy (a zero-stride tensor claims any size)
                raise ValueError(f"{value.numel()} values")
            value = value.detach().cpu().numpy()
        flat = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: prob/gt of {name} must be a number or {len(CLASSES)} numbers; "
                        f"got {type(value).__name__} ({error})") from None
    if flat.size == 1:
        return float(flat[0])
    if flat.size == len(CLASSES):
        return float(flat[CLASSES.index(name)])
    raise DataError(f"{path}: prob/gt has {flat.size} values; expected one, or {len(CLASSES)} in CheXpert's order")


def _storage_from_bytes(data: bytes):
    """A tensor storage pickled inside a heatmap pkl, read with ``weights_only=True`` onto the CPU."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# What a CheXlocalize heatmap pickle may name: tensors, numpy arrays and scalars, plain containers.
_PKL_GLOBALS = {
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("collections", "OrderedDict"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only tensors, numpy arrays and plain containers (no code from the file runs);
    tensors saved on a GPU load onto the CPU (as CheXlocalize's ``CPU_Unpickler``)."""

    def find_class(self, module, name):
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _storage_from_bytes
        if (module, name) in _PKL_GLOBALS or (module == "torch" and name.endswith("Storage")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a heatmap pickle does not need; not loaded")


def import_heatmap_pkls(folder: str | os.PathLike) -> dict[str, dict[str, HeatmapEntry]]:
    """Read every ``*_map.pkl`` under ``folder`` (recursively), CheXlocalize's or ours.

    Returns ``{cxr_id: {chexpert_class_name: HeatmapEntry(map (h, w), probability, size (H, W),
    label)}}``; ``size`` is ``cxr_dims`` converted from CheXlocalize's (W, H) to (H, W). The image
    id and task come from the file name, as in CheXlocalize (``<cxr_id>_<Task>_map.pkl``).

    Notes
    -----
    Read through a restricted unpickler: tensors, numpy arrays and scalars, and plain containers
    only (nested tensor storages with ``torch.load(weights_only=True)``); a pickle that names
    anything else is refused with one line, before any of it runs.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: heatmap folder not found")
    result: dict[str, dict[str, HeatmapEntry]] = {}
    for path in sorted(folder.rglob("*_map.pkl")):
        parts = path.name[: -len("_map.pkl")].rsplit("_", 1)
        if len(parts) != 2:
            raise DataError(f"{path}: name is not <cxr_id>_<Task>_map.pkl")
        cxr_id, task = parts
        name = from_chexlocalize_task(task) if task in CHEXLOCALIZE_TASK_NAMES.values() else task
        if name not in CLASSES:
            raise DataError(f"{path}: unknown task {task!r}")
        try:
            with open(path, "rb") as handle:
                content = _SafeUnpickler(handle).load()
        except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad file
            raise DataError(
                f"{path}: not a readable heatmap pickle ({type(error).__name__}: {error})"
            ) from None
        if not isinstance(content, dict):
            raise DataError(f"{path}: expected a dict with keys {', '.join(HEATMAP_PKL_KEYS)}")
        missing = [key for key in _REQUIRED_PKL_KEYS if key not in content]
        if missing:
            raise DataError(f"{path}: missing key(s) {', '.join(missing)}")
        if "task" in content and content["task"] != task:
            raise DataError(f"{path}: file name says task {task!r}, the pickle says {content['task']!r}")
        heatmap, dims = _checked_map(content["map"], content["cxr_dims"], path)
        label = content.get("gt")
        by_class = result.setdefault(cxr_id, {})
        if name in by_class:
            raise DataError(f"{path}: a second heatmap for {cxr_id} / {task}")
        by_class[name] = HeatmapEntry(
            heatmap, _probability(content["prob"], name, path), (dims[1], dims[0]),
            None if label is None else int(_probability(label, name, path)),
        )
    return result


def _checked_map(value, cxr_dims, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """A pkl's ``map`` as float32 ``(h, w)`` and its ``cxr_dims`` ``(w, h)``, or one line naming the
    file. The declared shape is checked before anything is copied: a tensor with zero strides
    can claim a map of any size in a few hundred bytes."""
    try:
        dims = tuple(int(item) for item in cxr_dims)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: cxr_dims must be two integers (w, h); got {cxr_dims!r}") from None
    if len(dims) != 2 or not all(1 <= side <= MAX_MASK_SIDE for side in dims) or dims[0] * dims[1] > MAX_MASK_PIXELS:
        raise DataError(f"{path}: cxr_dims {dims} is not (w, h) with sides from 1 to {MAX_MASK_SIDE} and at most "
                        f"{MAX_MASK_PIXELS} pixels")
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise DataError(f"{path}: map is a {type(value).__name__}; expected a 1 x 1 x h x w tensor or array")
    shape = tuple(value.shape)
    if len(shape) < 2 or int(np.prod(shape[:-2], dtype=np.int64)) != 1 or shape[-2] * shape[-1] > MAX_MASK_PIXELS:
        raise DataError(f"{path}: map must be 1 x 1 x h x w with at most {MAX_MASK_PIXELS} pixels; got {shape}")
    if isinstance(value, torch.Tensor):
        if value.is_complex() or not (value.is_floating_point() or value.dtype in (torch.uint8, torch.int8, torch.int16,
                                                                                    torch.int32, torch.int64, torch.bool)):
            raise DataError(f"{path}: map of dtype {value.dtype}; expected numbers")
        heatmap = value.detach().cpu().reshape(shape[-2:]).to(torch.float32).numpy()
    else:
        if value.dtype.kind not in "biuf":
            raise DataError(f"{path}: map of dtype {value.dtype}; expected numbers")
        heatmap = value.reshape(shape[-2:]).astype(np.float32)
    return heatmap, dims
