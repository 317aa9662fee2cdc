"""A blinded rating sheet for the medical significance of segmentations.

In SHAMSUL, clinicians judged how medically significant each explainer's segmentation was (the
paper's headline: LIME's are the most significant). :func:`write_rating_sheet` writes a sheet for
raters (clinicians, workshop participants) with the images shuffled and the method names hidden;
:func:`read_ratings` reads the filled sheet back, checks it and unblinds it; :func:`rating_summary`
gives each method's mean rating with a bootstrap interval over images.

Rating scale (:data:`RATING_SCALE`, also printed in the sheet's ``README.txt``):

1. misleading: covers no part of the finding (or marks nothing)
2. marginal: touches the finding but mostly marks unrelated anatomy, devices or image borders
3. partial: covers a clear part of the finding, with large misses or much spill-over
4. good: covers most of the finding, with modest spill-over into neighbouring regions
5. covers the finding and little else, as a radiologist would mark it

A sheet is a folder::

    README.txt            instructions and the scale, for the raters
    rating_sheet.csv      item, image_file, finding, rating, comment (rating and comment blank)
    images/item-001.png   one per item: the radiograph, and beside it the segmentation in yellow
    rating_key.csv        the unblinding key: item, cxr_id, class_name, method, model, iou
    rating_manifest.json  SHA-256 of the key, the scale, the number of items (nothing that unblinds)

Hand raters ``README.txt``, ``rating_sheet.csv`` and ``images/`` only: ``rating_key.csv`` unblinds
the sheet (``key_path`` can put it elsewhere from the start).

Notes
-----
Deviations from the paper:

* Blinding is our addition. As far as the paper says, its clinicians saw each method's segmentation
  named (the paper's figures are labelled by method); here items are shuffled with
  ``np.random.default_rng(seed)`` and given opaque ids (``item-007``: position in the shuffled
  order), and neither the sheet, the README, the file names nor the PNGs (pixels or metadata)
  name a method. The shape of a segmentation can still betray its method to a rater who knows the
  methods (LIME's superpixel edges, Grad-CAM's coarse blobs): labels are hidden, style is not. The
  shuffle is reproducible, so a seed known to the raters (a profile's published seed) together with
  the order of the items would undo it: for a real study choose a seed the raters do not know.
* The paper reports the clinicians' judgement in words; a 1-5 scale with written anchors, a mean per
  method and an interval are ours.
* The key records the IoU of each segmentation with the expert mask (``RatingItem.expert_mask``,
  never shown to raters), so ratings can be set against the automatic metric.

References
----------
Alam, M. U., Hollmén, J., Baldvinsson, J. R. & Rahmani, R. (2023). SHAMSUL: systematic holistic
analysis to investigate medical significance utilizing local interpretability methods in deep
learning for chest radiography pathology prediction. Nordic Machine Intelligence 3(1), 27-47.
doi:10.5617/nmi.10471 (arXiv:2307.08003).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .files import atomic_write_bytes, atomic_write_text, write_table
from .labels import CLASSES

__all__ = ["RATING_SCALE", "RatingItem", "write_rating_sheet", "filled_rows", "read_ratings", "rating_summary",
           "SHEET_FILE", "KEY_FILE", "README_FILE", "MANIFEST_FILE", "IMAGE_FOLDER", "SHEET_COLUMNS",
           "KEY_COLUMNS", "GOOD_RATING"]

RATING_SCALE: dict[int, str] = {
    1: "misleading: covers no part of the finding (or marks nothing)",
    2: "marginal: touches the finding but mostly marks unrelated anatomy, devices or image borders",
    3: "partial: covers a clear part of the finding, with large misses or much spill-over",
    4: "good: covers most of the finding, with modest spill-over into neighbouring regions",
    5: "covers the finding and little else, as a radiologist would mark it",
}
GOOD_RATING = 4  # rating_summary's share counts ratings >= this

SHEET_FILE = "rating_sheet.csv"
KEY_FILE = "rating_key.csv"
README_FILE = "README.txt"
MANIFEST_FILE = "rating_manifest.json"
IMAGE_FOLDER = "images"
SHEET_COLUMNS = ("item", "image_file", "finding", "rating", "comment")
KEY_COLUMNS = ("item", "cxr_id", "class_name", "method", "model", "iou")
SHEET_FORMAT = 1
SEGMENTATION_COLOUR = "#ffd400"  # one neutral colour for every method (no method's registry colour)


@dataclass(frozen=True, eq=False, kw_only=True)
class RatingItem:
    """One segmentation to rate.

    Parameters
    ----------
    cxr_id, class_name, method : str
        The radiograph, the finding (a CheXpert class, :data:`~shamsul_utils.labels.CLASSES`) and
        the explainer. Only ``class_name`` is shown to raters.
    model : str, optional
        The classifier explained (e.g. a training seed), for the key only.
    image : ndarray, shape (H, W)
        The radiograph in gray: float in [0, 1] or uint8.
    segmentation : ndarray of bool, shape (H, W)
        The method's segmentation.
    expert_mask : ndarray of bool, shape (H, W), optional
        The expert's mask; never shown, only its IoU with ``segmentation`` goes into the key.
    """

    cxr_id: str
    class_name: str
    method: str
    model: str | None = None
    image: np.ndarray
    segmentation: np.ndarray
    expert_mask: np.ndarray | None = None


def _mask(array, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    mask = np.asarray(array)
    if mask.shape != shape:
        raise DataError(f"{where}: {name} {mask.shape} differs in size from the image {shape}")
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise DataError(f"{where}: {name} must be boolean (or 0/1), got values other than 0 and 1")
    return mask.astype(bool)


def _checked(item: RatingItem, position: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The item's image as float [0, 1], its segmentation, and the IoU with the expert mask (NaN)."""
    where = f"item {position} (cxr_id {item.cxr_id!r}, {item.class_name}, {item.method})"
    for name in ("cxr_id", "class_name", "method"):
        if not isinstance(getattr(item, name), str) or not getattr(item, name).strip():
            raise DataError(f"{where}: {name} must be a non-empty string")
    if item.class_name not in CLASSES:
        raise DataError(f"{where}: unknown class {item.class_name!r}; expected a CheXpert class "
                        f"({', '.join(CLASSES)})")
    image = np.asarray(item.image)
    if image.ndim != 2:
        raise DataError(f"{where}: image must be gray [H, W], got shape {image.shape}")
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise DataError(f"{where}: a float image must lie in [0, 1]")
    else:
        raise DataError(f"{where}: image must be float in [0, 1] or uint8, got {image.dtype}")
    segmentation = _mask(item.segmentation, "segmentation", image.shape, where)
    overlap = float("nan")
    if item.expert_mask is not None:
        expert = _mask(item.expert_mask, "expert_mask", image.shape, where)
        union = int((segmentation | expert).sum())
        overlap = int((segmentation & expert).sum()) / union if union else float("nan")
    return image.astype(np.float32), segmentation, overlap


def _png(image: np.ndarray, segmentation: np.ndarray, item: str, finding: str) -> bytes:
    """The radiograph, and beside it the segmentation outlined and lightly filled in one colour.

    Drawn on a bare Agg canvas (no pyplot, global rcParams untouched); the PNG has no text chunk
    (matplotlib's default ``Software`` entry is dropped).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

    height, width = image.shape
    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.84, wspace=0.05)
    for axis in axes:
        axis.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
        axis.set_axis_off()
    if segmentation.any():
        fill = np.zeros((height, width, 4))
        fill[segmentation] = (*to_rgb(SEGMENTATION_COLOUR), 0.25)
        axes[1].imshow(fill, interpolation="nearest")
        padded = np.pad(segmentation, 1).astype(float)  # closes contours along the image border
        axes[1].contour(np.arange(-1, width + 1), np.arange(-1, height + 1), padded, levels=[0.5],
                        colors=[SEGMENTATION_COLOUR], linewidths=1.5)
        axes[1].set_xlim(-0.5, width - 0.5)
        axes[1].set_ylim(height - 0.5, -0.5)
    axes[0].set_title("radiograph", fontsize=9)
    axes[1].set_title("segmentation (yellow)" if segmentation.any() else "segmentation: empty", fontsize=9)
    figure.suptitle(f"{item}: {finding}", fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _readme(n_items: int) -> str:
    scale = "\n".join(f"  {level} = {anchor}" for level, anchor in RATING_SCALE.items())
    return textwrap.dedent("""\
        Medical significance of segmentations: a blinded rating sheet
        ==============================================================

        Each item is a chest radiograph with a finding (the title of its image) and a segmentation:
        the region a computer method marks as its evidence for that finding, outlined in yellow on
        the right; the left panel shows the radiograph alone. Items come in random order and do not
        say which method made them; please rate each on its own. The same radiograph may appear
        several times, with different segmentations.

        How to rate
        -----------
        Open rating_sheet.csv (a spreadsheet program will do) and, for each of its {n} rows, look at
        its image_file (in images/) and write a whole number from 1 to 5 in the column "rating":

        {scale}

        "comment" is optional free text. Leave "rating" blank for an item you cannot judge (for
        example if you cannot see the finding; say so in the comment). Do not rename, add or delete
        columns or rows, and do not change the columns item, image_file and finding; the order of the
        rows does not matter. Save the file as CSV under the same name.

        For the organiser
        -----------------
        Give raters README.txt, rating_sheet.csv and images/ only: rating_key.csv unblinds the
        sheet. Read a filled sheet back with shamsul_utils.rating.read_ratings (it checks the key
        against rating_manifest.json) and summarise it with rating_summary.
        """).format(n=n_items, scale=scale)


def filled_rows(path: Path) -> int:
    """How many rows of an existing sheet have a rating or a comment (refusing to guess if unreadable)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle, delimiter=_delimiter(path)))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: exists but cannot be read to check for ratings ({error}); "
                        "pass overwrite=True to replace it") from None
    if rows and not {"rating", "comment"} & set(rows[0]):
        raise DataError(f"{path}: exists without rating or comment columns; pass overwrite=True to replace it")
    return sum(any((row.get(column) or "").strip() for column in ("rating", "comment")) for row in rows)


def write_rating_sheet(folder: str | os.PathLike, items: Sequence[RatingItem], *, seed: int,
                       overwrite: bool = False, key_path: str | os.PathLike | None = None) -> Path:
    """Write a blinded rating sheet: shuffled items, opaque ids, one PNG each, and the key.

    Parameters
    ----------
    folder : path-like
        The sheet's folder (created); see the module docstring for its files.
    items : sequence of RatingItem
        What to rate. Images, segmentations and expert masks are checked (sizes, ranges, a known
        class); the same (cxr_id, class_name, method, model) twice is refused.
    seed : int
        Seed of the shuffle, ``np.random.default_rng(seed).permutation``. Keep it from the raters.
    overwrite : bool
        Replace a sheet whose ``rating`` or ``comment`` column has anything filled in. A sheet with
        nothing filled in is replaced without asking.
    key_path : path-like, optional
        Where to write the unblinding key; default ``folder / "rating_key.csv"``. Pass the same
        path to :func:`read_ratings`.

    Returns
    -------
    pathlib.Path
        The path of ``rating_sheet.csv``.

    Raises
    ------
    DataError
        Bad items, or a filled-in sheet and ``overwrite=False``; one line naming the item or file.

    Notes
    -----
    Every file is written atomically (:mod:`shamsul_utils.files`); an existing sheet is deleted
    first and the new one written last, so a sheet on disk always matches its key. PNGs of an
    earlier, longer sheet (``images/item-*.png``) are deleted. See the module docstring for the
    deviations from the paper (blinding is ours).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "sheet"
    >>> item = RatingItem(cxr_id="patient1", class_name="Cardiomegaly", method="method A",
    ...                   image=np.zeros((8, 8)), segmentation=np.eye(8, dtype=bool))
    >>> write_rating_sheet(folder, [item], seed=0).name
    'rating_sheet.csv'
    >>> read_ratings(folder).attrs  # nothing rated yet
    {'items': 1, 'unrated': 1}
    """
    folder = Path(folder)
    items = list(items)
    if not items:
        raise DataError(f"{folder}: no items to rate")
    checked = [_checked(item, position) for position, item in enumerate(items)]
    seen: dict[tuple, int] = {}
    for position, item in enumerate(items):
        identity = (item.cxr_id, item.class_name, item.method, item.model or "")
        if identity in seen:
            raise DataError(f"items {seen[identity]} and {position}: the same cxr_id, class, method and model "
                            f"{identity}")
        seen[identity] = position
    sheet_path = folder / SHEET_FILE
    if sheet_path.exists():
        filled = filled_rows(sheet_path)
        if filled and not overwrite:
            raise DataError(f"{sheet_path}: {filled} row(s) already rated or commented; pass overwrite=True "
                            "to replace the sheet (their ratings are lost)")
        sheet_path.unlink()

    order = np.random.default_rng(seed).permutation(len(items))
    width = max(3, len(str(len(items))))
    names = [f"item-{position + 1:0{width}d}" for position in range(len(items))]
    image_folder = folder / IMAGE_FOLDER
    image_folder.mkdir(parents=True, exist_ok=True)
    for stale in set(image_folder.glob("item-*.png")) - {image_folder / f"{name}.png" for name in names}:
        stale.unlink()
    sheet_rows, key_rows = [], []
    for name, index in zip(names, order, strict=True):
        item = items[index]
        image, segmentation, overlap = checked[index]
        image_file = f"{IMAGE_FOLDER}/{name}.png"
        atomic_write_bytes(folder / image_file, _png(image, segmentation, name, item.class_name))
        sheet_rows.append({"item": name, "image_file": image_file, "finding": item.class_name, "rating": "",
                           "comment": ""})
        key_rows.append({"item": name, "cxr_id": item.cxr_id, "class_name": item.class_name,
                         "method": item.method, "model": item.model or "", "iou": overlap})
    key_path = Path(key_path) if key_path is not None else folder / KEY_FILE
    key_text = pd.DataFrame(key_rows, columns=list(KEY_COLUMNS)).to_csv(index=False)
    atomic_write_text(key_path, key_text)
    manifest = {"format": SHEET_FORMAT, "items": len(items), "key_sha256": _sha256(key_text.encode("utf-8")),
                "scale": {str(level): anchor for level, anchor in RATING_SCALE.items()}}
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
    atomic_write_text(folder / README_FILE, _readme(len(items)))
    return write_table(pd.DataFrame(sheet_rows, columns=list(SHEET_COLUMNS)), sheet_path)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _delimiter(path: Path) -> str:
    """``;`` for a sheet that a spreadsheet program saved with semicolons (some locales), else ``,``."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        header = handle.readline()
    return ";" if ";" in header and "," not in header else ","


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", sep=_delimiter(path))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(table.columns)})")
    table = table.apply(lambda column: column.str.strip())
    table["line"] = np.arange(len(table)) + 2  # the CSV's line: header is line 1
    return table[(table[list(columns)] != "").any(axis=1)]  # spreadsheets append empty rows


def _listed(entries: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(entries[:limit])
    return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


def _rating(text: str) -> int | None:
    """A whole number on the scale ("4" or a spreadsheet's "4.0"), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value != int(value) or int(value) not in RATING_SCALE:
        return None
    return int(value)


def read_ratings(folder: str | os.PathLike, *, key_path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read a filled sheet, check it against its key, and unblind it.

    Parameters
    ----------
    folder : path-like
        A folder written by :func:`write_rating_sheet`.
    key_path : path-like, optional
        The key, if it was written elsewhere (default ``folder / "rating_key.csv"``).

    Returns
    -------
    pandas.DataFrame
        One row per rated item, in item order: ``item, cxr_id, class_name, method, model, iou,
        rating`` (int), ``comment``. Items with a blank rating are not rated yet: dropped and counted
        in ``attrs["unrated"]`` (``attrs["items"]`` is the sheet's size).

    Raises
    ------
    DataError
        One line naming the file and the problem: a missing file, a missing (renamed) column, a key
        that differs from the one written (its SHA-256 is kept in ``rating_manifest.json``), an item
        unknown to the key, duplicated, or missing from the sheet, a finding changed, or a rating
        that is not a whole number from 1 to 5.
    """
    folder = Path(folder)
    key_path = Path(key_path) if key_path is not None else folder / KEY_FILE
    sheet_path, manifest_path = folder / SHEET_FILE, folder / MANIFEST_FILE
    for path in (sheet_path, key_path, manifest_path):
        if not path.is_file():
            raise DataError(f"{path}: not found")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected = manifest["key_sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{manifest_path}: not a rating manifest ({error})") from None
    if _sha256(key_path.read_bytes()) != expected:
        raise DataError(f"{key_path}: differs from the key written with this sheet (SHA-256 in {MANIFEST_FILE}); "
                        "restore the original key")
    key = _read_csv(key_path, KEY_COLUMNS).set_index("item")
    sheet = _read_csv(sheet_path, SHEET_COLUMNS)

    def where(rows: pd.DataFrame) -> str:
        return _listed([f"{item!r} (line {line})" for item, line in zip(rows["item"], rows["line"], strict=True)])

    duplicated = sheet.loc[sheet["item"].duplicated(keep=False)]
    if len(duplicated):
        raise DataError(f"{sheet_path}: duplicated item(s) {where(duplicated)}")
    unknown = sheet.loc[~sheet["item"].isin(key.index)]
    if len(unknown):
        raise DataError(f"{sheet_path}: item(s) not in the key {where(unknown)}")
    absent = [item for item in key.index if item not in set(sheet["item"])]
    if absent:
        raise DataError(f"{sheet_path}: item(s) of the key missing from the sheet: {_listed(absent)}")
    changed = sheet.loc[sheet["finding"].to_numpy() != key.loc[sheet["item"], "class_name"].to_numpy()]
    if len(changed):
        raise DataError(f"{sheet_path}: finding differs from the key (a sheet of another key?) for {where(changed)}")

    rated = sheet.loc[sheet["rating"] != ""].copy()
    rated["value"] = [_rating(text) for text in rated["rating"]]
    bad = rated.loc[rated["value"].isna()]
    if len(bad):
        raise DataError(f"{sheet_path}: rating must be blank or a whole number {min(RATING_SCALE)}-"
                        f"{max(RATING_SCALE)}; got " + _listed(
                            [f"{text!r} ({item}, line {line})"
                             for text, item, line in zip(bad["rating"], bad["item"], bad["line"], strict=True)]))
    table = key.loc[rated["item"]].reset_index()
    table["iou"] = pd.to_numeric(table["iou"], errors="coerce")
    table["rating"] = rated["value"].astype("int64").to_numpy()
    table["comment"] = rated["comment"].to_numpy()
    table = table[[*KEY_COLUMNS, "rating", "comment"]].sort_values("item", ignore_index=True)
    table.attrs.update(items=len(sheet), unrated=len(sheet) - len(rated))
    return table


def rating_summary(ratings: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                   by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Per method: items rated, mean rating with a bootstrap interval, share rated 4 or more.

    Parameters
    ----------
    ratings : pandas.DataFrame
        :func:`read_ratings`'s table (columns ``cxr_id``, ``rating`` and those of ``by``).
    n_resamples, seed, confidence : int, int, float
        Of the bootstrap (:func:`shamsul_utils.metrics.bootstrap.bootstrap_ci`, percentile interval).
    by : sequence of str
        Columns to group by; ``("method", "model")`` or ``("method", "class_name")`` split further.

    Returns
    -------
    pandas.DataFrame
        One row per group, sorted: the ``by`` columns, ``items`` (rated), ``images`` (distinct
        cxr_id), ``mean_rating``, ``mean_low``, ``mean_high``, ``share_good`` (share of ratings
        >= :data:`GOOD_RATING`), ``share_low``, ``share_high``.

    Notes
    -----
    The bootstrap resamples images (cxr_id), not items: one radiograph appears under several
    methods (and classes), so its items are not independent. Each resample draws the same images for
    every group, and a group's statistic is its ratings pooled over the drawn images (total rating
    over number of items), so an image with two items counts twice, as in the estimate, which is the
    plain mean over the group's items. The paper reports no such statistic (module docstring).

    One rater per table for now: several raters' tables (concatenated with a ``rater`` column) would
    need raters resampled as well as images, and an agreement statistic (e.g. Krippendorff's alpha);
    that is the extension point, and a table with more than one rater is refused until it is built.

    Examples
    --------
    >>> ratings = pd.DataFrame({"cxr_id": ["a", "a", "b", "b"], "method": ["A", "B", "A", "B"],
    ...                         "rating": [5, 2, 4, 3]})
    >>> rating_summary(ratings, n_resamples=100)[["method", "items", "images", "mean_rating", "share_good"]]
      method  items  images  mean_rating  share_good
    0      A      2       2          4.5         1.0
    1      B      2       2          2.5         0.0
    """
    from .metrics.bootstrap import bootstrap_ci

    by = list(by)
    missing = [column for column in ("cxr_id", "rating", *by) if column not in ratings.columns]
    if missing:
        raise DataError(f"ratings: missing column(s) {', '.join(missing)}")
    if "rater" in ratings.columns and ratings["rater"].nunique() > 1:
        raise NotImplementedError("ratings: several raters are not summarised yet (needs rater resampling "
                                  "and agreement)")
    columns = [*by, "items", "images", "mean_rating", "mean_low", "mean_high", "share_good", "share_low",
               "share_high"]
    if ratings.empty:
        return pd.DataFrame(columns=columns)
    values = pd.to_numeric(ratings["rating"], errors="coerce")
    if values.isna().any() or not values.isin(list(RATING_SCALE)).all():
        raise DataError(f"ratings: rating must be a whole number {min(RATING_SCALE)}-{max(RATING_SCALE)}")
    grouped = ratings.groupby(by, sort=True, dropna=False)
    group = grouped.ngroup().to_numpy()
    images, image = np.unique(ratings["cxr_id"].astype(str).to_numpy(), return_inverse=True)
    n_groups = int(group.max()) + 1
    totals = np.zeros((len(images), 3, n_groups))  # per image: sum of ratings, good ratings, items
    np.add.at(totals, (image, 0, group), values.to_numpy(float))
    np.add.at(totals, (image, 1, group), (values >= GOOD_RATING).to_numpy(float))
    np.add.at(totals, (image, 2, group), 1.0)

    def pooled(array, axis):
        summed = array.sum(axis=axis).reshape(*array.shape[:axis], *array.shape[axis + 1:-1], 3, n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.concatenate([summed[..., 0, :] / summed[..., 2, :], summed[..., 1, :] / summed[..., 2, :]],
                                  axis=-1)

    estimate, low, high = bootstrap_ci(totals.reshape(len(images), 3 * n_groups), statistic=pooled,
                                       n_resamples=n_resamples, seed=seed, confidence=confidence)
    table = grouped.size().rename("items").reset_index()
    table["images"] = grouped["cxr_id"].nunique().to_numpy()
    for offset, (name, lower, upper) in enumerate((("mean_rating", "mean_low", "mean_high"),
                                                   ("share_good", "share_low", "share_high"))):
        part = slice(offset * n_groups, (offset + 1) * n_groups)
        table[name], table[lower], table[upper] = estimate[part], low[part], high[part]
    table.attrs.update(n_resamples=n_resamples, seed=seed, confidence=confidence, resampled="cxr_id")
    return table[columns]
