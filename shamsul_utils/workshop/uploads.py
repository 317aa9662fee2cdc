"""Uploaded radiographs: decode a PNG or JPEG of any mode into 8-bit gray, or refuse it in one line.

Examples
--------
>>> decode_upload(b"not an image", "notes.png")
Traceback (most recent call last):
...
shamsul_utils.workshop.uploads.UploadError: notes.png: not a PNG or JPEG image (the file could not be decoded)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..datasets import to_gray8
from ..errors import DataError

__all__ = ["MAX_UPLOAD_BYTES", "MAX_UPLOAD_SIDE", "MIN_UPLOAD_SIDE", "UploadError", "decode_upload", "Upload"]

MAX_UPLOAD_BYTES = 20 * 2**20  # 20 MB
MAX_UPLOAD_SIDE = 4096  # pixels, either side
MIN_UPLOAD_SIDE = 32
_FORMATS = ("PNG", "JPEG")


class UploadError(DataError):
    """An uploaded file that cannot be used; the message is one line naming the file."""


def decode_upload(data: bytes, filename: str = "upload") -> tuple[np.ndarray, str]:
    """Decode an uploaded PNG/JPEG into uint8 grayscale ``[H, W]``; returns it and a note on conversions.

    Any mode is converted: 1-bit and palette images to 8-bit gray; RGB(A) by luminance, with
    transparent pixels composited over black; 16-bit and 32-bit images (e.g. radiographs exported
    from DICOM) by linear scaling of their own value range to 0-255. JPEG EXIF orientation is
    applied.

    Raises
    ------
    UploadError
        Empty, larger than :data:`MAX_UPLOAD_BYTES`, not PNG/JPEG, truncated or corrupt, larger
        than :data:`MAX_UPLOAD_SIDE` or smaller than :data:`MIN_UPLOAD_SIDE` pixels on a side.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = Path(filename or "upload").name
    if not data:
        raise UploadError(f"{name}: the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: {len(data) / 2**20:.1f} MB is too large (at most {MAX_UPLOAD_BYTES // 2**20} MB)")
    try:
        image = Image.open(io.BytesIO(bytes(data)))
    except Image.DecompressionBombError:
        raise UploadError(f"{name}: the image is too large (at most {MAX_UPLOAD_SIDE} x {MAX_UPLOAD_SIDE} "
                          "pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UploadError(f"{name}: not a PNG or JPEG image (the file could not be decoded)") from None
    with image:
        if image.format not in _FORMATS:
            raise UploadError(f"{name}: {image.format} images are not accepted; upload a PNG or JPEG")
        width, height = image.size
        if max(width, height) > MAX_UPLOAD_SIDE:
            raise UploadError(f"{name}: {width} x {height} pixels is too large (at most {MAX_UPLOAD_SIDE} "
                              f"x {MAX_UPLOAD_SIDE}); downscale it first")
        if min(width, height) < MIN_UPLOAD_SIDE:
            raise UploadError(f"{name}: {width} x {height} pixels is too small (at least {MIN_UPLOAD_SIDE} "
                              "pixels a side)")
        try:
            image.load()
            oriented = ImageOps.exif_transpose(image)
        except Image.DecompressionBombError:
            raise UploadError(f"{name}: the image is too large to decode safely") from None
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            reason = "truncated" if "truncated" in str(error).lower() else "corrupt"
            raise UploadError(f"{name}: the {image.format} file is {reason} ({str(error).splitlines()[0]})") from None
        try:
            gray, note = to_gray8(oriented)
        except ValueError as error:
            raise UploadError(f"{name}: {error}") from None
    return gray, f"{name}: {width} x {height} {image.format}, {note}"


class Upload(NamedTuple):
    """What :meth:`Explorer.upload` answers: the new image's key (None when refused) and one line."""

    key: str | None
    message: str

    @property
    def ok(self) -> bool:
        return self.key is not None
