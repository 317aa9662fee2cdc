"""Vectorised drawing primitives for the chest-radiograph phantom (:mod:`shamsul_utils.phantom`).

Everything here works on whole images at once (coordinate grids, smooth random fields,
anti-aliased polylines drawn by Pillow); nothing loops over pixels in Python.

Coordinates
-----------
*Image coordinates* ``(x, y)`` run from 0 (left, top) to 1 (right, bottom) over the image,
sampled at pixel centres. *Body coordinates* ``(u, v)`` are attached to the patient: ``u`` is
horizontal (negative on the image left = the patient's right, positive on the image right = the
patient's left), ``v`` is vertical (0 at the top of the film, about 1 at the bottom). A
:class:`BodyFrame` maps one to the other with a shift, a small rotation and a scale, which is
how patients vary in position, rotation and size.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "BodyFrame",
    "coordinate_grid",
    "smooth_noise",
    "smoothstep",
    "bezier_curve",
    "draw_polylines",
    "draw_text",
]


@functools.lru_cache(maxsize=4)
def coordinate_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates ``(x, y)`` of the pixel centres of a ``size`` x ``size`` image.

    Returns read-only float32 arrays of shape ``(size, size)`` with values in (0, 1).
    """
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(axis, axis, indexing="ij")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@dataclass(frozen=True)
class BodyFrame:
    """Where the patient lies on the film: shift, rotation (radians) and scale.

    ``u = R(x - 0.5 - shift_x, y - 0.5 - shift_y) / scale`` and ``v`` likewise plus 0.5, so a
    scale above 1 makes the patient larger on the film.
    """

    shift_x: float
    shift_y: float
    angle: float
    scale: float
    size: int

    def body_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """Body coordinates ``(u, v)`` of every pixel, float32 arrays ``(size, size)``."""
        x, y = coordinate_grid(self.size)
        cosine, sine = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
        px = x - np.float32(0.5 + self.shift_x)
        py = y - np.float32(0.5 + self.shift_y)
        inverse_scale = np.float32(1.0 / self.scale)
        u = (cosine * px + sine * py) * inverse_scale
        v = (-sine * px + cosine * py) * inverse_scale + np.float32(0.5)
        return u, v

    def to_pixels(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Pixel positions ``[[column, row], ...]`` (float) of body points ``(u, v)``."""
        cosine, sine = np.cos(self.angle), np.sin(self.angle)
        qu = np.asarray(u, dtype=float) * self.scale
        qv = (np.asarray(v, dtype=float) - 0.5) * self.scale
        x = cosine * qu - sine * qv + 0.5 + self.shift_x
        y = sine * qu + cosine * qv + 0.5 + self.shift_y
        return np.stack([x * self.size, y * self.size], axis=-1)

    def pixels_per_unit(self) -> float:
        """How many pixels one body unit spans."""
        return self.size * self.scale


def smooth_noise(rng: np.random.Generator, size: int | tuple[int, int], cells: int) -> np.ndarray:
    """A smooth random field: white noise on a ``cells`` x ``cells`` lattice, upsampled bicubically.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (one draw of ``cells**2`` normals).
    size : int or (int, int)
        Output side length in pixels, or ``(height, width)``.
    cells : int
        Lattice size; the field varies on a scale of about ``size / cells`` pixels.

    Returns
    -------
    numpy.ndarray
        float32 ``(height, width)``, roughly zero mean and unit standard deviation.
    """
    height, width = (size, size) if np.isscalar(size) else size
    lattice = rng.standard_normal((cells, cells)).astype(np.float32)
    field = np.asarray(
        Image.fromarray(lattice, mode="F").resize((int(width), int(height)), Image.Resampling.BICUBIC)
    )
    return field * np.float32(1.3)


def smoothstep(edge0: float, edge1: float, value: np.ndarray) -> np.ndarray:
    """Hermite step from 0 (``value <= edge0``) to 1 (``value >= edge1``), float32."""
    t = np.array(value, dtype=np.float32)
    t -= np.float32(edge0)
    t *= np.float32(1.0 / (edge1 - edge0))
    np.maximum(t, np.float32(0.0), out=t)
    np.minimum(t, np.float32(1.0), out=t)
    result = t * t
    t *= np.float32(-2.0)
    t += np.float32(3.0)
    result *= t
    return result


def bezier_curve(control_points: np.ndarray, count: int = 24) -> np.ndarray:
    """Points along the Bezier curve of ``control_points`` (``(k, 2)``), ``(count, 2)``."""
    control_points = np.asarray(control_points, dtype=float)
    degree = len(control_points) - 1
    t = np.linspace(0.0, 1.0, count)[:, None]
    binomials = [math.comb(degree, k) for k in range(degree + 1)]
    basis = np.stack(
        [binomials[k] * t[:, 0] ** k * (1 - t[:, 0]) ** (degree - k) for k in range(degree + 1)], axis=1
    )
    return basis @ control_points


def draw_polylines(
    size: int, polylines: list[tuple[np.ndarray, float]], *, supersample: int = 2
) -> np.ndarray:
    """Anti-aliased coverage (0..1) of thick polylines, drawn by Pillow.

    Parameters
    ----------
    size : int
        Output side length in pixels.
    polylines : list of (points, width)
        ``points`` are pixel positions ``(n, 2)`` as ``[column, row]``; ``width`` in pixels.
    supersample : int, optional
        Drawn at this multiple of ``size`` and box-averaged down.

    Returns
    -------
    numpy.ndarray
        float32 ``(size, size)`` coverage in [0, 1].
    """
    coverage = np.zeros((size, size), dtype=np.float32)
    if not polylines:
        return coverage
    corners = np.concatenate([np.asarray(points, dtype=float) for points, _ in polylines])
    reach = max(width for _, width in polylines) / 2.0 + 2.0
    left, top = (np.floor(corners.min(axis=0) - reach).astype(int)).clip(0, size)
    right, bottom = (np.ceil(corners.max(axis=0) + reach).astype(int)).clip(0, size)
    if right <= left or bottom <= top:
        return coverage
    canvas = Image.new("L", ((right - left) * supersample, (bottom - top) * supersample), 0)
    draw = ImageDraw.Draw(canvas)
    for points, width in polylines:
        scaled = [((float(px) - left) * supersample, (float(py) - top) * supersample) for px, py in points]
        line_width = max(1, int(round(width * supersample)))
        draw.line(scaled, fill=255, width=line_width, joint="curve")
        radius = line_width / 2.0
        for px, py in (scaled[0], scaled[-1]):
            draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=255)
    if supersample > 1:
        canvas = canvas.resize((right - left, bottom - top), Image.Resampling.BOX)
    coverage[top:bottom, left:right] = np.asarray(canvas, dtype=np.float32) / np.float32(255.0)
    return coverage


@functools.lru_cache(maxsize=8)
def _font(pixel_height: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=pixel_height)


def draw_text(
    image: np.ndarray, text: str, position: tuple[float, float], pixel_height: int, value: int
) -> np.ndarray:
    """Burn ``text`` into a uint8 image at pixel ``position`` (left, top) with grey ``value``."""
    canvas = Image.fromarray(image)
    ImageDraw.Draw(canvas).text(position, text, fill=int(value), font=_font(int(pixel_height)))
    return np.asarray(canvas)
