"""One record type for both data worlds, and the readers that fill it.

The phantom (:mod:`shamsul_utils.phantom`) is written to disk in CheXpert's CSV layout and
CheXlocalize's segmentation JSON, so exactly this code reads the embedded default and the
paper's data:

* CheXpert CSV: ``Path, Sex, Age, Frontal/Lateral, AP/PA`` and the 14 label columns with
  1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned). The paper maps
  uncertain and blank to 0 ("U-Zeros", Irvin et al. 2019); ``uncertain="ones"`` maps -1 to 1.
* Images: grayscale JPEG/PNG, replicated to 3 channels, resized (bilinear, antialiased) to the
  model's square input, ImageNet-normalised (as timm's DenseNet121 expects).
* Masks: CheXlocalize JSON, decoded with pycocotools at the image's original size; resized to
  another grid by nearest neighbour when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from .chexlocalize import cxr_id_from_path, decode_mask, read_segmentations
from .config import Profile
from .errors import DataError
from .labels import CLASSES, LOCALIZED_CLASSES
from .models import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "METADATA_COLUMNS",
    "SplitData",
    "read_chexpert_csv",
    "read_split",
    "load_image",
    "load_images",
    "normalize",
    "denormalize",
    "image_size",
    "masks_for",
    "ImageDataset",
    "label_statistics",
    "verify_split_files",
    "select_examples",
]

METADATA_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")


def read_chexpert_csv(csv_path: str | Path, *, image_root: str | Path | None = None,
                      uncertain: str = "zeros", frontal_only: bool = True) -> pd.DataFrame:
    """Read a CheXpert label CSV into one row per image.

    Parameters
    ----------
    csv_path : path
        ``train.csv``/``valid.csv`` of CheXpert, CheXlocalize's ``val_labels.csv``/``test_labels.csv``,
        or a phantom split.
    image_root : path, optional
        The folder ``Path`` values are relative to. Default: found from the first row by trying
        the CSV's folder and its parent, and dropping leading path parts (CheXlocalize's CSVs
        say ``CheXpert-v1.0/valid/...`` while the images sit in ``val/...``).
    uncertain : {"zeros", "ones"}
        Map uncertain (-1) labels to 0 (U-Zeros, the paper) or 1 (U-Ones). Blank is always 0.
    frontal_only : bool
        Keep frontal views only (CheXlocalize localises frontal views).

    Returns
    -------
    pandas.DataFrame
        Columns ``cxr_id``, ``image_path`` (absolute), ``Sex``, ``Age``, ``view`` (AP/PA) and the
        14 classes as float32 0/1, in :data:`CLASSES` order.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: label CSV not found")
    try:
        table = pd.read_csv(csv_path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{csv_path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    missing = [column for column in ("Path", *CLASSES) if column not in table.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)}")
    if uncertain not in ("zeros", "ones"):
        raise ValueError(f"uncertain must be 'zeros' or 'ones', got {uncertain!r}")
    if frontal_only and "Frontal/Lateral" in table.columns:
        table = table[table["Frontal/Lateral"].fillna("Frontal").str.lower() == "frontal"]
    if table.empty:
        raise DataError(f"{csv_path}: no (frontal) images listed")
    labels = table[list(CLASSES)].apply(pd.to_numeric, errors="coerce")
    bad = ~labels.isin([1.0, 0.0, -1.0]) & labels.notna()
    if bad.any().any():
        row, column = np.argwhere(bad.to_numpy())[0]
        raise DataError(f"{csv_path}: row {row + 2}, column {CLASSES[column]!r}: "
                        f"label {table.iloc[row][CLASSES[column]]!r} is not 1, 0, -1 or blank")
    labels = labels.fillna(0.0).replace(-1.0, 1.0 if uncertain == "ones" else 0.0).astype(np.float32)
    if image_root is not None:
        root, drop = Path(image_root), 0
    else:
        root, drop = _find_image_root(csv_path, table["Path"].iloc[0])
    paths = [root / "/".join(value.replace("\\", "/").split("/")[drop:]) for value in table["Path"]]
    result = pd.DataFrame({
        "cxr_id": [cxr_id_from_path(value) for value in table["Path"]],
        "image_path": [str(path) for path in paths],
        "Sex": table.get("Sex", pd.Series(["Unknown"] * len(table))).fillna("Unknown").to_numpy(),
        "Age": pd.to_numeric(table.get("Age", pd.Series([np.nan] * len(table))), errors="coerce").to_numpy(),
        "view": table.get("AP/PA", pd.Series([""] * len(table))).fillna("").to_numpy(),
    })
    for name in CLASSES:
        result[name] = labels[name].to_numpy()
    duplicated = result["cxr_id"].duplicated()
    if duplicated.any():
        raise DataError(f"{csv_path}: image id {result['cxr_id'][duplicated].iloc[0]!r} is listed twice")
    return result.reset_index(drop=True)


def _find_image_root(csv_path: Path, first: str) -> tuple[Path, int]:
    """The folder image paths are relative to, and how many leading parts of ``Path`` to drop."""
    parts = first.replace("\\", "/").split("/")
    for folder in (csv_path.parent, csv_path.parent.parent):
        for drop in range(len(parts)):
            if (folder / "/".join(parts[drop:])).is_file():
                return folder, drop
    raise DataError(f"{csv_path}: image of the first row ({first}) not found under {csv_path.parent} "
                    f"or {csv_path.parent.parent}")


@dataclass
class SplitData:
    """One split: its label table, and its CheXlocalize masks where the split has them."""

    name: str
    table: pd.DataFrame
    segmentations: dict[str, dict[str, dict]] | None

    @property
    def labels(self) -> np.ndarray:
        """float32 [N, 14] in :data:`CLASSES` order."""
        return self.table[list(CLASSES)].to_numpy(np.float32)

    def __len__(self) -> int:
        return len(self.table)


def read_split(profile: Profile, split: str) -> SplitData:
    """Read one split (``train``, ``valid`` or ``test``) of a profile's data."""
    settings = profile.data.splits[split]
    root = profile.data_root
    if settings.from_train_fraction > 0:
        table = _carve_from_train(profile, settings.from_train_fraction, keep=True)
    else:
        table = read_chexpert_csv(root / settings.csv, uncertain=profile.data.uncertain,
                                  frontal_only=profile.data.frontal_only)
        if split == "train":
            carve = profile.data.splits["valid"].from_train_fraction
            if carve > 0:
                table = _carve_from_train(profile, carve, keep=False, table=table)
    cap = profile.data.max_images.get(split, 0)
    if cap:
        table = table.iloc[:cap].reset_index(drop=True)
    segmentations = read_segmentations(root / settings.segmentations) if settings.segmentations else None
    if segmentations is not None:
        unknown = set(table["cxr_id"]) - set(segmentations)
        if len(unknown) == len(table):
            raise DataError(f"{root / settings.segmentations}: none of the {len(table)} images of "
                            f"split {split!r} has an entry (ids like {table['cxr_id'].iloc[0]!r})")
    return SplitData(split, table, segmentations)


def _carve_from_train(profile: Profile, fraction: float, *, keep: bool, table: pd.DataFrame | None = None):
    """A seeded patient-level split of CheXpert's train CSV (validation = ``keep``)."""
    if table is None:
        table = read_chexpert_csv(profile.data_root / profile.data.splits["train"].csv,
                                  uncertain=profile.data.uncertain, frontal_only=profile.data.frontal_only)
    patients = table["cxr_id"].str.split("_").str[0]
    unique = np.sort(patients.unique())
    rng = np.random.default_rng(profile.seed)
    chosen = set(rng.choice(unique, size=max(1, int(round(fraction * len(unique)))), replace=False))
    selected = patients.isin(chosen).to_numpy()
    return table[selected if keep else ~selected].reset_index(drop=True)


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Read a grayscale radiograph as uint8 ``[H, W]``, resized to ``size x size`` when given."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            image.load()
            gray = image.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(f"{path}: unreadable image ({error.__class__.__name__}: {error})") from None
    if size is not None and gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(gray, dtype=np.uint8)


def load_images(paths: Sequence[str | Path], size: int) -> np.ndarray:
    """uint8 ``[N, size, size]`` for many images."""
    return np.stack([load_image(path, size) for path in paths]) if len(paths) else np.zeros((0, size, size), np.uint8)


def normalize(gray: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., H, W]`` grayscale to float ``[..., 3, H, W]``, ImageNet-normalised."""
    if isinstance(gray, torch.Tensor):
        tensor = gray.to(torch.float32) / 255.0
    else:
        tensor = torch.from_numpy(np.asarray(gray, dtype=np.float32) / np.float32(255.0))
    tensor = tensor.unsqueeze(-3).expand(*tensor.shape[:-2], 3, *tensor.shape[-2:])
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((tensor - mean) / std).contiguous()


def denormalize(images: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised ``[..., 3, H, W]`` back to float ``[..., H, W]`` in [0, 1] (first channel)."""
    mean, std = IMAGENET_MEAN[0], IMAGENET_STD[0]
    return (images[..., 0, :, :].detach().cpu().numpy() * std + mean).clip(0, 1)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, read from its header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: unreadable image ({error.__class__.__name__})") from None
    return height, width


def masks_for(split: SplitData, cxr_ids: Sequence[str], *, size: int | None = None,
              classes: Sequence[str] = LOCALIZED_CLASSES, check_image_size: bool = True) -> np.ndarray:
    """Ground-truth masks, bool ``[N, len(classes), h, w]``.

    At the images' original size (all must agree) or, with ``size``, resized by nearest
    neighbour to ``size x size``. A class without an entry is an empty mask. With
    ``check_image_size``, a mask whose size differs from its image's is an error.
    """
    paths = dict(zip(split.table["cxr_id"], split.table["image_path"], strict=True))
    if split.segmentations is None:
        raise DataError(f"split {split.name!r} has no segmentations in this profile")
    stacks = []
    for cxr_id in cxr_ids:
        entry = split.segmentations.get(cxr_id)
        if entry is None:
            raise DataError(f"image {cxr_id!r} has no entry in the segmentations of split {split.name!r}")
        decoded = {name: decode_mask(rle, where=f"{cxr_id}/{name}") for name, rle in entry.items()}
        shapes = {mask.shape for mask in decoded.values()}
        if len(shapes) != 1:
            raise DataError(f"{cxr_id}: masks of one image differ in size: {sorted(shapes)}")
        shape = shapes.pop()
        if check_image_size and cxr_id in paths and image_size(paths[cxr_id]) != shape:
            raise DataError(f"{cxr_id}: mask size {shape} differs from its image's {image_size(paths[cxr_id])} "
                            f"({paths[cxr_id]})")
        per_class = np.stack([decoded.get(name, np.zeros(shape, bool)) for name in classes])
        if size is not None and shape != (size, size):
            rows = (np.arange(size) * shape[0] / size).astype(int)
            columns = (np.arange(size) * shape[1] / size).astype(int)
            per_class = per_class[:, rows][:, :, columns]
        stacks.append(per_class)
    sizes = {mask.shape for mask in stacks}
    if len(sizes) > 1:
        raise DataError(f"masks differ in size {sorted(sizes)}: pass size= to put them on one grid")
    return np.stack(stacks) if stacks else np.zeros((0, len(classes), size or 0, size or 0), bool)


class ImageDataset(torch.utils.data.Dataset):
    """Images and labels of a split for training and prediction.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`read_chexpert_csv`.
    size : int
        Model input size.
    augment_shift : float
        Random translation (fraction of the size, zero padding) during training.
    horizontal_flip : bool
        Random left-right flips. Off by default: the heart sits on the patient's left, so a
        flipped radiograph is dextrocardia, an anatomy the test set does not contain.
    seed : int
        Seeds the augmentation per item and epoch (set ``epoch`` before each epoch).
    """

    def __init__(self, table: pd.DataFrame, size: int, *, augment_shift: float = 0.0,
                 horizontal_flip: bool = False, seed: int = 0):
        self.paths = table["image_path"].tolist()
        self.labels = torch.as_tensor(table[list(CLASSES)].to_numpy(np.float32))
        self.size = size
        self.augment_shift = augment_shift
        self.horizontal_flip = horizontal_flip
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        gray = load_image(self.paths[index], self.size)
        if self.augment_shift > 0 or self.horizontal_flip:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            if self.augment_shift > 0:
                limit = int(round(self.augment_shift * self.size))
                dy, dx = (int(value) for value in rng.integers(-limit, limit + 1, size=2))
                shifted = np.zeros_like(gray)
                shifted[max(dy, 0):self.size + min(dy, 0), max(dx, 0):self.size + min(dx, 0)] = \
                    gray[max(-dy, 0):self.size + min(-dy, 0), max(-dx, 0):self.size + min(-dx, 0)]
                gray = shifted
            if self.horizontal_flip and rng.random() < 0.5:
                gray = gray[:, ::-1]
        return normalize(np.ascontiguousarray(gray)), self.labels[index]


def label_statistics(split: SplitData) -> pd.DataFrame:
    """Per class: positives, prevalence, and how many positives are single- vs multi-label.

    "Single-label" means the image has exactly one positive class besides No Finding (as in the
    paper's single- vs multi-label analysis).
    """
    labels = split.labels
    findings = labels[:, 1:].sum(1)
    rows = []
    for index, name in enumerate(CLASSES):
        positive = labels[:, index] == 1
        rows.append({"class": name, "localised": name in LOCALIZED_CLASSES, "positives": int(positive.sum()),
                     "prevalence": float(positive.mean()),
                     "single_label": int((positive & (findings == 1)).sum()) if index else int(positive.sum()),
                     "multi_label": int((positive & (findings > 1)).sum()) if index else 0})
    table = pd.DataFrame(rows)
    table.attrs["images"] = len(split)
    return table


def verify_split_files(split: SplitData, *, sample: int = 0) -> dict:
    """Check that every image of a split exists (and, for ``sample`` of them, decodes and fits its masks).

    Returns a summary dict; raises :class:`DataError` on the first problem, naming the file.
    """
    missing = [path for path in split.table["image_path"] if not Path(path).is_file()]
    if missing:
        raise DataError(f"{missing[0]}: image not found ({len(missing)} of {len(split)} images of split "
                        f"{split.name!r} are missing)")
    checked = split.table.iloc[:sample] if sample else split.table.iloc[:0]
    for path in checked["image_path"]:
        load_image(path)
    if split.segmentations is not None and sample:
        with_masks = [cxr_id for cxr_id in checked["cxr_id"] if cxr_id in split.segmentations]
        for cxr_id in with_masks:
            masks_for(split, [cxr_id])
    return {"split": split.name, "images": len(split), "checked": len(checked),
            "with_masks": 0 if split.segmentations is None else int(split.table["cxr_id"].isin(split.segmentations).sum())}


def select_examples(split: SplitData, *, per_class: int = 2, seed: int = 0,
                    classes: Sequence[str] = LOCALIZED_CLASSES, total: int | None = None) -> list[int]:
    """Row indices of a stratified, seeded set of images: single- and multi-label positives per class.

    For each class in turn, about half of ``per_class`` images are single-label positives and the
    rest multi-label positives (fewer where the split has fewer), without repeats. With ``total``,
    the set is then filled with random other images (negatives included) or cut to that size.
    This is the explanation set of notebooks 03-06 and the gallery of notebook 01.
    """
    labels = split.labels
    findings = labels[:, 1:].sum(1)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for name in classes:
        positive = labels[:, CLASSES.index(name)] == 1
        for kind, count in (("single", (per_class + 1) // 2), ("multi", per_class // 2)):
            pool = np.flatnonzero(positive & ((findings == 1) if kind == "single" else (findings > 1)))
            pool = [int(index) for index in rng.permutation(pool) if index not in chosen]
            chosen.extend(pool[:count])
    if total is not None:
        if len(chosen) > total:
            chosen = chosen[:total]
        rest = [int(index) for index in rng.permutation(len(split)) if index not in chosen]
        chosen.extend(rest[:max(0, total - len(chosen))])
    return chosen
