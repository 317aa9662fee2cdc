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
  another grid by nearest neighbour only when asked (for display). The image on disk may be a
  downscaled copy of the original (``CheXpert-v1.0-small``: short side 320 px, while CheXlocalize's
  masks are at full size); :class:`ExpertMasks` serves the masks one image at a time, at the
  original size, which is where the study scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from .chexlocalize import check_rle, cxr_id_from_path, decode_mask, read_segmentations
from .config import Profile
from .errors import DataError
from .labels import CLASSES, LOCALIZED_CLASSES
from .models import normalize

__all__ = [
    "to_gray8",
    "METADATA_COLUMNS",
    "CHEXPERT_FOLDERS",
    "chexpert_folder",
    "data_path",
    "SplitData",
    "read_chexpert_csv",
    "read_split",
    "load_image",
    "load_images",
    "normalize",
    "image_size",
    "masks_for",
    "ExpertMasks",
    "describe_sizes",
    "same_picture",
    "ImageDataset",
    "label_statistics",
    "verify_split_files",
    "select_examples",
    "resize_nearest",
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
        # labels as written: no TRUE -> 1, and only an empty cell is blank ("NULL", "N/A", "nan" are refused)
        table = pd.read_csv(csv_path, dtype={name: str for name in CLASSES}, keep_default_na=False, na_values=[""])
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
    raw = table[list(CLASSES)]
    labels = raw.apply(pd.to_numeric, errors="coerce")
    blank = raw.isna() | raw.astype(str).apply(lambda column: column.str.strip() == "")
    # not a number ("yes", "TRUE", "1,0") or a number other than 1, 0, -1: never read as 0
    bad = ~blank & (labels.isna() | ~labels.isin([1.0, 0.0, -1.0]))
    if bad.any().any():
        row, column = np.argwhere(bad.to_numpy())[0]
        line = int(table.index[row]) + 2  # the file's line: the header is line 1, lateral rows count too
        raise DataError(f"{csv_path}: line {line}, column {CLASSES[column]!r}: label {str(raw.iloc[row, column])!r} "
                        f"is not 1, 0, -1 or blank ({int(bad.to_numpy().sum())} such values)")
    labels = labels.fillna(0.0).replace(-1.0, 1.0 if uncertain == "ones" else 0.0).astype(np.float32)
    paths_given = table["Path"].astype(str).str.replace("\\", "/", regex=False)
    escaping = paths_given.str.startswith("/") | paths_given.str.match(r"^[A-Za-z]:") | paths_given.str.contains(
        r"(?:^|/)\.\.(?:/|$)")
    if escaping.any():
        raise DataError(f"{csv_path}: line {int(table.index[np.argmax(escaping.to_numpy())]) + 2}: image path "
                        f"{paths_given[escaping].iloc[0]!r} is absolute or leaves the data folder ('..'); "
                        f"paths are relative to it ({int(escaping.sum())} such rows)")
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


# CheXpert's two published layouts: downscaled JPEGs (short side 320 px, ~11 GB) and the originals.
CHEXPERT_FOLDERS: tuple[str, ...] = ("CheXpert-v1.0-small", "CheXpert-v1.0")


def chexpert_folder(profile: Profile) -> str:
    """The CheXpert folder under ``data.root`` that ``{chexpert}`` in a profile's paths stands for.

    ``data.chexpert_folder: auto`` takes ``CheXpert-v1.0-small`` when present (faster to read;
    scores are computed at the original size either way, from CheXlocalize's masks), else
    ``CheXpert-v1.0``. Any other value names the folder. When nothing fits, the one-line error
    names what the folder does hold.
    """
    root = profile.data_root
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (DATA_DIR or data.root; layout: data/README.md)")
    setting = profile.data.chexpert_folder
    if setting != "auto":
        if (root / setting).is_dir():
            return setting
        candidates = []
    else:
        candidates = [name for name in CHEXPERT_FOLDERS if (root / name).is_dir()]
        if candidates:
            return candidates[0]
    found = sorted(path.parent.name for path in root.glob("*/valid.csv"))
    wanted = setting if setting != "auto" else " or ".join(CHEXPERT_FOLDERS)
    hint = (f"; found {found[0]!r} holding valid.csv: set data.chexpert_folder: {found[0]} in the profile "
            "(or rename the folder)" if found else
            f"; it holds {', '.join(sorted(path.name for path in root.iterdir())[:6]) or 'nothing'} "
            "(layout: data/README.md)")
    raise DataError(f"{root}: no {wanted} folder{hint}")


def data_path(profile: Profile, relative: str) -> Path:
    """A split path of a profile under ``data.root``, with ``{chexpert}`` replaced by
    :func:`chexpert_folder`."""
    if "{chexpert}" in relative:
        relative = relative.replace("{chexpert}", chexpert_folder(profile))
    return profile.data_root / relative


def read_split(profile: Profile, split: str) -> SplitData:
    """Read one split (``train``, ``valid`` or ``test``) of a profile's data."""
    settings = profile.data.splits[split]
    if settings.from_train_fraction > 0:
        table = _carve_from_train(profile, settings.from_train_fraction, keep=True)
    else:
        table = read_chexpert_csv(data_path(profile, settings.csv), uncertain=profile.data.uncertain,
                                  frontal_only=profile.data.frontal_only)
        if split == "train":
            carve = profile.data.splits["valid"].from_train_fraction
            if carve > 0:
                table = _carve_from_train(profile, carve, keep=False, table=table)
    cap = profile.data.max_images.get(split, 0)
    if cap:
        table = table.iloc[:cap].reset_index(drop=True)
    segmentations = read_segmentations(data_path(profile, settings.segmentations)) if settings.segmentations else None
    if segmentations is not None:
        unknown = set(table["cxr_id"]) - set(segmentations)
        if len(unknown) == len(table):
            raise DataError(f"{data_path(profile, settings.segmentations)}: none of the {len(table)} images of "
                            f"split {split!r} has an entry (ids like {table['cxr_id'].iloc[0]!r})")
    return SplitData(split, table, segmentations)


def _carve_from_train(profile: Profile, fraction: float, *, keep: bool, table: pd.DataFrame | None = None):
    """A seeded patient-level split of CheXpert's train CSV (validation = ``keep``)."""
    if table is None:
        table = read_chexpert_csv(data_path(profile, profile.data.splits["train"].csv),
                                  uncertain=profile.data.uncertain, frontal_only=profile.data.frontal_only)
    patients = table["cxr_id"].str.split("_").str[0]
    unique = np.sort(patients.unique())
    rng = np.random.default_rng(profile.seed)
    chosen = set(rng.choice(unique, size=max(1, int(round(fraction * len(unique)))), replace=False))
    selected = patients.isin(chosen).to_numpy()
    return table[selected if keep else ~selected].reset_index(drop=True)


_BIT_DEPTHS = (8, 10, 12, 14, 16)  # the sample depths radiographs are stored at in 16-bit containers


def to_gray8(image) -> tuple[np.ndarray, str]:
    """uint8 ``[H, W]`` gray values of a PIL image of any mode, and one line saying what was done.

    8-bit gray is kept as it is; colour is converted to gray (PIL's ITU-R 601-2 luma); an alpha
    channel is composited over black. Integer images of more than 8 bits (PNG's 16-bit ``I;16``,
    ``I``) are **scaled by their bit depth**, not clipped (PIL's ``convert("L")`` clips every value
    above 255 to white): the depth is the smallest of 8, 10, 12, 14 and 16 bits that holds the
    image's largest value (a 12-bit radiograph in a 16-bit file has values up to 4095), and
    ``v`` becomes ``round(255 v / (2**depth - 1))``.

    Raises
    ------
    ValueError
        Floating-point images, and integer images with values outside 0-65535 (one line).

    Examples
    --------
    >>> from PIL import Image
    >>> twelve_bit = Image.fromarray(np.array([[0, 2048, 4095]], dtype=np.uint16))
    >>> gray, note = to_gray8(twelve_bit)
    >>> gray.tolist(), note
    ([[0, 128, 255]], 'I;16 (12-bit values) scaled to 8-bit gray')
    """
    from PIL import Image

    mode = image.mode
    if mode.startswith("I"):
        values = np.asarray(image)
        if values.ndim != 2:
            raise ValueError(f"{mode} image of shape {values.shape}; expected one gray channel")
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise ValueError(f"{mode} values from {low} to {high} lie outside 0-65535; save it as 8- or 16-bit gray")
        depth = next(bits for bits in _BIT_DEPTHS if high < 2**bits)
        scaled = np.floor(values.astype(np.float64) * (255.0 / (2**depth - 1)) + 0.5)
        return scaled.astype(np.uint8), f"{mode} ({depth}-bit values) scaled to 8-bit gray"
    if mode == "F":
        raise ValueError("floating-point (mode F) images are not read; save it as 8- or 16-bit gray")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(black, rgba).convert("L")), f"{mode} composited over black, to gray"
    if mode == "L":
        return np.asarray(image, dtype=np.uint8), "8-bit gray"
    return np.asarray(image.convert("L"), dtype=np.uint8), f"{mode} converted to 8-bit gray"


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Read a grayscale radiograph as uint8 ``[H, W]``, resized to ``size x size`` when given.

    Images of more than 8 bits are scaled by their bit depth (:func:`to_gray8`); an image over
    PIL's decompression-bomb limit, a truncated or corrupt file, or an unsupported mode is one
    :class:`~shamsul_utils.errors.DataError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            image.load()
            pixels, _ = to_gray8(image)
    except Image.DecompressionBombError as error:
        raise DataError(f"{path}: image too large to decode safely ({str(error).split('.')[0]})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: unreadable image ({error.__class__.__name__}: {error})") from None
    gray = Image.fromarray(pixels)
    if size is not None and gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(gray, dtype=np.uint8)


def load_images(paths: Sequence[str | Path], size: int) -> np.ndarray:
    """uint8 ``[N, size, size]`` for many images."""
    return np.stack([load_image(path, size) for path in paths]) if len(paths) else np.zeros((0, size, size), np.uint8)


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


def same_picture(image_shape: tuple[int, int], mask_shape: tuple[int, int]) -> bool:
    """Whether an image of ``image_shape`` is the picture whose masks are ``mask_shape``: the same
    size, or a copy downscaled with the aspect ratio kept (each side within 1 px of the
    original's side times the scale, and at least 8 px a side), as CheXpert-v1.0-small's JPEGs are of
    the originals."""
    if tuple(image_shape) == tuple(mask_shape):
        return True
    (height, width), (mask_height, mask_width) = image_shape, mask_shape
    if height > mask_height or width > mask_width or min(height, width) < 8:
        return False
    if height / mask_height <= width / mask_width:
        return abs(mask_width * height / mask_height - width) <= 1
    return abs(mask_height * width / mask_width - height) <= 1


def _check_image_fits(cxr_id: str, path: str | Path, mask_shape: tuple[int, int]) -> None:
    shape = image_size(path)
    if not same_picture(shape, mask_shape):
        raise DataError(f"{cxr_id}: mask size {tuple(mask_shape)} does not fit its image's {shape}: neither the "
                        f"same size nor a downscaled copy ({path})")


def resize_nearest(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Masks ``[..., h, w]`` on another grid ``shape`` by nearest neighbour (pixel ``i`` takes source
    row ``floor(i * h / H)``): for display only, never for scoring (scores are computed at the
    masks' own size). The array itself when the size already matches.
    """
    height, width = masks.shape[-2:]
    if (height, width) == tuple(shape):
        return masks
    rows = (np.arange(shape[0]) * height / shape[0]).astype(int)
    columns = (np.arange(shape[1]) * width / shape[1]).astype(int)
    return masks[..., rows, :][..., columns]


def masks_for(split: SplitData, cxr_ids: Sequence[str], *, size: int | None = None,
              classes: Sequence[str] = LOCALIZED_CLASSES, check_image_size: bool = True) -> np.ndarray:
    """Ground-truth masks, bool ``[N, len(classes), h, w]``, all in memory.

    At the images' original size (all must agree) or, with ``size``, resized by nearest
    neighbour to ``size x size`` (for display, never for scoring). A class without an entry is
    an empty mask. With ``check_image_size``, a mask that does not fit its image (the same size
    or a downscaled copy, :func:`same_picture`) is an error. For scoring many images of
    different sizes use :class:`ExpertMasks`.
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
        if check_image_size and cxr_id in paths:
            _check_image_fits(cxr_id, paths[cxr_id], shape)
        per_class = np.stack([decoded.get(name, np.zeros(shape, bool)) for name in classes])
        if size is not None:
            per_class = resize_nearest(per_class, (size, size))
        stacks.append(per_class)
    sizes = {mask.shape for mask in stacks}
    if len(sizes) > 1:
        raise DataError(f"masks differ in size {sorted(sizes)}: pass size= to put them on one grid")
    return np.stack(stacks) if stacks else np.zeros((0, len(classes), size or 0, size or 0), bool)


def describe_sizes(sizes: Sequence[tuple[int, int]]) -> str:
    """``"256x256"`` when all sizes agree, else ``"3 sizes, 2022x1760 to 2320x2828"`` (by area)."""
    distinct = sorted(set(map(tuple, sizes)), key=lambda size: (size[0] * size[1], size))
    if not distinct:
        return "none"
    if len(distinct) == 1:
        return "{}x{}".format(*distinct[0])
    return "{} sizes, {}x{} to {}x{}".format(len(distinct), *distinct[0], *distinct[-1])


class ExpertMasks:
    """The expert masks of some images, decoded one image at a time at their original size.

    CheXlocalize's masks are at the originals' size (about 2000-3000 px a side, different per
    image), so a cohort's masks are never stacked: ``masks[n]`` decodes image ``n``'s masks
    ``[len(classes), H_n, W_n]`` on demand, and ``masks[n, c]`` one mask. Which masks are
    non-empty and what share of its image each covers come from the run-length codes without
    decoding; every code is checked first (:func:`shamsul_utils.chexlocalize.check_rle`).

    Parameters
    ----------
    split : SplitData
        A split with segmentations.
    cxr_ids : sequence of str
        The images, in order; each must have an entry.
    classes : sequence of str
        The classes, in order (a class without an entry is an empty mask).
    check_image_size : bool
        Check each mask against its image's header: the same picture, at the same or a
        downscaled size (:func:`same_picture`), else a one-line error.
    """

    def __init__(self, split: SplitData, cxr_ids: Sequence[str], *, classes: Sequence[str] = LOCALIZED_CLASSES,
                 check_image_size: bool = True):
        if split.segmentations is None:
            raise DataError(f"split {split.name!r} has no segmentations in this profile")
        self.split_name = split.name
        self.classes = tuple(classes)
        self.cxr_ids = list(cxr_ids)
        self._entries = []
        sizes, areas = [], []
        paths = dict(zip(split.table["cxr_id"], split.table["image_path"], strict=True))
        for cxr_id in self.cxr_ids:
            entry = split.segmentations.get(cxr_id)
            if entry is None:
                raise DataError(f"image {cxr_id!r} has no entry in the segmentations of split {split.name!r}")
            # every entry checked (size bounded, runs filling the mask) before anything is decoded
            checked = {name: check_rle(rle, where=f"{cxr_id}/{name}") for name, rle in entry.items()}
            shapes = {size for size, _ in checked.values()}
            if len(shapes) != 1:
                raise DataError(f"{cxr_id}: masks of one image differ in size: {sorted(shapes)}")
            shape = shapes.pop()
            if check_image_size and cxr_id in paths:
                _check_image_fits(cxr_id, paths[cxr_id], shape)
            pixels = float(shape[0] * shape[1])
            # foreground = every second run, starting with the second
            row = [float(sum(checked[name][1][1::2])) / pixels if name in checked else 0.0 for name in self.classes]
            sizes.append(shape)
            areas.append(row)
            self._entries.append(entry)
        self.sizes: list[tuple[int, int]] = sizes
        self.area = np.asarray(areas, dtype=float).reshape(len(sizes), len(self.classes))

    @classmethod
    def from_arrays(cls, masks, *, cxr_ids: Sequence[str] | None = None,
                    classes: Sequence[str] = LOCALIZED_CLASSES) -> ExpertMasks:
        """Masks already in memory: bool ``[N, C, H, W]`` or a list of ``[C, H_n, W_n]``."""
        arrays = [np.asarray(per_image, dtype=bool) for per_image in masks]
        for per_image in arrays:
            if per_image.ndim != 3 or len(per_image) != len(classes):
                raise DataError(f"masks of one image must be [{len(classes)}, H, W], got {per_image.shape}")
        result = object.__new__(cls)
        result.split_name, result.classes = "in memory", tuple(classes)
        result.cxr_ids = list(cxr_ids) if cxr_ids is not None else [str(row) for row in range(len(arrays))]
        result._entries = arrays
        result.sizes = [tuple(per_image.shape[-2:]) for per_image in arrays]
        result.area = (np.stack([per_image.mean(axis=(-2, -1)) for per_image in arrays]) if arrays
                       else np.zeros((0, len(classes))))
        return result

    @property
    def present(self) -> np.ndarray:
        """bool ``[N, C]``: whether each expert mask is non-empty."""
        return self.area > 0

    def __len__(self) -> int:
        return len(self.cxr_ids)

    def _decode(self, row: int, column: int) -> np.ndarray:
        if isinstance(self._entries[row], np.ndarray):  # from_arrays
            return self._entries[row][column]
        rle = self._entries[row].get(self.classes[column])
        if rle is None:
            return np.zeros(self.sizes[row], dtype=bool)
        mask = decode_mask(rle, where=f"{self.cxr_ids[row]}/{self.classes[column]}")
        if mask.shape != self.sizes[row]:
            raise DataError(f"{self.cxr_ids[row]}/{self.classes[column]}: decodes to {mask.shape}, "
                            f"its size says {self.sizes[row]}")
        return mask

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            row, column = key
            return self._decode(int(row), int(column))
        row = int(key)
        if not -len(self) <= row < len(self):
            raise IndexError(f"image {row} of {len(self)}")
        row %= len(self)
        return np.stack([self._decode(row, column) for column in range(len(self.classes))])

    def __iter__(self):
        return (self[row] for row in range(len(self)))

    def view(self, row: int) -> ImageMasks:
        """One image's masks, decoded only when a class is read (``view[c]``)."""
        return ImageMasks(self, int(row))

    def subset(self, rows) -> ExpertMasks:
        """The same masks restricted to some images (in that order)."""
        chosen = [int(row) for row in np.asarray(rows).reshape(-1)]
        result = object.__new__(ExpertMasks)
        result.split_name, result.classes = self.split_name, self.classes
        result.cxr_ids = [self.cxr_ids[row] for row in chosen]
        result._entries = [self._entries[row] for row in chosen]
        result.sizes = [self.sizes[row] for row in chosen]
        result.area = self.area[chosen].reshape(len(chosen), len(self.classes))
        return result

    @property
    def common_size(self) -> tuple[int, int] | None:
        """The one original size all images share, or None when sizes differ."""
        sizes = set(self.sizes)
        return sizes.pop() if len(sizes) == 1 else None

    def describe_size(self) -> str:
        """The size the masks are at, for tables (:func:`describe_sizes`)."""
        return describe_sizes(self.sizes)

    def stacked(self) -> np.ndarray:
        """All masks as one bool ``[N, C, H, W]`` array: only where every image has the same size
        (the phantom), a one-line error otherwise (score per image instead)."""
        if len(self) and self.common_size is None:
            raise DataError(f"expert masks of split {self.split_name!r} differ in size ({self.describe_size()}); "
                            "they cannot be stacked: score one image at a time (shamsul_utils.scoring)")
        if not len(self):
            return np.zeros((0, len(self.classes), 0, 0), dtype=bool)
        return np.stack(list(self))


class ImageMasks:
    """The expert masks of one image of an :class:`ExpertMasks`, decoded one class at a time."""

    def __init__(self, masks: ExpertMasks, row: int):
        self._masks, self._row = masks, row

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self._masks.classes), *self._masks.sizes[self._row])

    def __getitem__(self, column: int) -> np.ndarray:
        return self._masks[self._row, column]


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
    """Check that every image of a split exists, has a readable image header and fits its masks'
    size (and, for ``sample`` of them, that the image and its masks decode).

    Returns a summary dict; raises :class:`DataError` on the first problem, naming the file.
    """
    from tqdm import tqdm  # text, not a notebook widget: nothing is shown unless it takes over 10 s

    missing = [path for path in split.table["image_path"] if not Path(path).is_file()]
    if missing:
        raise DataError(f"{missing[0]}: image not found ({len(missing)} of {len(split)} images of split "
                        f"{split.name!r} are missing)")
    # every image's header: a file that is not an image, or not a readable one, stops here (a bar
    # appears only when this takes long, e.g. CheXpert's 191,000 training images)
    for path in tqdm(split.table["image_path"], desc=f"checking {split.name} images", unit="image", delay=10,
                     mininterval=10):
        image_size(path)
    checked = split.table.iloc[:sample] if sample else split.table.iloc[:0]
    for path in checked["image_path"]:
        load_image(path)
    if split.segmentations is not None:
        # every mask's size against its image's header (cheap); the sampled images' masks decoded
        masks = ExpertMasks(split, [cxr_id for cxr_id in split.table["cxr_id"] if cxr_id in split.segmentations])
        sampled = set(checked["cxr_id"])
        for row, cxr_id in enumerate(masks.cxr_ids):
            if cxr_id in sampled:
                masks[row]
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
