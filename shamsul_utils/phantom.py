"""A seeded, procedurally generated frontal chest-radiograph phantom with exact lesion masks.

This is a **didactic phantom, not a physics simulation**: it draws the shapes a reader of a
chest film expects (bright = dense, dark = air) from a handful of analytic fields, so that a
classifier can learn the 14 CheXpert observations and explanation heatmaps can be scored
against masks that are exactly right by construction. Nothing here models X-ray transport.

Anatomy model
-------------
Every patient gets a :class:`~shamsul_utils.phantom_drawing.BodyFrame` (shift, small rotation,
scale) and anatomical parameters (widths, diaphragm levels, heart size). In body coordinates
``(u, v)`` (``u`` < 0 on the image left = the patient's right) the image is a sum of
"densities":

* **body**: a trunk silhouette (neck, shoulders, chest wall) whose soft tissue is thickest in
  the middle; air outside it is dark.
* **lungs**: two fields bounded by the lateral chest wall (a rounded apex), the mediastinum and a
  domed hemidiaphragm each; where a dome meets the chest wall it leaves a sharp costophrenic
  angle. The right hemidiaphragm (image left) sits higher; a gastric bubble lies under the left.
* **vessels**: tapering radial streaks from each hilum, warped by smooth noise so they curve,
  with a finer second generation further out, fading toward the periphery.
* **mediastinum, trachea, heart**: a bright midline band (aortic knob on the image right), a dark
  tracheal column, and a heart ellipse that bulges to the image right (the patient's left).
* **bones**: the spine (vertebral bodies), posterior ribs as one periodic field along curved
  rib lines (so all ribs cost one vectorised expression), and two clavicles.
* **exposure**: densities become intensities by ``1 - exp(-k d)``, then per-patient brightness,
  contrast, gamma, quantum + electronic noise and optional burned-in markers ("L"/"R", a text
  strip such as "PORTABLE" on AP films).

Pathologies
-----------
Each finding has a severity in (0, 1]; lesion contrasts are multiplied by
:attr:`PhantomSettings.contrast` and sizes by :attr:`PhantomSettings.lesion_scale`. The mask of a
localised finding is the exact set of pixels where its density was drawn (intersected with the
body), so it always sits where the finding is visible.

* Enlarged Cardiomediastinum: the superior mediastinum widened; mask = the widened band between
  the lung apices and the top of the heart.
* Cardiomegaly: cardiothoracic ratio above 0.5 (mildly to clearly); mask = the heart silhouette
  above the diaphragm.
* Lung Opacity: a patch of smooth noise thresholded inside a blob in one lung; mask = the patch.
* Lung Lesion: a round, slightly lobulated nodule or mass (sphere-like density profile).
* Edema: bilateral perihilar ("bat-wing") haze with blurred, thickened vessels; mask = both lungs
  where the haze exceeds a third of its peak.
* Consolidation: a dense lobar opacity with dark air bronchograms branching inside it.
* Atelectasis: a plate-like basal band with the hemidiaphragm of that side raised (volume loss).
* Pneumothorax: lung markings removed and the field darkened between the chest wall and a thin
  visible pleural line; mask = that lucent rim.
* Pleural Effusion: fluid in the base of one hemithorax under a meniscus that rises laterally,
  blunting the costophrenic angle; mask = the fluid.
* Support Devices: endotracheal tube, nasogastric tube, central line, pacemaker with a lead, ECG
  electrodes; mask = the drawn device pixels.
* Pneumonia (no mask): implies a consolidation or an opacity, which is drawn as such.
* Pleural Other (no mask): small calcified pleural plaques along the chest wall.
* Fracture (no mask): a rib displaced across a gap.

A confounder for shortcut experiments (:attr:`PhantomSettings.shortcut`) is drawn as a chest
drain (a thick tube with a radio-opaque stripe entering the lateral chest wall and ending in the
pleural space at the apex); its mask is returned under the key ``"Confounder"``.

Determinism: every image has its own :class:`numpy.random.Generator` seeded from
``(seed, split, index)`` by :class:`numpy.random.SeedSequence`, so an image does not depend on
how many others are generated, and generation can be parallel or resumed.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .chexlocalize import cxr_id_from_path, encode_mask, write_segmentations
from .errors import DataError
from .files import atomic_path, atomic_write_text
from .labels import CLASSES, LOCALIZED_CLASSES
from .phantom_drawing import (
    BodyFrame,
    bezier_curve,
    draw_polylines,
    draw_text,
    smooth_noise,
    smoothstep,
)

__all__ = [
    "PHANTOM_VERSION",
    "DATASET_FOLDER",
    "PhantomSettings",
    "PhantomCase",
    "generate_case",
    "write_dataset",
    "csv_columns",
]

PHANTOM_VERSION = "1.1"
DATASET_FOLDER = "CheXpert-v1.0-phantom"
CONFOUNDER = "Confounder"
_SPLIT_ORDER = ("train", "valid", "test")
_F = np.float32


@dataclass(frozen=True)
class PhantomSettings:
    """Knobs of the phantom. Defaults give findings a person can see but that are not glaring.

    Parameters
    ----------
    image_size : int
        Side length of the square images in pixels.
    contrast : float
        Multiplies every lesion's contrast (and the excess size of the geometric findings,
        cardiomegaly and enlarged cardiomediastinum).
    lesion_scale : float
        Multiplies lesion sizes (nodules, opacities, consolidations, effusions, ...).
    noise : float
        Multiplies quantum and electronic noise.
    markers : bool
        Burn in side markers ("L"/"R") and text strips as on real films.
    shortcut : tuple of (str, float, float) or None
        ``(class_name, p_positive, p_negative)``: a chest drain (the confounder) is drawn with
        probability ``p_positive`` on images positive for ``class_name`` and ``p_negative`` on the
        others. It never sets Support Devices.
    healthy_fraction : float
        Share of patients drawn without any finding (No Finding also arises by chance).
    single_fraction : float
        Share of patients drawn with exactly one localised finding; the rest follow a
        co-occurrence model (cardiac failure, infection, intensive care).
    """

    image_size: int = 256
    contrast: float = 1.0
    lesion_scale: float = 1.0
    noise: float = 1.0
    markers: bool = True
    shortcut: tuple[str, float, float] | None = None
    healthy_fraction: float = 0.2
    single_fraction: float = 0.33

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise DataError(f"PhantomSettings.image_size must be at least 32, got {self.image_size}")
        for name in ("contrast", "lesion_scale", "noise"):
            if getattr(self, name) < 0:
                raise DataError(f"PhantomSettings.{name} must be non-negative, got {getattr(self, name)}")
        if not 0 <= self.healthy_fraction + self.single_fraction <= 1:
            raise DataError("PhantomSettings: healthy_fraction + single_fraction must lie in [0, 1]")
        if self.shortcut is not None:
            if len(self.shortcut) != 3:
                raise DataError(
                    f"PhantomSettings.shortcut must be (class, p_positive, p_negative), got {self.shortcut}"
                )
            name, p_positive, p_negative = self.shortcut
            if name not in CLASSES or name == "No Finding":
                raise DataError(f"PhantomSettings.shortcut: unknown finding {name!r}")
            if not (0 <= p_positive <= 1 and 0 <= p_negative <= 1):
                raise DataError(
                    f"PhantomSettings.shortcut: probabilities must lie in [0, 1], got {self.shortcut}"
                )
            object.__setattr__(self, "shortcut", (str(name), float(p_positive), float(p_negative)))


@dataclass
class PhantomCase:
    """One generated radiograph.

    Attributes
    ----------
    image : numpy.ndarray
        uint8 ``(H, W)``.
    labels : numpy.ndarray
        float32 ``(14,)`` in :data:`~shamsul_utils.labels.CLASSES` order, 0 or 1.
    masks : dict of str to numpy.ndarray
        bool ``(H, W)`` for each positive localised class, plus ``"Confounder"`` when drawn.
    sex, age, view : str, int, str
        "Male"/"Female", years, "AP"/"PA".
    body : numpy.ndarray
        bool ``(H, W)``: the body silhouette; every mask lies inside it.
    severities : dict of str to float
        Severity in (0, 1] of every positive class (for analyses of difficulty).
    """

    image: np.ndarray
    labels: np.ndarray
    masks: dict[str, np.ndarray]
    sex: str
    age: int
    view: str
    body: np.ndarray
    severities: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Label model
# --------------------------------------------------------------------------------------------

# Background rate of each finding in the co-occurrence branch, and what each latent condition adds.
_BASE_RATE = {
    "Enlarged Cardiomediastinum": 0.08,
    "Cardiomegaly": 0.08,
    "Lung Opacity": 0.12,
    "Lung Lesion": 0.14,
    "Edema": 0.04,
    "Consolidation": 0.04,
    "Pneumonia": 0.0,
    "Atelectasis": 0.10,
    "Pneumothorax": 0.08,
    "Pleural Effusion": 0.06,
    "Pleural Other": 0.05,
    "Fracture": 0.07,
    "Support Devices": 0.10,
}
_CONDITIONS = {
    "cardiac": (
        0.35,
        {
            "Cardiomegaly": 0.55,
            "Edema": 0.45,
            "Pleural Effusion": 0.45,
            "Enlarged Cardiomediastinum": 0.3,
            "Support Devices": 0.3,
        },
    ),
    "infection": (
        0.35,
        {"Consolidation": 0.4, "Lung Opacity": 0.45, "Atelectasis": 0.2, "Pleural Effusion": 0.15},
    ),
    "intensive_care": (
        0.3,
        {
            "Support Devices": 0.75,
            "Atelectasis": 0.3,
            "Pneumothorax": 0.25,
            "Pleural Effusion": 0.2,
            "Lung Opacity": 0.2,
            "Edema": 0.15,
        },
    ),
}


def _sample_findings(rng: np.random.Generator, settings: PhantomSettings) -> dict[str, float]:
    """Positive findings with their severities: ``{class_name: severity in (0, 1]}``."""
    branch = rng.random()
    severity = rng.uniform(0.05, 1.0, size=len(CLASSES))
    condition_draws = rng.random(len(_CONDITIONS))
    finding_draws = rng.random(len(CLASSES))
    if branch < settings.healthy_fraction:
        return {}
    if branch < settings.healthy_fraction + settings.single_fraction:
        name = LOCALIZED_CLASSES[int(finding_draws[0] * len(LOCALIZED_CLASSES))]
        return {name: float(severity[CLASSES.index(name)])}
    probability = dict(_BASE_RATE)
    for draw, (prior, effects) in zip(condition_draws, _CONDITIONS.values(), strict=True):
        if draw < prior:
            for name, added in effects.items():
                probability[name] = 1 - (1 - probability[name]) * (1 - added)
    findings = {}
    for position, name in enumerate(CLASSES):
        if name != "No Finding" and finding_draws[position] < probability[name]:
            findings[name] = float(severity[position])
    if "Consolidation" in findings or "Lung Opacity" in findings:
        if rng.random() < 0.5:
            findings["Pneumonia"] = float(severity[CLASSES.index("Pneumonia")])
    return findings


def _labels_from_findings(findings: dict[str, float]) -> np.ndarray:
    labels = np.zeros(len(CLASSES), dtype=np.float32)
    for name in findings:
        labels[CLASSES.index(name)] = 1.0
    labels[0] = 0.0 if findings else 1.0
    return labels


# --------------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Anatomy:
    """Per-patient anatomical parameters in body units (see the module docstring)."""

    body_width: float  # half-width of the trunk below the shoulders
    neck_width: float
    thorax_width: float  # half-width of each hemithorax at the base (lateral chest wall)
    lung_top: float  # v of the lung apices
    midline: float  # u of the mediastinal midline
    mediastinum_width: float  # half-width of the superior mediastinum
    mediastinum_widening: float
    diaphragm_right: float  # v of the lateral end of the image-left hemidiaphragm
    diaphragm_left: float
    dome_height: float
    heart_left_extent: float  # towards the image left, from the midline
    heart_right_extent: float  # towards the image right (the bulge)
    heart_centre_v: float
    heart_half_height: float
    hilum_v: float
    rib_spacing: float

    def diaphragm_level(self, side: np.ndarray) -> np.ndarray:
        return np.where(side > 0, _F(self.diaphragm_left), _F(self.diaphragm_right))

    def apex_centre(self) -> tuple[float, float, float, float]:
        """Lateral distance, height and semi-axes of the ellipse that rounds each lung apex."""
        half_width = 0.5 * (self.thorax_width - self.mediastinum_width)
        centre = self.thorax_width - half_width
        return centre, self.lung_top + 0.22, half_width, 0.22

    def chest_wall(self, v: np.ndarray) -> np.ndarray:
        """Lateral distance of the chest wall (lung edge) at height ``v`` (rounded apex, widening)."""
        centre, centre_v, half_width, half_height = self.apex_centre()
        above = np.clip((_F(centre_v) - v) / _F(half_height), 0.0, 1.0)
        widening = _F(1.0) + _F(0.1) * np.clip((v - _F(centre_v)) / _F(0.35), 0.0, 1.0)
        return _F(centre) + _F(half_width) * np.sqrt(_F(1.0) - above**2) * widening

    def mediastinum(self, v: np.ndarray, side: np.ndarray) -> np.ndarray:
        """Half-width of the mediastinum at height ``v`` on each side (aortic knob on the image right)."""
        superior = smoothstep(self.lung_top, self.lung_top + 0.06, v) * (
            1 - smoothstep(self.heart_centre_v - 0.6 * self.heart_half_height, self.heart_centre_v, v)
        )
        knob = np.exp(-(((v - _F(self.lung_top + 0.15)) / _F(0.035)) ** 2)) * (side > 0)
        return _F(self.mediastinum_width) + _F(self.mediastinum_widening) * superior + _F(0.012) * knob

    def diaphragm(self, distance: np.ndarray, side: np.ndarray) -> np.ndarray:
        """v of the hemidiaphragm at lateral distance ``distance`` from the midline."""
        peak = _F(0.42 * self.thorax_width)
        reach = _F(0.58 * self.thorax_width)
        dome = 1 - ((distance - peak) / reach) ** 2
        return self.diaphragm_level(side) - _F(self.dome_height) * dome

    def lung_margin(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Signed margin (body units) to the nearest lung boundary; positive inside a lung."""
        offset = u - _F(self.midline)
        side = np.where(offset >= 0, _F(1.0), _F(-1.0))
        distance = np.abs(offset)
        medial = distance - self.mediastinum(v, side) - _F(0.006)
        basal = self.diaphragm(distance, side) - v
        return np.minimum(np.minimum(self.outer_margin(distance, v), medial), basal)

    def outer_margin(self, distance: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Margin to the chest wall and the apex only (where a pneumothorax collects)."""
        lateral = self.chest_wall(v) - distance
        centre, centre_v, half_width, half_height = self.apex_centre()
        x = (distance - _F(centre)) / _F(half_width)
        y = (v - _F(centre_v)) / _F(half_height)
        ellipse = np.sqrt(x * x + y * y)
        gradient = np.sqrt((x / _F(half_width)) ** 2 + (y / _F(half_height)) ** 2) + _F(1e-6)
        apex = np.where(v < _F(centre_v), (_F(1.0) - ellipse) * ellipse / gradient, _F(1.0))
        return np.minimum(lateral, apex)


def _sample_anatomy(
    rng: np.random.Generator, findings: dict[str, float], view: str, settings: PhantomSettings
) -> _Anatomy:
    draws = rng.uniform(size=16)
    body_width = 0.43 + 0.07 * draws[0]
    thorax_width = body_width * (0.78 + 0.06 * draws[1])
    lung_top = 0.1 + 0.04 * draws[2]
    diaphragm_right = 0.71 + 0.06 * draws[3] - (0.03 if view == "AP" else 0.0)
    diaphragm_left = diaphragm_right + 0.012 + 0.025 * draws[4]
    widening = 0.0
    if "Enlarged Cardiomediastinum" in findings:
        widening = 0.004 + settings.contrast * 0.026 * findings["Enlarged Cardiomediastinum"]
    ratio = 0.40 + 0.10 * draws[5]
    if "Cardiomegaly" in findings:
        ratio = 0.505 + settings.contrast * 0.08 * findings["Cardiomegaly"]
    heart_width = min(ratio, 0.8) * 2 * thorax_width * (1.03 if view == "AP" else 1.0)
    bulge = 0.6 + 0.08 * draws[6]
    heart_half_height = 0.14 + 0.03 * draws[7] + 0.2 * max(0.0, ratio - 0.5)
    if "Atelectasis" in findings and draws[15] < 0.6:
        shift = 0.035 * (0.5 + findings["Atelectasis"])
        if draws[14] < 0.5:
            diaphragm_right -= shift
        else:
            diaphragm_left -= shift
    return _Anatomy(
        body_width=body_width,
        neck_width=0.1 + 0.03 * draws[8],
        thorax_width=thorax_width,
        lung_top=lung_top,
        midline=0.01 * (draws[9] - 0.5),
        mediastinum_width=0.05 + 0.012 * draws[10],
        mediastinum_widening=widening,
        diaphragm_right=diaphragm_right,
        diaphragm_left=diaphragm_left,
        dome_height=0.05 + 0.03 * draws[11],
        heart_left_extent=heart_width * (1 - bulge),
        heart_right_extent=heart_width * bulge,
        heart_centre_v=diaphragm_left - 0.7 * heart_half_height,
        heart_half_height=heart_half_height,
        hilum_v=lung_top + 0.27 + 0.04 * draws[12],
        rib_spacing=0.058 + 0.008 * draws[13],
    )


class _Scene:
    """The density image under construction, with the geometry fields that pathologies reuse."""

    def __init__(self, anatomy: _Anatomy, frame: BodyFrame) -> None:
        self.anatomy = anatomy
        self.frame = frame
        self.size = frame.size
        self.u, self.v = frame.body_coordinates()
        offset = self.u - _F(anatomy.midline)
        self.side = np.where(offset >= 0, _F(1.0), _F(-1.0))
        self.distance = np.abs(offset)
        self.lung_margin = anatomy.lung_margin(self.u, self.v)
        self.lung = smoothstep(0.0, 0.02, self.lung_margin)
        shoulders = smoothstep(anatomy.lung_top - 0.12, anatomy.lung_top + 0.1, self.v)
        body_half_width = _F(anatomy.neck_width) + _F(anatomy.body_width - anatomy.neck_width) * np.sqrt(
            shoulders
        )
        self.body_half_width = body_half_width
        self.body = np.abs(self.u) < body_half_width
        self.density = np.zeros((self.size, self.size), dtype=np.float32)
        self.vessel_gain = np.ones((self.size, self.size), dtype=np.float32)
        self.vessel_blur = 0.0
        self.rib_offset = np.zeros((self.size, self.size), dtype=np.float32)
        self.rib_gap = np.ones((self.size, self.size), dtype=np.float32)

    def pixels(self, u, v) -> np.ndarray:
        return self.frame.to_pixels(u, v)

    def width_pixels(self, body_units: float) -> float:
        return body_units * self.frame.pixels_per_unit()

    def sample_lung_point(self, rng: np.random.Generator, *, clearance: float, v_range=(0.0, 1.0), side=None):
        """A random point ``(u, v, side)`` inside a lung at least ``clearance`` from its edges."""
        anatomy = self.anatomy
        for _ in range(40):
            chosen_side = side if side is not None else (1.0 if rng.random() < 0.5 else -1.0)
            distance = rng.uniform(0.03, anatomy.thorax_width)
            v = rng.uniform(max(anatomy.lung_top, v_range[0]), min(anatomy.diaphragm_left, v_range[1]))
            u = anatomy.midline + chosen_side * distance
            if float(anatomy.lung_margin(np.float32(u), np.float32(v))) > clearance:
                return u, v, chosen_side
        chosen_side = side if side is not None else 1.0
        return anatomy.midline + chosen_side * 0.55 * anatomy.thorax_width, anatomy.hilum_v + 0.1, chosen_side


def _draw_body(scene: _Scene) -> None:
    thickness = np.sqrt(np.clip(1 - (scene.u / scene.body_half_width) ** 2, 0.0, 1.0))
    edge = smoothstep(0.0, 0.01, scene.body_half_width - np.abs(scene.u))
    scene.density += _F(0.5) * edge * (_F(0.3) + _F(0.7) * thickness)


def _draw_lungs(scene: _Scene, rng: np.random.Generator) -> None:
    depth = smoothstep(0.0, 0.12, scene.lung_margin)
    variation = _F(1.0) + _F(0.06) * smooth_noise(rng, scene.size, 5)
    scene.density -= _F(0.36) * scene.lung * (_F(0.7) + _F(0.3) * depth) * variation


def _draw_gastric_bubble(scene: _Scene, rng: np.random.Generator) -> None:
    anatomy = scene.anatomy
    centre_u = anatomy.midline + anatomy.thorax_width * rng.uniform(0.35, 0.6)
    centre_v = anatomy.diaphragm_left + rng.uniform(0.03, 0.05)
    radius = ((scene.u - _F(centre_u)) / _F(0.06)) ** 2 + ((scene.v - _F(centre_v)) / _F(0.03)) ** 2
    below = smoothstep(0.0, 0.01, scene.v - scene.anatomy.diaphragm(scene.distance, scene.side) - _F(0.015))
    scene.density -= _F(rng.uniform(0.05, 0.15)) * smoothstep(1.0, 0.6, radius) * below


def _draw_mediastinum(scene: _Scene) -> None:
    anatomy = scene.anatomy
    width = anatomy.mediastinum(scene.v, scene.side)
    band = smoothstep(0.0, 0.008, width - scene.distance) * smoothstep(
        anatomy.heart_centre_v + 0.3 * anatomy.heart_half_height,
        anatomy.heart_centre_v - 0.3 * anatomy.heart_half_height,
        scene.v,
    )
    scene.density += _F(0.2) * band
    trachea_end = anatomy.hilum_v - 0.04
    trachea = smoothstep(0.0, 0.004, _F(0.015) - np.abs(scene.u - _F(anatomy.midline))) * smoothstep(
        trachea_end, trachea_end - 0.03, scene.v
    )
    scene.density -= _F(0.14) * trachea


def _heart_radius(scene: _Scene) -> np.ndarray:
    anatomy = scene.anatomy
    offset = scene.u - _F(anatomy.midline)
    extent = np.where(offset >= 0, _F(anatomy.heart_right_extent), _F(anatomy.heart_left_extent))
    return (offset / extent) ** 2 + (
        (scene.v - _F(anatomy.heart_centre_v)) / _F(anatomy.heart_half_height)
    ) ** 2


def _draw_heart(scene: _Scene) -> np.ndarray:
    """Draw the heart; returns its silhouette above the diaphragm (the Cardiomegaly region)."""
    radius = _heart_radius(scene)
    profile = np.clip(1 - radius, 0.0, 1.0) ** _F(0.35)
    scene.density += _F(0.24) * profile
    above = scene.v < scene.anatomy.diaphragm(scene.distance, scene.side) + _F(0.01)
    return (radius < 1) & above


def _draw_spine(scene: _Scene) -> None:
    vertebrae = _F(0.8) + _F(0.2) * np.cos(_F(2 * np.pi / 0.05) * scene.v) ** 2
    column = smoothstep(0.0, 0.008, _F(0.034) - np.abs(scene.u - _F(scene.anatomy.midline)))
    scene.density += _F(0.1) * column * vertebrae * (scene.v > _F(0.03))


def _draw_ribs(scene: _Scene) -> None:
    anatomy = scene.anatomy
    distance = scene.distance
    rib_line = scene.v - (_F(-0.15) * distance + _F(1.5) * distance**2) + scene.rib_offset
    phase = (rib_line - _F(anatomy.lung_top - 0.06)) / _F(anatomy.rib_spacing)
    fraction = phase - np.floor(phase)
    thickness = _F(0.42)
    position = fraction / thickness
    inside = smoothstep(0.0, 0.12, position) * smoothstep(1.0, 0.88, position)
    cortex = _F(0.7) + _F(0.3) * np.abs(_F(2) * position - _F(1)) ** 3
    extent = smoothstep(0.02, 0.035, distance) * smoothstep(
        0.0, 0.02, anatomy.chest_wall(scene.v) + _F(0.03) - distance
    )
    rows = (phase > 0) & (phase < 10)
    scene.density += _F(0.07) * inside * cortex * extent * rows * scene.rib_gap


def _draw_clavicles(scene: _Scene, rng: np.random.Generator) -> None:
    anatomy = scene.anatomy
    lines = []
    for side in (-1.0, 1.0):
        top = anatomy.lung_top + rng.uniform(-0.01, 0.02)
        control = np.array([[0.03, top + 0.06], [0.14, top + 0.06], [0.2, top - 0.01], [0.36, top - 0.02]])
        curve = bezier_curve(control, 16)
        pixels = scene.pixels(anatomy.midline + side * curve[:, 0], curve[:, 1])
        lines.append((pixels, scene.width_pixels(0.022)))
    scene.density += _F(0.12) * draw_polylines(scene.size, lines)


def _draw_breasts(scene: _Scene) -> None:
    anatomy = scene.anatomy
    level = anatomy.diaphragm_right - 0.02
    for side in (-1.0, 1.0):
        centre_u = anatomy.midline + side * 0.55 * anatomy.thorax_width
        radius = ((scene.u - _F(centre_u)) / _F(0.17)) ** 2 + ((scene.v - _F(level)) / _F(0.12)) ** 2
        scene.density += _F(0.08) * smoothstep(1.0, 0.7, radius) * scene.body


def _vessel_field(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Tapering branching streaks radiating from both hila, computed over each lung's bounding box."""
    total = np.zeros((scene.size, scene.size), dtype=np.float32)
    for side in (-1.0, 1.0):
        rows, columns = np.nonzero((scene.lung_margin > 0) & (scene.side == _F(side)))
        if rows.size == 0:
            continue
        box = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
        total[box] += _hilum_streaks(scene.u[box], scene.v[box], scene.anatomy, side, rng)
    return total


def _hilum_streaks(
    u: np.ndarray, v: np.ndarray, anatomy: _Anatomy, side: float, rng: np.random.Generator
) -> np.ndarray:
    hilum_u = anatomy.midline + side * (anatomy.mediastinum_width + 0.03)
    du = (u - _F(hilum_u)) * _F(side)
    dv = v - _F(anatomy.hilum_v)
    radius = np.sqrt(du * du + dv * dv) + _F(1e-3)
    angle = np.arctan2(dv, du)
    total = _F(0.7) * np.exp(-((radius / _F(0.04)) ** 2))
    for count, width, fade, start, warp_scale in ((7, 0.009, 0.14, 0.0, 0.3), (17, 0.005, 0.18, 0.06, 0.18)):
        warp = _F(warp_scale) * smooth_noise(rng, u.shape, 9)
        presence = np.clip(_F(0.6) + _F(0.6) * smooth_noise(rng, u.shape, 7), 0.0, 1.0)
        threshold = np.cos(np.clip(_F(count * width) / radius, 0.0, np.pi))
        wave = np.cos(_F(count) * (angle + warp))
        streak = np.clip((wave - threshold) / (_F(1.0) - threshold + _F(1e-3)), 0.0, 1.0)
        total += streak * np.exp(-radius / _F(fade)) * smoothstep(start, start + 0.04, radius) * presence
    return total


# --------------------------------------------------------------------------------------------
# Pathologies: each draws into scene.density and returns its exact mask (or None)
# --------------------------------------------------------------------------------------------


def _draw_enlarged_cardiomediastinum(
    scene: _Scene, severity: float, settings: PhantomSettings, rng
) -> np.ndarray:
    anatomy = scene.anatomy
    width = anatomy.mediastinum(scene.v, scene.side)
    top = anatomy.lung_top + 0.02
    bottom = anatomy.heart_centre_v - 0.6 * anatomy.heart_half_height
    return (scene.distance < width) & (scene.v > _F(top)) & (scene.v < _F(bottom))


def _draw_lung_opacity(scene: _Scene, severity: float, settings: PhantomSettings, rng) -> np.ndarray:
    radius = settings.lesion_scale * (0.06 + 0.06 * severity)
    centre_u, centre_v, _ = scene.sample_lung_point(rng, clearance=0.02)
    blob = np.exp(-(((scene.u - _F(centre_u)) ** 2 + (scene.v - _F(centre_v)) ** 2) / _F(radius**2)))
    patches = _F(0.6) + _F(0.4) * smooth_noise(rng, scene.size, 20)
    field = blob * patches - _F(0.3)
    support = (field > 0) & (scene.lung_margin > 0)
    shape = np.where(support, np.clip(field / _F(0.3), 0.0, 1.0), _F(0.0)) * scene.lung
    amplitude = settings.contrast * (0.15 + 0.08 * severity)
    scene.density += _F(amplitude) * shape
    scene.vessel_gain *= _F(1.0) - _F(0.5) * shape
    return support & (shape > 0)


def _draw_lung_lesion(scene: _Scene, severity: float, settings: PhantomSettings, rng) -> np.ndarray:
    radius = settings.lesion_scale * (0.026 + 0.04 * severity**1.5)
    centre_u, centre_v, _ = scene.sample_lung_point(rng, clearance=radius + 0.008)
    du, dv = scene.u - _F(centre_u), scene.v - _F(centre_v)
    angle = np.arctan2(dv, du)
    phases = rng.uniform(0, 2 * np.pi, 2)
    lobulation = (
        _F(1.0)
        + _F(0.08) * np.cos(_F(3) * angle + _F(phases[0]))
        + _F(0.05) * np.cos(_F(5) * angle + _F(phases[1]))
    )
    relative = np.sqrt(du * du + dv * dv) / (_F(radius) * lobulation)
    profile = np.sqrt(np.clip(1 - relative**2, 0.0, 1.0))
    amplitude = settings.contrast * (0.2 + 0.08 * severity)
    scene.density += _F(amplitude) * (_F(0.4) + _F(0.6) * profile) * (relative < 1)
    return relative < 1


def _draw_edema(scene: _Scene, severity: float, settings: PhantomSettings, rng) -> np.ndarray:
    anatomy = scene.anatomy
    spread = settings.lesion_scale * (0.085 + 0.05 * severity)
    haze = np.zeros_like(scene.density)
    for side in (-1.0, 1.0):
        hilum_u = anatomy.midline + side * (anatomy.mediastinum_width + 0.04)
        distance2 = ((scene.u - _F(hilum_u)) / _F(1.3)) ** 2 + (scene.v - _F(anatomy.hilum_v + 0.03)) ** 2
        haze = np.maximum(haze, np.exp(-distance2 / _F(2 * spread**2)))
    haze *= _F(0.75) + _F(0.25) * smooth_noise(rng, scene.size, 12)
    field = np.clip((haze - _F(0.33)) / _F(0.67), 0.0, 1.0)
    support = (field > 0) & (scene.lung_margin > 0)
    amplitude = settings.contrast * (0.09 + 0.07 * severity)
    scene.density += _F(amplitude) * field * scene.lung * support
    scene.vessel_blur = max(scene.vessel_blur, 0.5 + 0.5 * severity)
    return support


def _draw_consolidation(scene: _Scene, severity: float, settings: PhantomSettings, rng) -> np.ndarray:
    radius = settings.lesion_scale * (0.07 + 0.06 * severity)
    centre_u, centre_v, side = scene.sample_lung_point(
        rng, clearance=0.03, v_range=(scene.anatomy.hilum_v - 0.05, 1.0)
    )
    du, dv = scene.u - _F(centre_u), scene.v - _F(centre_v)
    boundary = _F(1.0) + _F(0.25) * smooth_noise(rng, scene.size, 10)
    relative = np.sqrt((du / _F(1.25)) ** 2 + dv * dv) / (_F(radius) * boundary)
    support = (relative < 1) & (scene.lung_margin > 0)
    shape = smoothstep(1.0, 0.75, relative) * scene.lung
    bronchi = _air_bronchograms(scene, rng, side)
    amplitude = settings.contrast * (0.22 + 0.1 * severity)
    scene.density += _F(amplitude) * shape * (_F(1.0) - _F(0.45) * bronchi)
    scene.vessel_gain *= _F(1.0) - shape
    return support & (shape > 0)


def _air_bronchograms(scene: _Scene, rng: np.random.Generator, side: float) -> np.ndarray:
    anatomy = scene.anatomy
    du = (scene.u - _F(anatomy.midline + side * anatomy.mediastinum_width)) * _F(side)
    dv = scene.v - _F(anatomy.hilum_v)
    radius = np.sqrt(du * du + dv * dv) + _F(1e-3)
    angle = np.arctan2(dv, du) + _F(0.2) * smooth_noise(rng, scene.size, 5)
    half_angle = np.clip(_F(7 * 0.006) / radius, 0.0, np.pi)
    wave = np.cos(_F(7) * angle)
    threshold = np.cos(half_angle)
    return np.clip((wave - threshold) / (_F(1.0) - threshold + _F(1e-3)), 0.0, 1.0)


def _draw_atelectasis(scene: _Scene, severity: float, settings: PhantomSettings, rng) -> np.ndarray:
    anatomy = scene.anatomy
    centre_u, centre_v, _ = scene.sample_lung_point(
        rng, clearance=0.025, v_range=(anatomy.diaphragm_right - 0.2, anatomy.diaphragm_left - 0.04)
    )
    tilt = rng.uniform(-0.35, 0.35)
    length = settings.lesion_scale * (0.09 + 0.07 * severity)
    thickness = settings.lesion_scale * (0.014 + 0.014 * severity)
    du, dv = scene.u - _F(centre_u), scene.v - _F(centre_v)
    along = du * _F(np.cos(tilt)) + dv * _F(np.sin(tilt))
    across = -du * _F(np.sin(tilt)) + dv * _F(np.cos(tilt))
    relative = (along / _F(length)) ** 2 + (across / _F(thickness)) ** 2
    support = (relative < 1) & (scene.lung_margin > 0)
    shape = smoothstep(1.0, 0.5, relative) * scene.lung
    amplitude = settings.contrast * (0.2 + 0.08 * severity)
    scene.density += _F(amplitude) * shape
    return support & (shape > 0)


def _draw_pneumothorax(scene: _Scene, severity: float, settings: PhantomSettings, rng) -> np.ndarray:
    anatomy = scene.anatomy
    side = 1.0 if rng.random() < 0.5 else -1.0
    depth = settings.lesion_scale * (0.025 + 0.05 * severity)
    lowest = anatomy.lung_top + rng.uniform(0.3, 0.5)
    taper = np.sqrt(np.clip((_F(lowest) - scene.v) / _F(0.15), 0.0, 1.0))
    centre, _, half_width, _ = anatomy.apex_centre()
    lateral_only = smoothstep(centre - 0.6 * half_width, centre, scene.distance)
    rim = _F(depth) * taper * lateral_only
    rim_margin = anatomy.outer_margin(scene.distance, scene.v)
    on_side = scene.side == _F(side)
    support = (rim_margin < rim) & (scene.lung_margin > 0) & on_side & (rim > 0)
    lucency = support * scene.lung
    scene.vessel_gain *= _F(1.0) - lucency
    amplitude = settings.contrast * (0.03 + 0.03 * severity)
    scene.density -= _F(amplitude) * lucency
    line = np.exp(-(((rim_margin - rim) / _F(0.0035)) ** 2)) * on_side * (rim > 0) * scene.lung
    scene.density += _F(settings.contrast * 0.12) * line
    return support


def _draw_pleural_effusion(scene: _Scene, severity: float, settings: PhantomSettings, rng) -> np.ndarray:
    anatomy = scene.anatomy
    side = 1.0 if rng.random() < 0.5 else -1.0
    height = settings.lesion_scale * (0.005 + 0.07 * severity)
    rise = settings.lesion_scale * (0.04 + 0.12 * severity)
    relative = np.clip(scene.distance / _F(anatomy.thorax_width), 0.0, 1.0)
    floor = anatomy.diaphragm(scene.distance, scene.side)
    meniscus = floor - _F(height) - _F(rise) * relative**3
    hemithorax = (scene.lung_margin > 0) & (scene.side == _F(side))
    depth = scene.v - meniscus
    support = hemithorax & (depth > 0)
    shape = smoothstep(0.0, 0.03, depth) * scene.lung * support
    amplitude = settings.contrast * (0.14 + 0.10 * severity)
    scene.density += _F(amplitude) * shape
    scene.vessel_gain *= _F(1.0) - shape
    return support & (shape > 0)


def _draw_support_devices(scene: _Scene, severity: float, settings: PhantomSettings, rng) -> np.ndarray:
    kinds = ["endotracheal", "nasogastric", "central_line", "pacemaker", "electrodes"]
    count = 1 + int(severity > 0.4) + int(severity > 0.8)
    chosen = rng.choice(len(kinds), size=count, replace=False)
    lines: list[tuple[np.ndarray, float]] = []
    for choice in sorted(chosen):
        lines.extend(_device_lines(scene, kinds[choice], rng))
    coverage = draw_polylines(scene.size, lines) * scene.body
    scene.density += _F(0.32) * coverage
    return coverage > 0.25


def _device_lines(scene: _Scene, kind: str, rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    anatomy = scene.anatomy
    midline = anatomy.midline
    width = scene.width_pixels

    def curve(points, count=20):
        points = np.asarray(points, dtype=float)
        path = bezier_curve(points, count)
        return scene.pixels(path[:, 0], path[:, 1])

    if kind == "endotracheal":
        tip = anatomy.hilum_v - rng.uniform(0.08, 0.13)
        return [(curve([[midline, 0.0], [midline + 0.005, tip * 0.5], [midline, tip]]), width(0.014))]
    if kind == "nasogastric":
        stomach = anatomy.diaphragm_left + 0.07
        return [
            (
                curve(
                    [
                        [midline + 0.01, 0.0],
                        [midline + 0.015, 0.5],
                        [midline + 0.01, stomach],
                        [midline + 0.16, stomach],
                    ]
                ),
                width(0.006),
            )
        ]
    if kind == "central_line":
        side = -1.0 if rng.random() < 0.7 else 1.0
        entry = [midline + side * 0.3, anatomy.lung_top + 0.02]
        tip = [midline + side * 0.035, anatomy.hilum_v - 0.02]
        return [(curve([entry, [midline + side * 0.1, anatomy.lung_top + 0.05], tip]), width(0.006))]
    if kind == "pacemaker":
        side = 1.0 if rng.random() < 0.7 else -1.0
        box_u, box_v = midline + side * 0.25, anatomy.lung_top + 0.04
        generator = scene.pixels(np.array([box_u - 0.025, box_u + 0.025]), np.array([box_v, box_v]))
        ventricle = [midline + 0.06, anatomy.heart_centre_v + 0.03]
        lead = curve(
            [
                [box_u, box_v],
                [midline - side * 0.02, anatomy.lung_top + 0.1],
                [midline - 0.02, anatomy.heart_centre_v - 0.08],
                ventricle,
            ]
        )
        return [(generator, width(0.05)), (lead, width(0.005))]
    electrodes = []
    for _ in range(rng.integers(2, 5)):
        centre_u = midline + rng.uniform(-0.8, 0.8) * anatomy.thorax_width
        centre_v = rng.uniform(anatomy.lung_top, anatomy.diaphragm_left)
        turn = np.linspace(0, 2 * np.pi, 13)
        ring = scene.pixels(centre_u + 0.014 * np.cos(turn), centre_v + 0.014 * np.sin(turn))
        electrodes.append((ring, width(0.005)))
    return electrodes


def _draw_pleural_other(scene: _Scene, severity: float, settings: PhantomSettings, rng) -> None:
    anatomy = scene.anatomy
    for _ in range(1 + int(severity * 3)):
        side = 1.0 if rng.random() < 0.5 else -1.0
        v = rng.uniform(anatomy.lung_top + 0.12, anatomy.diaphragm_right - 0.05)
        wall = float(anatomy.chest_wall(np.float32(v)))
        u = anatomy.midline + side * (wall - 0.008)
        relative = ((scene.u - _F(u)) / _F(0.012)) ** 2 + ((scene.v - _F(v)) / _F(0.05)) ** 2
        scene.density += _F(settings.contrast * 0.3) * smoothstep(1.0, 0.4, relative)


def _prepare_fracture(scene: _Scene, severity: float, rng: np.random.Generator) -> None:
    """Displace one rib across a gap (applied by :func:`_draw_ribs`)."""
    anatomy = scene.anatomy
    side = 1.0 if rng.random() < 0.5 else -1.0
    v = rng.uniform(anatomy.lung_top + 0.12, anatomy.hilum_v + 0.15)
    break_at = float(anatomy.chest_wall(np.float32(v))) * rng.uniform(0.55, 0.85)
    window = np.exp(-(((scene.v - _F(v)) / _F(anatomy.rib_spacing * 0.6)) ** 2)) * (scene.side == _F(side))
    step = smoothstep(break_at - 0.002, break_at + 0.002, scene.distance)
    scene.rib_offset += _F(0.012 + 0.01 * severity) * step * window
    gap = np.exp(-(((scene.distance - _F(break_at)) / _F(0.005)) ** 2)) * window
    scene.rib_gap *= _F(1.0) - _F(0.9) * gap


def _draw_chest_drain(scene: _Scene, rng: np.random.Generator, side: float) -> np.ndarray:
    """The confounder: a thick chest drain with a radio-opaque stripe ending in the pleural space."""
    anatomy = scene.anatomy
    midline = anatomy.midline
    entry_v = anatomy.diaphragm_right - rng.uniform(0.1, 0.2)
    entry_wall = float(anatomy.chest_wall(np.float32(entry_v)))
    apex_v = anatomy.lung_top + rng.uniform(0.06, 0.1)
    apex_wall = float(anatomy.chest_wall(np.float32(apex_v)))
    points = [
        [midline + side * (entry_wall + 0.04), entry_v + 0.04],
        [midline + side * (entry_wall - 0.02), entry_v - 0.02],
        [midline + side * (entry_wall - 0.03), (entry_v + apex_v) / 2],
        [midline + side * (apex_wall - 0.03), apex_v],
    ]
    path = bezier_curve(np.asarray(points), 24)
    pixels = scene.pixels(path[:, 0], path[:, 1])
    tube = draw_polylines(scene.size, [(pixels, scene.width_pixels(0.02))]) * scene.body
    stripe = draw_polylines(scene.size, [(pixels, scene.width_pixels(0.006))]) * scene.body
    scene.density += _F(0.22) * tube + _F(0.25) * stripe
    return tube > 0.25


_PATHOLOGY_DRAWERS = {
    "Lung Opacity": _draw_lung_opacity,
    "Lung Lesion": _draw_lung_lesion,
    "Edema": _draw_edema,
    "Consolidation": _draw_consolidation,
    "Atelectasis": _draw_atelectasis,
    "Pneumothorax": _draw_pneumothorax,
    "Pleural Effusion": _draw_pleural_effusion,
    "Support Devices": _draw_support_devices,
}


# --------------------------------------------------------------------------------------------
# Exposure and markers
# --------------------------------------------------------------------------------------------


def _expose(scene: _Scene, rng: np.random.Generator, settings: PhantomSettings) -> np.ndarray:
    draws = rng.uniform(size=4)
    intensity = _F(1.0) - np.exp(-_F(2.0) * np.clip(scene.density, 0.0, None))
    low, high = _F(0.03 + 0.06 * draws[0]), _F(0.9 + 0.1 * draws[1])
    intensity = low + (high - low) * intensity / _F(0.8)
    intensity = np.clip(intensity, 0.0, 1.0) ** _F(0.8 + 0.45 * draws[2])
    mottle = smooth_noise(rng, scene.size, 24) * _F(0.008)
    quantum = rng.standard_normal((scene.size, scene.size), dtype=np.float32)
    sigma = _F(settings.noise) * (_F(0.012) + _F(0.02) * np.sqrt(intensity))
    intensity = intensity + sigma * quantum + _F(settings.noise) * mottle
    return np.clip(np.rint(intensity * _F(255.0)), 0, 255).astype(np.uint8)


def _burn_markers(image: np.ndarray, rng: np.random.Generator, view: str) -> np.ndarray:
    size = image.shape[0]
    draws = rng.uniform(size=4)
    letter = "R" if draws[0] < 0.5 else "L"
    corner_x = size * (0.04 + 0.04 * draws[1]) if letter == "R" else size * (0.86 - 0.04 * draws[1])
    height = max(8, int(size * 0.06))
    image = draw_text(image, letter, (corner_x, size * (0.03 + 0.04 * draws[2])), height, 235)
    if view == "AP" and draws[3] < 0.8:
        image = draw_text(image, "PORTABLE AP", (size * 0.55, size * 0.9), max(6, int(size * 0.035)), 220)
    elif draws[3] < 0.3:
        image = draw_text(image, "ERECT", (size * 0.62, size * 0.92), max(6, int(size * 0.03)), 210)
    return image


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _split_code(split: str) -> int:
    return int.from_bytes(hashlib.sha256(split.encode("utf-8")).digest()[:4], "little")


def _generator(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _split_code(split), int(index), stream]))


def generate_case(
    seed: int, split: str, index: int, settings: PhantomSettings = PhantomSettings()
) -> PhantomCase:
    """Generate one radiograph with its labels and exact masks.

    Parameters
    ----------
    seed : int
        Dataset seed.
    split : str
        Split name; part of the image's random stream.
    index : int
        Position of the image in its split.
    settings : PhantomSettings, optional
        Difficulty and prevalence knobs.

    Returns
    -------
    PhantomCase

    Examples
    --------
    >>> case = generate_case(0, "train", 0, PhantomSettings(image_size=64))
    >>> case.image.shape, case.image.dtype, case.labels.shape
    ((64, 64), dtype('uint8'), (14,))
    >>> all((case.masks[name] <= case.body).all() for name in case.masks)
    True
    """
    rng = _generator(seed, split, index, 0)
    findings = _sample_findings(rng, settings)
    severity_sum = sum(findings.values())
    sex = "Female" if rng.random() < 0.45 else "Male"
    age = int(np.clip(rng.normal(48 + 6 * severity_sum, 16), 18, 90))
    ap_probability = 0.15 + (0.6 if "Support Devices" in findings else 0.0) + 0.1 * min(len(findings), 2)
    view = "AP" if rng.random() < ap_probability else "PA"
    anatomy = _sample_anatomy(rng, findings, view, settings)
    frame = BodyFrame(
        shift_x=float(rng.normal(0, 0.015)),
        shift_y=float(rng.normal(0.01, 0.015)),
        angle=float(rng.normal(0, 0.03)),
        scale=float(rng.uniform(0.95, 1.08)),
        size=settings.image_size,
    )
    scene = _Scene(anatomy, frame)
    masks = _render(scene, rng, findings, sex, settings)
    confounder = _maybe_confounder(scene, seed, split, index, findings, settings)
    if confounder is not None:
        masks[CONFOUNDER] = confounder
    image = _expose(scene, rng, settings)
    if settings.markers:
        image = _burn_markers(image, rng, view)
    return PhantomCase(
        image=image,
        labels=_labels_from_findings(findings),
        masks=masks,
        sex=sex,
        age=age,
        view=view,
        body=scene.body.copy(),
        severities=dict(findings),
    )


def _render(scene: _Scene, rng: np.random.Generator, findings: dict[str, float], sex: str, settings) -> dict:
    masks: dict[str, np.ndarray] = {}
    _draw_body(scene)
    if sex == "Female":
        _draw_breasts(scene)
    _draw_lungs(scene, rng)
    _draw_gastric_bubble(scene, rng)
    _draw_mediastinum(scene)
    heart = _draw_heart(scene)
    _draw_spine(scene)
    if "Fracture" in findings:
        _prepare_fracture(scene, findings["Fracture"], rng)
    _draw_ribs(scene)
    _draw_clavicles(scene, rng)
    vessels = _vessel_field(scene, rng)
    if "Cardiomegaly" in findings:
        masks["Cardiomegaly"] = heart
    if "Enlarged Cardiomediastinum" in findings:
        masks["Enlarged Cardiomediastinum"] = _draw_enlarged_cardiomediastinum(scene, 0.0, settings, rng)
    for name, draw in _PATHOLOGY_DRAWERS.items():
        if name in findings:
            masks[name] = draw(scene, findings[name], settings, rng)
    if "Pleural Other" in findings:
        _draw_pleural_other(scene, findings["Pleural Other"], settings, rng)
    if scene.vessel_blur > 0:
        vessels = vessels * _F(1.0 + 0.6 * scene.vessel_blur)
    scene.density += _F(0.1) * np.clip(vessels, 0.0, 1.5) * scene.lung * scene.vessel_gain
    return {name: mask & scene.body for name, mask in masks.items()}


def _maybe_confounder(scene: _Scene, seed, split, index, findings, settings) -> np.ndarray | None:
    if settings.shortcut is None:
        return None
    name, p_positive, p_negative = settings.shortcut
    rng = _generator(seed, split, index, 1)
    probability = p_positive if name in findings else p_negative
    if rng.random() >= probability:
        return None
    side = 1.0 if rng.random() < 0.5 else -1.0
    return _draw_chest_drain(scene, rng, side) & scene.body


def csv_columns() -> list[str]:
    """The CSV header: ``Path, Sex, Age, Frontal/Lateral, AP/PA`` and the 14 classes."""
    return ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CLASSES]


class _PackedMask:
    """A bit-packed boolean mask that numpy unpacks on demand (keeps a split's masks small)."""

    def __init__(self, mask: np.ndarray) -> None:
        self.shape = mask.shape
        self._bits = np.packbits(mask.ravel())

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        mask = np.unpackbits(self._bits, count=self.shape[0] * self.shape[1]).reshape(self.shape).astype(bool)
        return mask if dtype is None else mask.astype(dtype)


def _code_digest() -> str:
    """A digest of the generator's source (this module and its drawing helpers): a phantom made by
    other code is generated again, never reused."""
    digest = hashlib.sha256()
    for name in ("phantom.py", "phantom_drawing.py"):
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:16]


def _manifest(seed: int, sizes: dict[str, int], settings: PhantomSettings, image_format: str) -> dict:
    return json.loads(
        json.dumps(
            {
                "generator": "shamsul_utils.phantom",
                "version": PHANTOM_VERSION,
                "code": _code_digest(),
                "seed": int(seed),
                "sizes": {split: int(count) for split, count in sizes.items()},
                "settings": asdict(settings),
                "image_format": image_format,
            }
        )
    )


def _ordered_splits(sizes: dict[str, int]) -> list[str]:
    known = [split for split in _SPLIT_ORDER if split in sizes]
    return known + [split for split in sizes if split not in _SPLIT_ORDER]


def _save_image(path: Path, image: np.ndarray, image_format: str) -> None:
    with atomic_path(path) as temporary:
        if image_format == "png":
            Image.fromarray(image, mode="L").save(temporary, format="PNG", optimize=False, compress_level=6)
        else:
            Image.fromarray(image, mode="L").save(temporary, format="JPEG", quality=95)


def write_dataset(
    root: str | os.PathLike,
    *,
    sizes: dict[str, int],
    seed: int,
    settings: PhantomSettings = PhantomSettings(),
    image_format: str = "png",
    progress: bool = False,
    workers: int | None = None,
) -> dict:
    """Write a phantom in CheXpert + CheXlocalize layout under ``root``.

    Writes ``CheXpert-v1.0-phantom/{split}.csv`` and the images they list,
    ``CheXlocalize/gt_segmentations_{split}.json`` (every localised task for every image),
    ``CheXlocalize/confounder_masks_{split}.json`` when :attr:`PhantomSettings.shortcut` is set,
    and last ``phantom_manifest.json``. Every file is written atomically. If the manifest
    already records the same seed, sizes, settings and version, nothing is regenerated.

    Parameters
    ----------
    root : path-like
        Output folder.
    sizes : dict of str to int
        Images per split, e.g. ``{"train": 3000, "valid": 400, "test": 400}``. Patients are
        numbered across splits in the order train, valid, test (then others as given).
    seed : int
        Dataset seed.
    settings : PhantomSettings, optional
    image_format : {"png", "jpg"}, optional
        8-bit grayscale PNG, or JPEG of quality 95.
    progress : bool, optional
        Show a progress bar.
    workers : int, optional
        Processes generating the images (default: the CPUs, at most 4; one under 200 images).
        Every case depends only on (seed, split, index), so the files are byte-identical whatever
        the number (``tests/test_phantom.py``).

    Returns
    -------
    dict
        ``{"root", "skipped", "counts", "seconds", "images_per_second"}``.
    """
    if image_format not in ("png", "jpg"):
        raise DataError(f"write_dataset: image_format must be 'png' or 'jpg', got {image_format!r}")
    if any(int(count) < 0 for count in sizes.values()):
        raise DataError(f"write_dataset: negative split size in {sizes}")
    root = Path(root)
    manifest_path = root / "phantom_manifest.json"
    manifest = _manifest(seed, sizes, settings, image_format)
    counts = {split: int(sizes[split]) for split in _ordered_splits(sizes)}
    if manifest_path.is_file():
        try:
            if json.loads(manifest_path.read_text()) == manifest:
                return {
                    "root": str(root),
                    "skipped": True,
                    "counts": counts,
                    "seconds": 0.0,
                    "images_per_second": None,
                }
        except json.JSONDecodeError:
            pass
        manifest_path.unlink()
    started = time.perf_counter()
    patient = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(counts.values()), desc="phantom", unit="image")
    workers = _workers(workers, sum(counts.values()))
    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1:  # the cases are independent: generated and saved in parallel, assembled in order
            import concurrent.futures
            import multiprocessing

            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("forkserver")))
        for split, count in counts.items():
            patient = _write_split(root, split, count, seed, settings, image_format, patient, bar, pool)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    total = sum(counts.values())
    return {
        "root": str(root),
        "skipped": False,
        "counts": counts,
        "seconds": round(seconds, 3),
        "images_per_second": round(total / seconds, 1) if seconds > 0 else None,
    }


def _workers(workers: int | None, total: int) -> int:
    """Processes that generate images: ``workers``, or by default the CPUs (at most 4), and one for
    small datasets (under 200 images, where starting processes costs more than it saves)."""
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise DataError(f"write_dataset: workers must be a positive int, got {workers!r}")
        return workers
    return 1 if total < 200 else max(1, min(4, os.cpu_count() or 1))


def _write_case(job: tuple) -> tuple:
    """Generate and save one case; return what its split's CSV and JSON files need (picklable)."""
    root, split, index, patient, seed, settings, image_format = job
    case = generate_case(seed, split, index, settings)
    relative = f"{DATASET_FOLDER}/{split}/patient{patient:05d}/study1/view1_frontal.{image_format}"
    _save_image(Path(root) / relative, case.image, image_format)
    empty = np.zeros((settings.image_size, settings.image_size), dtype=bool)
    by_class = {name: _PackedMask(mask) for name, mask in case.masks.items() if name in LOCALIZED_CLASSES}
    confounder = encode_mask(case.masks.get(CONFOUNDER, empty)) if settings.shortcut is not None else None
    return relative, _csv_row(relative, case), by_class or {LOCALIZED_CLASSES[0]: _PackedMask(empty)}, confounder


def _write_split(
    root: Path, split: str, count: int, seed: int, settings, image_format: str, patient: int, bar, pool=None
) -> int:
    rows = []
    segmentations: dict[str, dict] = {}
    confounders: dict[str, dict] = {}
    jobs = [(str(root), split, index, patient + 1 + index, seed, settings, image_format) for index in range(count)]
    results = pool.map(_write_case, jobs, chunksize=16) if pool is not None else map(_write_case, jobs)
    for relative, row, masks, confounder in results:  # in index order, whichever process made them
        rows.append(row)
        cxr_id = cxr_id_from_path(relative)
        segmentations[cxr_id] = masks
        if confounder is not None:
            confounders[cxr_id] = {CONFOUNDER: confounder}
        if bar is not None:
            bar.update(1)
    _write_csv(root / DATASET_FOLDER / f"{split}.csv", rows)
    write_segmentations(root / "CheXlocalize" / f"gt_segmentations_{split}.json", segmentations)
    if settings.shortcut is not None:
        atomic_write_text(root / "CheXlocalize" / f"confounder_masks_{split}.json", json.dumps(confounders))
    return patient + count


def _csv_row(relative: str, case: PhantomCase) -> list[str]:
    labels = ["1.0" if value > 0 else "0.0" for value in case.labels]
    return [relative, case.sex, str(case.age), "Frontal", case.view, *labels]


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns())
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
