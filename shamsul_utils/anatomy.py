"""Anatomical regions of the phantom, and how much of a segmentation lies where its finding can occur.

A heatmap's segmentation can miss the expert mask and still point at the right organ (an opacity
map spread over the whole lung), or hit nothing plausible at all (a cardiomegaly map on the
shoulder). :func:`plausibility` measures the second: the share of a segmentation's pixels inside
the anatomical region where its class can occur (:data:`PLAUSIBLE_REGION`). It is a geometric
**proxy for medical significance**, not a clinician's judgement (data/README.md, "Anatomical
regions").

The regions of a phantom image are exact: :func:`anatomy_regions` replays the image's random
stream (:func:`shamsul_utils.phantom.generate_case`) up to its body model and derives the regions
from the generator's own geometry, without rendering the image. On data written by
:func:`~shamsul_utils.phantom.write_dataset`, :class:`PhantomRegions` reads the seed and the
settings from the dataset's manifest, so they cannot disagree with the images.

Regions (bool masks, each intersected with the body, as the phantom does with its masks):

* ``"lung fields"``: both lungs, where the generator's lung margin is positive (behind the heart
  too: a radiograph is a projection).
* ``"cardiac silhouette"``: the heart above the diaphragm; on an image with Cardiomegaly it is that
  finding's mask, pixel for pixel.
* ``"mediastinum"``: the mediastinal band (the generator's mediastinal half-width about the
  midline) from the lung apices down to the heart's centre, plus the cardiac silhouette: the
  cardiomediastinal silhouette.
* ``"pleural space"``: each hemithorax: the lung fields plus a margin of :data:`PLEURAL_MARGIN`
  body units beyond the chest wall, the apex and the hemidiaphragm (the costophrenic recesses), but
  never medial of the mediastinal band; effusions and pneumothoraces lie there.
* ``"body"``: the body silhouette.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import phantom as _phantom
from .chexlocalize import cxr_id_from_path
from .errors import DataError
from .labels import LOCALIZED_CLASSES
from .phantom import DATASET_FOLDER, PHANTOM_VERSION, PhantomSettings
from .phantom_drawing import BodyFrame

__all__ = [
    "REGIONS",
    "DEVICE_REGION",
    "PLAUSIBLE_REGION",
    "DEVICE_MARGIN",
    "PLEURAL_MARGIN",
    "anatomy_regions",
    "plausible_regions",
    "plausibility",
    "PhantomRegions",
    "split_regions",
]

REGIONS: tuple[str, ...] = ("lung fields", "cardiac silhouette", "mediastinum", "pleural space", "body")
DEVICE_REGION = "device"

# Where each of CheXlocalize's 10 localised classes can occur ("Lung Opacity" is CheXlocalize's
# Airspace Opacity).
PLAUSIBLE_REGION: dict[str, str] = {
    "Enlarged Cardiomediastinum": "mediastinum",
    "Cardiomegaly": "cardiac silhouette",
    "Lung Opacity": "lung fields",
    "Lung Lesion": "lung fields",
    "Edema": "lung fields",
    "Consolidation": "lung fields",
    "Atelectasis": "lung fields",
    "Pneumothorax": "pleural space",
    "Pleural Effusion": "pleural space",
    "Support Devices": DEVICE_REGION,
}

# Support Devices' region is the device mask dilated by this fraction of the image's shorter side
# (about 8 px at 256 px): tubes and lines are 1-3 px wide, and a segmentation of a heatmap cannot be
# thinner than a map cell, so the undilated mask would call every map implausible.
DEVICE_MARGIN = 0.03
# How far (in the phantom's body units, about the image side) the pleural space reaches beyond the
# lung's lateral, apical and basal edges.
PLEURAL_MARGIN = 0.025
_DEFAULT_SETTINGS = PhantomSettings()  # generate_case's default


def _scene(seed: int, split: str, index: int, settings: PhantomSettings) -> _phantom._Scene:
    """The phantom's scene of one image: ``generate_case``'s draws, in its order, up to the scene."""
    rng = _phantom._generator(seed, split, index, 0)
    findings = _phantom._sample_findings(rng, settings)
    severity_sum = sum(findings.values())
    rng.random()  # sex
    rng.normal(48 + 6 * severity_sum, 16)  # age
    ap_probability = 0.15 + (0.6 if "Support Devices" in findings else 0.0) + 0.1 * min(len(findings), 2)
    view = "AP" if rng.random() < ap_probability else "PA"
    anatomy = _phantom._sample_anatomy(rng, findings, view, settings)
    frame = BodyFrame(
        shift_x=float(rng.normal(0, 0.015)),
        shift_y=float(rng.normal(0.01, 0.015)),
        angle=float(rng.normal(0, 0.03)),
        scale=float(rng.uniform(0.95, 1.08)),
        size=settings.image_size,
    )
    return _phantom._Scene(anatomy, frame)


def anatomy_regions(
    seed: int, split: str, index: int, settings: PhantomSettings = _DEFAULT_SETTINGS
) -> dict[str, np.ndarray]:
    """The anatomical regions of one phantom image, exactly as its generator drew the anatomy.

    Parameters
    ----------
    seed, split, index : int, str, int
        The image's address, as in :func:`~shamsul_utils.phantom.generate_case`.
    settings : PhantomSettings, optional
        The settings the image was generated with (only ``image_size`` and the finding model matter).

    Returns
    -------
    dict of str to numpy.ndarray
        bool ``(image_size, image_size)`` for each of :data:`REGIONS` (defined in the module
        docstring), each inside ``"body"``.

    Notes
    -----
    The image's random stream is replayed up to the body model (findings, sex, age, view, anatomy,
    position on the film); nothing is rendered, so this costs about 5 ms at 256 px. ``"body"``
    equals :attr:`PhantomCase.body` bit for bit, and ``"cardiac silhouette"`` equals the
    Cardiomegaly mask of an image with Cardiomegaly (``tests/test_anatomy.py``).

    Examples
    --------
    >>> from shamsul_utils.phantom import generate_case
    >>> small = PhantomSettings(image_size=64)
    >>> regions = anatomy_regions(0, "test", 1, small)
    >>> list(regions) == list(REGIONS), regions["lung fields"].shape
    (True, (64, 64))
    >>> bool((regions["body"] == generate_case(0, "test", 1, small).body).all())
    True
    """
    scene = _scene(seed, split, index, settings)
    anatomy = scene.anatomy
    lungs = scene.lung_margin > 0
    heart = _phantom._draw_heart(scene)  # also draws into the scene's density, which is discarded
    band_width = anatomy.mediastinum(scene.v, scene.side)
    band = (scene.distance < band_width) & (scene.v >= anatomy.lung_top) & (scene.v <= anatomy.heart_centre_v)
    reach = np.minimum(
        anatomy.outer_margin(scene.distance, scene.v), anatomy.diaphragm(scene.distance, scene.side) - scene.v
    )
    pleural = lungs | ((reach > -np.float32(PLEURAL_MARGIN)) & (scene.distance > band_width))
    body = scene.body
    regions = {
        "lung fields": lungs,
        "cardiac silhouette": heart,
        "mediastinum": band | heart,
        "pleural space": pleural,
        "body": body,
    }
    return {name: mask & body for name, mask in regions.items()}


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """``mask`` grown by a disc of ``radius`` pixels (Euclidean distance, on the mask's bounding box)."""
    rows, columns = np.nonzero(mask)
    if rows.size == 0:
        return np.zeros_like(mask)
    pad = int(np.ceil(radius)) + 1
    top, left = max(rows.min() - pad, 0), max(columns.min() - pad, 0)
    box = (slice(top, rows.max() + pad + 1), slice(left, columns.max() + pad + 1))
    grown = np.zeros_like(mask)
    grown[box] = ndimage.distance_transform_edt(~mask[box]) <= radius
    return grown


def plausible_regions(
    case_regions: Mapping[str, np.ndarray],
    device_mask: np.ndarray | None,
    classes: Sequence[str] = LOCALIZED_CLASSES,
    *,
    device_margin: float = DEVICE_MARGIN,
) -> np.ndarray:
    """The region where each class can occur, for one image.

    Parameters
    ----------
    case_regions : mapping of str to numpy.ndarray
        The image's regions (:func:`anatomy_regions`, or any masks under the names of :data:`REGIONS`).
    device_mask : numpy.ndarray or None
        The image's Support Devices expert mask (``(H, W)``); None or all False when it has none.
    classes : sequence of str, optional
        Keys of :data:`PLAUSIBLE_REGION`, in the order wanted.
    device_margin : float, optional
        Support Devices' region is ``device_mask`` dilated by this fraction of the image's shorter side.

    Returns
    -------
    numpy.ndarray
        bool ``[len(classes), H, W]``; Support Devices' region is all False without a device.
    """
    unknown = [name for name in classes if name not in PLAUSIBLE_REGION]
    if unknown:
        raise DataError(f"plausible_regions: no region for {unknown[0]!r}; known: {', '.join(PLAUSIBLE_REGION)}")
    needed = {PLAUSIBLE_REGION[name] for name in classes} - {DEVICE_REGION}
    missing = sorted(needed - set(case_regions))
    if missing:
        raise DataError(f"plausible_regions: case_regions lacks {', '.join(missing)}")
    shapes = {np.shape(case_regions[name]) for name in needed}
    if device_mask is not None:
        shapes.add(np.shape(device_mask))
    if len(shapes) > 1 or any(len(shape) != 2 for shape in shapes):
        raise DataError(f"plausible_regions: regions and device mask must be one (H, W) shape, got {sorted(shapes)}")
    if not shapes:
        raise DataError("plausible_regions: no region gives the image's shape (pass the regions or a device mask)")
    shape = shapes.pop()
    device = np.zeros(shape, dtype=bool)
    if device_mask is not None and DEVICE_REGION in {PLAUSIBLE_REGION[name] for name in classes}:
        device = _dilate(np.asarray(device_mask, dtype=bool), device_margin * min(shape))
    stacked = [
        device if PLAUSIBLE_REGION[name] == DEVICE_REGION else np.asarray(case_regions[PLAUSIBLE_REGION[name]], bool)
        for name in classes
    ]
    return np.stack(stacked) if stacked else np.zeros((0, *shape), dtype=bool)


def plausibility(segmentations: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Share of each segmentation's pixels that lie inside its region.

    Parameters
    ----------
    segmentations : array_like
        ``[..., H, W]``; nonzero = inside the segmentation.
    regions : array_like
        ``[..., H, W]``, broadcastable against ``segmentations`` (e.g. :func:`plausible_regions`'s
        ``[C, H, W]`` against ``[N, C, H, W]`` segmentations).

    Returns
    -------
    numpy.ndarray
        float64 of the broadcast leading shape; NaN where a segmentation is empty.

    Examples
    --------
    >>> segmentation = np.zeros((4, 4), bool)
    >>> segmentation[0, :] = True
    >>> region = np.zeros((4, 4), bool)
    >>> region[:, :1] = True
    >>> plausibility(np.stack([segmentation, np.zeros((4, 4), bool)]), region)
    array([0.25,  nan])
    """
    segmentations = np.asarray(segmentations, dtype=bool)
    regions = np.asarray(regions, dtype=bool)
    if segmentations.ndim < 2 or regions.ndim < 2:
        raise DataError(f"plausibility: segmentations and regions must be [..., H, W], got shapes "
                        f"{segmentations.shape} and {regions.shape}")
    if segmentations.shape[-2:] != regions.shape[-2:]:
        raise DataError(f"plausibility: segmentations are {segmentations.shape[-2:]} (H, W) but regions are "
                        f"{regions.shape[-2:]}")
    try:
        leading = np.broadcast_shapes(segmentations.shape[:-2], regions.shape[:-2])
    except ValueError:
        raise DataError(f"plausibility: leading shapes {segmentations.shape[:-2]} and {regions.shape[:-2]} "
                        "do not broadcast") from None
    inside = np.count_nonzero(segmentations & regions, axis=(-2, -1))
    total = np.broadcast_to(np.count_nonzero(segmentations, axis=(-2, -1)), leading)
    return np.where(total > 0, inside / np.maximum(total, 1), np.nan).astype(np.float64)


def _data_root(source) -> Path:
    """The data folder of a profile (which must be a phantom's) or a path."""
    if hasattr(source, "data_root") and hasattr(source, "data"):
        if source.data.source != "phantom":
            raise DataError(f"profile {source.name!r}: data.source is {source.data.source!r}, not a phantom; "
                            "anatomical regions exist for the phantom only")
        return Path(source.data_root)
    return Path(os.fspath(source))


class PhantomRegions:
    """The anatomical regions of the images of a phantom on disk (:func:`~shamsul_utils.phantom.write_dataset`).

    Parameters
    ----------
    source : path-like or Profile
        The data folder (holding ``phantom_manifest.json``), or a phantom profile (its ``data_root``).

    Attributes
    ----------
    root : pathlib.Path
    seed : int
    settings : PhantomSettings
        Read from the manifest, so the regions are those of the images on disk.
    sizes : dict of str to int

    Notes
    -----
    Row ``i`` of ``CheXpert-v1.0-phantom/{split}.csv`` is ``generate_case(seed, split, i, settings)``
    (``write_dataset`` writes the rows in index order), so an image id is looked up in its split's CSV.
    A folder without a manifest (not a phantom), another generator, another ``PHANTOM_VERSION`` or
    other generator code than this checkout's raises :class:`~shamsul_utils.errors.DataError`.
    """

    def __init__(self, source) -> None:
        self.root = _data_root(source)
        manifest_path = self.root / "phantom_manifest.json"
        if not manifest_path.is_file():
            raise DataError(f"{self.root}: no phantom_manifest.json: not a phantom written by "
                            "shamsul_utils.phantom.write_dataset (anatomical regions exist for the phantom only)")
        try:
            manifest = json.loads(manifest_path.read_text())
            generator, version, code = manifest["generator"], manifest["version"], manifest["code"]
            self.seed = int(manifest["seed"])
            self.sizes = {str(split): int(count) for split, count in manifest["sizes"].items()}
            settings = dict(manifest["settings"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise DataError(f"{manifest_path}: not a readable phantom manifest ({error.__class__.__name__}: "
                            f"{error})") from None
        if generator != "shamsul_utils.phantom":
            raise DataError(f"{manifest_path}: written by {generator!r}, not shamsul_utils.phantom")
        if version != PHANTOM_VERSION:
            raise DataError(f"{manifest_path}: phantom version {version}, but this checkout generates "
                            f"{PHANTOM_VERSION}: regenerate the data (write_dataset, notebook 01)")
        if code != _phantom._code_digest():
            raise DataError(f"{manifest_path}: written by other phantom code ({code}, this checkout's is "
                            f"{_phantom._code_digest()}): regenerate the data (write_dataset, notebook 01)")
        try:
            self.settings = PhantomSettings(**settings)
        except TypeError as error:
            raise DataError(f"{manifest_path}: settings do not fit PhantomSettings ({error})") from None
        self._indices: dict[str, dict[str, int]] = {}

    def indices(self, split: str) -> dict[str, int]:
        """``{cxr_id: index}`` of a split, from its CSV (read once)."""
        if split not in self._indices:
            if split not in self.sizes:
                raise DataError(f"{self.root}: the phantom has no split {split!r} (it has {', '.join(self.sizes)})")
            csv_path = self.root / DATASET_FOLDER / f"{split}.csv"
            try:
                with open(csv_path, newline="") as handle:
                    paths = [row["Path"] for row in csv.DictReader(handle)]
            except (OSError, KeyError) as error:
                raise DataError(f"{csv_path}: cannot read the split's Path column ({error.__class__.__name__})") from None
            if len(paths) != self.sizes[split]:
                raise DataError(f"{csv_path}: {len(paths)} rows, but the manifest says {self.sizes[split]}")
            self._indices[split] = {cxr_id_from_path(path): index for index, path in enumerate(paths)}
        return self._indices[split]

    def index(self, split: str, cxr_id: str) -> int:
        """The generator index of image ``cxr_id`` (as in ``SplitData.table["cxr_id"]``) of ``split``."""
        try:
            return self.indices(split)[cxr_id]
        except KeyError:
            raise DataError(f"{self.root}: image {cxr_id!r} is not in the phantom's {split!r} split") from None

    def regions(self, split: str, cxr_id: str) -> dict[str, np.ndarray]:
        """:func:`anatomy_regions` of one image of a split."""
        return anatomy_regions(self.seed, split, self.index(split, cxr_id), self.settings)


def split_regions(
    source, split: str, cxr_ids: Iterable[str] | None = None
) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """The regions of the images of a phantom split, one image at a time.

    Parameters
    ----------
    source : path-like or Profile
        As for :class:`PhantomRegions`.
    split : str
        ``"train"``, ``"valid"``, ``"test"`` (a split of the phantom).
    cxr_ids : iterable of str, optional
        The images wanted, in order (default: every image of the split, in CSV order).

    Yields
    ------
    (str, dict of str to numpy.ndarray)
        The image id and its :func:`anatomy_regions`.
    """
    reader = PhantomRegions(source)
    for cxr_id in reader.indices(split) if cxr_ids is None else cxr_ids:
        yield cxr_id, reader.regions(split, cxr_id)
