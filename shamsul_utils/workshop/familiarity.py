"""Is an uploaded image like the images the model was trained on? A warning, not a classifier.

The statistic is the image's coarse layout: the gray image at the model's input size reduced to
8 x 8 by box averaging (64 values in [0, 1]). A PCA keeping 95 % of the variance is fitted on the
training images (the first 1000 of the split); an image's score is its RMS reconstruction error
from those components; the limit is the largest score of a validation image (held out from the
fit). An upload above the limit gets a visible note.

Measured on the demo run (phantom, 1000 training and 500 validation images, 14 components): 0.6 %
of the 500 test images exceed the limit; a flat gray gradient scores 4.5x the limit, uniform noise
1.6x, a flat gray image 1.6x, a bright disc 1.9x, an inverted radiograph 3.3x, a radiograph shifted
by a third of its width 5.0x, one darkened to 40 % 1.2x. On the smoke run (192 / 48 images) no
test image exceeds it and the same images score 1.6-5.7x (``tests/test_workshop.py``). An
intensity-histogram statistic (percentiles, Mahalanobis) was tried first and rejected: the demo's
gradient and noise images stayed inside its limit.

It needs no model pass and reads the images once, at the first upload (about 3 s for the demo
run). What it catches is the commonest misuse in a workshop: a photograph, a document, an
inverted, shifted or badly windowed image. It does not catch a radiograph of another kind whose
coarse layout matches the training images'; the note says "unlike", never "like".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LayoutReference", "layout"]

SIDE = 8  # the layout's grid


def layout(gray: np.ndarray) -> np.ndarray:
    """The 64-number coarse layout of a uint8 gray image (8 x 8 box averages, in [0, 1])."""
    from PIL import Image

    reduced = Image.fromarray(np.asarray(gray, dtype=np.uint8)).resize((SIDE, SIDE), Image.Resampling.BOX)
    return np.asarray(reduced, dtype=np.float64).ravel() / 255.0


@dataclass(frozen=True)
class LayoutReference:
    """Principal components of the training images' layouts and the validation images' largest error."""

    mean: np.ndarray
    components: np.ndarray  # [k, 64], orthonormal rows
    limit: float
    images: int

    @classmethod
    def fit(cls, train_grays, valid_grays) -> LayoutReference:
        """PCA (95 % of the variance) on the training layouts; the limit from the validation layouts."""
        from sklearn.decomposition import PCA

        pca = PCA(n_components=0.95, svd_solver="full").fit(np.stack([layout(gray) for gray in train_grays]))
        reference = cls(pca.mean_, pca.components_, 0.0, len(valid_grays))
        errors = reference.errors(np.stack([layout(gray) for gray in valid_grays]))
        return cls(reference.mean, reference.components, float(errors.max()), len(valid_grays))

    def errors(self, layouts: np.ndarray) -> np.ndarray:
        """RMS reconstruction error of each layout ``[n, 64]``."""
        centred = np.atleast_2d(layouts) - self.mean
        residual = centred - (centred @ self.components.T) @ self.components
        return np.sqrt((residual**2).mean(axis=1))

    def score(self, gray: np.ndarray) -> float:
        """An image's error as a multiple of the limit (above 1: unlike every validation image)."""
        return float(self.errors(layout(gray))[0]) / self.limit if self.limit > 0 else float("inf")

    def note(self, gray: np.ndarray) -> str | None:
        """A one-line warning when the image is unlike the training images, else None."""
        score = self.score(gray)
        if score <= 1.0:
            return None
        return (f"unlike the images the model was trained on (its layout is {score:.1f}x as far from theirs as the "
                f"farthest of {self.images} validation images): its probabilities and maps say little about it")
