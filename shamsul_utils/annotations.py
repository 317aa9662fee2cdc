"""CheXlocalize's raw annotations (polygons) to masks and segmentation JSON, and masks back to polygons.

CheXlocalize ships its expert segmentations twice: as masks (``gt_segmentations_val.json``, COCO
RLE, :mod:`shamsul_utils.chexlocalize`) and as the radiologists' raw polygons
(``gt_annotations_val.json``), which its ``annotation_to_segmentation.py`` turns into the masks.
The annotation file is::

    {cxr_id: {"img_size": [h, w], task: [[[x, y], [x, y], ...], ...], ...}, ...}

one list of contours per task, each contour a list of ``[x, y]`` points (x the column, y the
row, in pixels of the original image); it lists only the images with a positive finding, and
each image only its positive tasks. CheXlocalize draws every contour of a task on one blank
image of ``img_size`` with Pillow (``Image.new("1", (w, h))`` and
``ImageDraw.polygon(points, outline=1, fill=1)``): the mask is the union of the filled contours,
outline included, and a task without contours is an empty mask. :func:`annotations_to_masks`
does exactly that, with the same library and call, so the masks are CheXlocalize's.

:func:`masks_to_annotations` goes the other way (e.g. to ship the phantom's masks as an
annotation file too). The format has no holes (a contour inside another is filled, not cut
out), so a mask is written as the union of hole-free pieces: each 8-connected piece is traced
through the centres of its boundary pixels; where a piece encloses background, a one-pixel-wide
vertical cut from the top of each hole to the background above makes it hole-free, and the cut
pixels are traced as pieces of their own. Drawn back by Pillow the polygons give the mask pixel
for pixel (``tests/test_annotations.py``: random masks with and without holes, and the
phantom's masks).

Deviations from CheXlocalize
----------------------------
* The file is checked before anything is drawn, and a bad one is refused with one line
  (:class:`~shamsul_utils.errors.DataError`): a missing ``img_size``, a contour of fewer than
  3 points (Pillow would draw 1 or 2 points as a dot or a line), a point outside the image
  (``0 <= x <= w``, ``0 <= y <= h``; swapped coordinates on a non-square image usually land
  there), an unknown task name. CheXlocalize's script skips unknown tasks and lets Pillow clip.
* Task names are translated to CheXpert's class names ("Airspace Opacity" is "Lung Opacity"),
  as everywhere in this project (:mod:`shamsul_utils.labels`).
* Masks are drawn one image at a time (:class:`AnnotationMasks`); CheXlocalize's originals are
  about 2000-3000 px a side, so a cohort's masks would not fit in memory.

Checked against CheXlocalize's own files: drawing the ``Airspace Opacity`` contour of
``patient64541_study1_view1_frontal`` in its sample ``gt_annotations_val.json`` gives its sample
``gt_segmentations_val.json`` mask exactly (163,040 pixels, none different; Pillow 13.0.0 here,
CheXlocalize pins Pillow 9.2.0). Pillow has changed how it fills fractional and degenerate
polygons between versions (e.g. python-pillow/Pillow#6275, #8616), so a few edge pixels may
differ on other contours or other Pillow versions; the polygons written by
:func:`masks_to_annotations` have whole-pixel vertices and axis or diagonal edges only, so
every edge crosses every row at a whole pixel and no rounding is left to a version (only Pillow
13.0.0 was run).

References
----------
Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation.
Nature Machine Intelligence 4, 867-878. Code and formats: github.com/rajpurkarlab/cheXlocalize
(``annotation_to_segmentation.py``, README section "Generate segmentations from human annotations").
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from .chexlocalize import MAX_MASK_PIXELS, MAX_MASK_SIDE, decode_mask, write_segmentations
from .errors import DataError
from .files import atomic_write_text
from .labels import CHEXLOCALIZE_TASK_NAMES, LOCALIZED_CLASSES, from_chexlocalize_task

__all__ = [
    "IMAGE_SIZE_KEY",
    "read_annotations",
    "write_annotations",
    "draw_polygons",
    "AnnotationMasks",
    "annotations_to_masks",
    "annotations_to_segmentations",
    "mask_to_polygons",
    "masks_to_annotations",
    "read_salient_points",
    "write_split_annotations",
]

IMAGE_SIZE_KEY = "img_size"  # CheXlocalize's key of an image's [h, w]


# ---------------------------------------------------------------------------------------------
# reading and checking


def _image_size(value, where: str) -> tuple[int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(side, (int, np.integer)) and not isinstance(side, bool) for side in value)):
        raise DataError(f"{where}: {IMAGE_SIZE_KEY} must be [h, w], two integers; got {value!r}")
    height, width = int(value[0]), int(value[1])
    if not (1 <= height <= MAX_MASK_SIDE and 1 <= width <= MAX_MASK_SIDE) or height * width > MAX_MASK_PIXELS:
        raise DataError(f"{where}: {IMAGE_SIZE_KEY} {[height, width]} is not [h, w] with sides from 1 to "
                        f"{MAX_MASK_SIDE} and at most {MAX_MASK_PIXELS} pixels")
    return height, width


def _polygons(value, size: tuple[int, int], where: str) -> list[np.ndarray]:
    """The contours of one task as float arrays ``(n, 2)`` of ``(x, y)``, or one line saying what is wrong."""
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a list of contours [[[x, y], ...], ...]; got {type(value).__name__}")
    height, width = size
    result = []
    for number, contour in enumerate(value):
        try:
            points = np.asarray(contour)
            if points.dtype.kind not in "iuf":
                raise ValueError
        except ValueError:
            points = None
        if points is None or points.ndim != 2 or (len(points) and points.shape[1] != 2):
            raise DataError(f"{where}: contour {number} is not a list of [x, y] points")
        if len(points) < 3:
            raise DataError(f"{where}: contour {number} has {len(points)} point(s); a polygon needs at least 3")
        points = points.astype(float)
        if not np.isfinite(points).all():
            raise DataError(f"{where}: contour {number} has a coordinate that is not a finite number")
        outside = (points[:, 0] < 0) | (points[:, 0] > width) | (points[:, 1] < 0) | (points[:, 1] > height)
        if outside.any():
            x, y = points[np.argmax(outside)]
            raise DataError(f"{where}: contour {number} has the point (x={x:g}, y={y:g}) outside the image "
                            f"(w={width}, h={height}; points are [x, y])")
        result.append(points)
    return result


def _class_name(task: str, where: str, *, file: bool) -> str:
    """A CheXlocalize task name (or, in memory, a CheXpert class name) as a localised class name."""
    if not file and task in LOCALIZED_CLASSES:
        return task
    try:
        return from_chexlocalize_task(task)
    except ValueError:
        raise DataError(f"{where}: unknown task {task!r}; expected one of "
                        f"{', '.join(CHEXLOCALIZE_TASK_NAMES.values())}") from None


def _parse(content, where: str, *, file: bool) -> dict[str, dict]:
    if not isinstance(content, dict):
        raise DataError(f"{where}: expected an object {{cxr_id: {{'{IMAGE_SIZE_KEY}': [h, w], task: contours}}}}")
    result: dict[str, dict] = {}
    for cxr_id, entry in content.items():
        if not isinstance(entry, dict):
            raise DataError(f"{where}: entry {cxr_id!r} is not an object of tasks")
        if IMAGE_SIZE_KEY not in entry:
            raise DataError(f"{where}: {cxr_id}: no '{IMAGE_SIZE_KEY}' [h, w]")
        size = _image_size(entry[IMAGE_SIZE_KEY], f"{where}: {cxr_id}")
        parsed: dict = {IMAGE_SIZE_KEY: size}
        for task, contours in entry.items():
            if task == IMAGE_SIZE_KEY:
                continue
            name = _class_name(task, f"{where}: {cxr_id}", file=file)
            if name in parsed:
                raise DataError(f"{where}: {cxr_id}: {task!r} given twice")
            parsed[name] = _polygons(contours, size, f"{where}: {cxr_id}/{task}")
        result[cxr_id] = parsed
    return result


def read_annotations(path: str | os.PathLike) -> dict[str, dict]:
    """Read and check a CheXlocalize annotation file (``gt_annotations_val.json``).

    Parameters
    ----------
    path : path-like
        ``{cxr_id: {"img_size": [h, w], task: [[[x, y], ...], ...]}}`` with CheXlocalize's task names.

    Returns
    -------
    dict
        ``{cxr_id: {"img_size": (h, w), class_name: [contour, ...]}}``: the file's layout with
        CheXpert's class names ("Airspace Opacity" becomes "Lung Opacity"), each contour a float
        array ``(n, 2)`` of ``(x, y)``.

    Raises
    ------
    DataError
        One line naming the file and the problem: a missing file, bad JSON, a missing or bad
        ``img_size``, an unknown task, a contour of fewer than 3 points or with a point outside
        the image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "annotations.json"
    >>> _ = path.write_text('{"p1": {"img_size": [4, 6], "Airspace Opacity": [[[0, 0], [5, 0], [5, 3]]]}}')
    >>> annotations = read_annotations(path)
    >>> annotations["p1"]["img_size"], annotations["p1"]["Lung Opacity"][0].tolist()
    ((4, 6), [[0.0, 0.0], [5.0, 0.0], [5.0, 3.0]])
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    return _parse(content, str(path), file=True)


def read_salient_points(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read CheXlocalize's human-benchmark most-representative points (``hb_salient_pt_test.json``).

    Parameters
    ----------
    path : path-like
        ``{cxr_id: {task: [[x, y], ...]}}``: for each image and task, the points the benchmark
        radiologists marked (x the column, y the row), CheXlocalize's task names.

    Returns
    -------
    dict
        ``{cxr_id: {class_name: float array (n, 2) of (x, y)}}``. The points are checked against
        an image's size when they are scored (the file has no sizes); an empty list is no point.

    Notes
    -----
    CheXlocalize scores them in ``eval.py`` (``get_hb_hitrates``): a pair with an expert mask is
    a hit when any of its points falls in the mask, at ``mask[int(y), int(x)]``; a pair the file
    has no point for is a miss; a pair without an expert mask is undefined.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: salient-point file not found")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected an object {{cxr_id: {{task: [[x, y], ...]}}}}")
    result: dict[str, dict[str, np.ndarray]] = {}
    for cxr_id, tasks in content.items():
        if not isinstance(tasks, dict):
            raise DataError(f"{path}: entry {cxr_id!r} is not an object of tasks")
        parsed = {}
        for task, points in tasks.items():
            name = _class_name(task, f"{path}: {cxr_id}", file=True)
            try:
                array = np.zeros((0, 2)) if points == [] else np.asarray(points)  # [] : no point, a miss
                if array.dtype.kind not in "iuf":
                    raise ValueError
            except ValueError:
                array = None
            if array is None or array.ndim != 2 or array.shape[1] != 2:
                raise DataError(f"{path}: {cxr_id}/{task}: expected a list of [x, y] points; got {points!r:.60}")
            array = array.astype(float)
            if not np.isfinite(array).all():
                raise DataError(f"{path}: {cxr_id}/{task}: a coordinate is not a finite number")
            parsed[name] = array
        result[cxr_id] = parsed
    return result


def write_annotations(path: str | os.PathLike, annotations: Mapping[str, Mapping]) -> None:
    """Write annotations (the layout :func:`read_annotations` returns) as a CheXlocalize annotation
    file, with CheXlocalize's task names; written atomically. Checked as :func:`read_annotations` checks."""
    checked = _parse(dict(annotations), "annotations", file=False)
    content = {}
    for cxr_id, entry in checked.items():
        written: dict = {IMAGE_SIZE_KEY: [int(side) for side in entry[IMAGE_SIZE_KEY]]}
        for name in LOCALIZED_CLASSES:
            if name in entry:
                written[CHEXLOCALIZE_TASK_NAMES[name]] = [
                    [[_number(x), _number(y)] for x, y in contour] for contour in entry[name]]
        content[cxr_id] = written
    atomic_write_text(path, json.dumps(content))


def _number(value: float) -> int | float:
    value = float(value)
    return int(value) if value.is_integer() else value


# ---------------------------------------------------------------------------------------------
# polygons to masks


def draw_polygons(polygons, size: tuple[int, int]) -> np.ndarray:
    """The mask of a task's contours, drawn as CheXlocalize's ``create_mask`` draws it.

    Parameters
    ----------
    polygons : sequence of array-like (n, 2)
        Contours of ``(x, y)`` points (x the column, y the row).
    size : (int, int)
        ``(h, w)`` of the image (CheXlocalize's ``img_size``).

    Returns
    -------
    ndarray of bool, shape (h, w)
        The union of the filled contours, outlines included: Pillow's
        ``ImageDraw.polygon(points, outline=1, fill=1)`` on a mode "1" image.

    Examples
    --------
    >>> draw_polygons([[(0, 0), (2, 0), (0, 2)]], (3, 4)).astype(int)
    array([[1, 1, 1, 0],
           [1, 1, 0, 0],
           [1, 0, 0, 0]])
    """
    height, width = (int(side) for side in size)
    image = Image.new("1", (width, height))
    drawing = ImageDraw.Draw(image)
    for contour in polygons:
        drawing.polygon(np.asarray(contour, dtype=float).ravel().tolist(), outline=1, fill=1)
    return np.array(image, dtype=bool)


class AnnotationMasks(Mapping):
    """``{cxr_id: {class_name: bool mask (h, w)}}`` of some annotations, drawn when an image is read.

    Each access draws that image's masks again (nothing is cached), so iterating over a cohort
    holds one image's masks at a time. Every one of CheXlocalize's 10 localised classes is
    present; a class without contours is an empty mask, as in CheXlocalize's segmentation files.
    """

    def __init__(self, annotations: dict[str, dict]):
        self._annotations = annotations

    def __getitem__(self, cxr_id: str) -> dict[str, np.ndarray]:
        entry = self._annotations[cxr_id]
        size = entry[IMAGE_SIZE_KEY]
        return {name: draw_polygons(entry.get(name, ()), size) for name in LOCALIZED_CLASSES}

    def __iter__(self) -> Iterator[str]:
        return iter(self._annotations)

    def __len__(self) -> int:
        return len(self._annotations)


def annotations_to_masks(annotations: Mapping[str, Mapping]) -> AnnotationMasks:
    """The masks of annotations, exactly as CheXlocalize's ``annotation_to_segmentation.py`` draws them.

    Parameters
    ----------
    annotations : mapping
        As :func:`read_annotations` returns it (class names or CheXlocalize's task names are
        both accepted in memory); checked the same way.

    Returns
    -------
    AnnotationMasks
        A mapping ``{cxr_id: {class_name: bool mask (h, w)}}`` over the annotated images, with
        all 10 localised classes per image (empty where none is annotated), drawn one image at
        a time when read (:func:`draw_polygons`).

    Examples
    --------
    >>> masks = annotations_to_masks({"p1": {"img_size": (3, 3), "Cardiomegaly": [[(0, 0), (2, 0), (2, 2)]]}})
    >>> int(masks["p1"]["Cardiomegaly"].sum()), int(masks["p1"]["Edema"].sum())
    (6, 0)
    """
    return AnnotationMasks(_parse(dict(annotations), "annotations", file=False))


def annotations_to_segmentations(annotations_path: str | os.PathLike, output_json: str | os.PathLike) -> Path:
    """Convert a CheXlocalize annotation file to a segmentation JSON, as ``annotation_to_segmentation.py`` does.

    Every annotated image gets all 10 tasks (an empty mask where the image has no contour for
    one), COCO RLE, CheXlocalize's task names, written by
    :func:`shamsul_utils.chexlocalize.write_segmentations` (atomically). As in CheXlocalize, only
    the images in the annotation file are written: an image without any positive finding is not
    in either file. Returns ``output_json`` as a :class:`~pathlib.Path`.
    """
    masks = AnnotationMasks(read_annotations(annotations_path))
    write_segmentations(output_json, masks)
    return Path(output_json)


# ---------------------------------------------------------------------------------------------
# masks to polygons

# Moore neighbourhood, clockwise on screen (rows grow downwards), starting west.
_STEPS = ((0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1))
_STEP_INDEX = {step: index for index, step in enumerate(_STEPS)}


def _trace(piece: np.ndarray) -> list[tuple[int, int]]:
    """The outer boundary of one 8-connected piece, ``(row, col)`` of its boundary pixels in order
    (Moore-neighbour tracing, stopped when the first step repeats)."""
    padded = np.pad(piece, 1)
    rows, cols = np.nonzero(padded)
    start = (int(rows[0]), int(cols[0]))  # the first pixel in raster order: its west is background
    path, point, back, first_step = [start], start, 0, None
    while True:
        for turn in range(1, 9):
            index = (back + turn) % 8
            candidate = (point[0] + _STEPS[index][0], point[1] + _STEPS[index][1])
            if padded[candidate]:
                break
        else:
            return [(start[0] - 1, start[1] - 1)]  # a single pixel
        if point == start and candidate == first_step:
            break
        first_step = first_step or candidate
        previous = _STEPS[(back + turn - 1) % 8]
        back = _STEP_INDEX[(point[0] + previous[0] - candidate[0], point[1] + previous[1] - candidate[1])]
        point = candidate
        path.append(point)
    path.pop()  # the start, reached again
    return [(row - 1, col - 1) for row, col in path]


def _corners(path: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The path without the points where it goes straight on, padded to 3 points (a polygon's least)."""
    count = len(path)
    if count >= 3:
        path = [point for index, point in enumerate(path)
                if _step(path[index - 1], point) != _step(point, path[(index + 1) % count])]
    return path + [path[-1]] * (3 - len(path))


def _step(start: tuple[int, int], end: tuple[int, int]) -> tuple[int, int]:
    return end[0] - start[0], end[1] - start[1]


def _hole_cuts(mask: np.ndarray) -> np.ndarray:
    """Pixels to take out of ``mask`` so that no background is enclosed: from the top pixel of each
    hole (4-connected background not reaching the border) up the column to the next background."""
    holes = ndimage.binary_fill_holes(mask) & ~mask
    cuts = np.zeros_like(mask)
    if not holes.any():
        return cuts
    labels, _ = ndimage.label(holes)
    for number, found in enumerate(ndimage.find_objects(labels), start=1):
        row = found[0].start
        column = int(np.flatnonzero(labels[row] == number)[0])
        top = row - 1
        while top >= 0 and mask[top, column]:
            cuts[top, column] = True
            top -= 1
    return cuts


def mask_to_polygons(mask) -> list[list[tuple[int, int]]]:
    """Contours of one mask, ``[[(x, y), ...], ...]`` with whole-pixel vertices, whose union drawn by
    :func:`draw_polygons` is the mask again, pixel for pixel (holes by cuts, see the module notes).

    Examples
    --------
    >>> square = np.zeros((4, 5), bool); square[1:3, 1:4] = True
    >>> mask_to_polygons(square)
    [[(1, 1), (3, 1), (3, 2), (1, 2)]]
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise DataError(f"mask must be 2-D (h, w), got shape {mask.shape}")
    cuts = _hole_cuts(mask)
    pieces, _ = ndimage.label(mask & ~cuts, structure=np.ones((3, 3), bool))
    polygons = []
    for number, found in enumerate(ndimage.find_objects(pieces), start=1):
        if found is None:
            continue
        path = _trace(pieces[found] == number)
        top, left = found[0].start, found[1].start
        polygons.append([(left + col, top + row) for row, col in _corners(path)])
    if cuts.any():
        polygons += mask_to_polygons(cuts)
    return polygons


def masks_to_annotations(masks: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict]:
    """Annotations (the layout of :func:`read_annotations`) whose drawing gives ``masks`` back.

    Parameters
    ----------
    masks : mapping
        ``{cxr_id: {class_name: bool mask (h, w)}}``, CheXlocalize's localised classes (CheXpert
        names or CheXlocalize's task names), the masks of one image all of one size.

    Returns
    -------
    dict
        ``{cxr_id: {"img_size": (h, w), class_name: [contour, ...]}}``, contours as lists of
        integer ``(x, y)`` (:func:`mask_to_polygons`). An empty mask has no entry, as in
        CheXlocalize's files, which list only the positive tasks; an image given no mask at all
        (no size to write) is left out, one whose masks are all empty keeps its ``img_size``.
        Write it with :func:`write_annotations`.
    """
    result: dict[str, dict] = {}
    for cxr_id, by_class in masks.items():
        shapes = {np.shape(mask) for mask in by_class.values()}
        if not shapes:
            continue  # no mask, no size: left out, as CheXlocalize leaves out images without findings
        if len(shapes) != 1:
            raise DataError(f"{cxr_id}: masks of one image must have one size (h, w); got {sorted(shapes)}")
        shape = shapes.pop()
        if len(shape) != 2:
            raise DataError(f"{cxr_id}: masks must be 2-D (h, w), got shape {shape}")
        entry: dict = {IMAGE_SIZE_KEY: (int(shape[0]), int(shape[1]))}
        for task, mask in by_class.items():
            name = _class_name(task, str(cxr_id), file=False)
            if name in entry:
                raise DataError(f"{cxr_id}: {task!r} given twice")
            polygons = mask_to_polygons(mask)
            if polygons:
                entry[name] = polygons
        result[cxr_id] = entry
    return result


def write_split_annotations(profile, split: str) -> dict:
    """Write a phantom split's expert masks as CheXlocalize's raw annotations,
    ``CheXlocalize/gt_annotations_<split>.json`` beside its segmentation JSON, and check that they
    draw back into the same masks (notebook 01): so the phantom ships both of CheXlocalize's ground
    truth formats, and ``--gt-annotations`` can be tried on it.

    As CheXlocalize's files, only the images with a positive localised finding are listed. Kept when
    it is newer than the segmentation JSON it came from (regenerated data rewrites it).

    Returns
    -------
    dict
        ``path``, ``images`` (listed), ``masks`` (non-empty masks), ``identical`` (masks drawn back
        pixel for pixel equal), ``written`` (False when the file was up to date).
    """
    from .datasets import data_path, read_split

    settings = profile.data.splits[split]
    if not settings.segmentations:
        raise DataError(f"{split}: the profile gives no segmentation JSON to write annotations from")
    source = data_path(profile, settings.segmentations)
    target = source.with_name(f"gt_annotations_{split}.json")
    written = not target.is_file() or target.stat().st_mtime < source.stat().st_mtime
    data = read_split(profile, split)
    masks = {cxr_id: {name: decode_mask(rle, where=f"{cxr_id}/{name}") for name, rle in tasks.items()}
             for cxr_id, tasks in (data.segmentations or {}).items()}
    positive = {cxr_id: by_class for cxr_id, by_class in masks.items()
                if any(mask.any() for mask in by_class.values())}
    if written:
        write_annotations(target, masks_to_annotations(positive))
    drawn = annotations_to_masks(read_annotations(target))
    identical = sum(int(np.array_equal(drawn[cxr_id][_class_name(task, cxr_id, file=False)], mask))
                    for cxr_id, by_class in positive.items() for task, mask in by_class.items() if mask.any())
    count = sum(int(mask.any()) for by_class in positive.values() for mask in by_class.values())
    return {"path": str(target), "images": len(positive), "masks": count, "identical": identical,
            "written": written}
