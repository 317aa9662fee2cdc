"""Seconds per heatmap to segment and score at CheXlocalize's original image size (2320 x 2828).

For maps shaped like each method's (Grad-CAM: a 7 x 7 map upsampled to 224 px; LRP: pixel-level
relevance; LIME and SHAP: piecewise constant over 50 superpixels), one image's 10 localised maps
are segmented (Otsu, filled, isolated pixels dropped) and scored (IoU, pointing game, tie-aware
pointing game) against masks of 2320 x 2828, the size of a typical CheXpert original, by

* ``streamed``: :func:`shamsul_utils.scoring.score_image`, what the evaluation and
  ``python -m shamsul_utils.score`` run (one resize per map, shared by every score);
* ``plain``: :func:`shamsul_utils.segmentation.heatmap_to_mask` + :func:`shamsul_utils.metrics.iou`
  + :func:`shamsul_utils.metrics.pointing_game` (twice), the reference route.

Both give identical scores (checked here and in tests/test_scoring.py). The best of ``--repeats``
wall times per map is reported, one thread, with the projection to the paper's 234 images x 10
classes x 4 methods. Run ``.venv/bin/python benchmarks/scoring.py``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from shamsul_utils import metrics
from shamsul_utils.scoring import score_image
from shamsul_utils.segmentation import heatmap_to_mask

SIZE = (2320, 2828)
CLASSES = 10


def method_like_maps(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Ten 224 x 224 float32 maps that look like one method's."""
    if kind == "Grad-CAM":
        coarse = torch.from_numpy(rng.random((CLASSES, 1, 7, 7), dtype=np.float32))
        return F.interpolate(coarse, size=(224, 224), mode="bilinear", align_corners=False)[:, 0].numpy()
    if kind == "LRP":
        return ndimage.gaussian_filter(rng.normal(size=(CLASSES, 224, 224)), sigma=(0, 1, 1)).astype(np.float32)
    centres = rng.integers(0, 224, (50, 2))  # 50 superpixels: nearest-centre cells with one value each
    rows, columns = np.mgrid[:224, :224]
    distance = (rows[..., None] - centres[:, 0]) ** 2 + (columns[..., None] - centres[:, 1]) ** 2
    cells = distance.argmin(-1)
    return rng.normal(size=(CLASSES, 50)).astype(np.float32)[:, cells]


def expert_masks(rng: np.random.Generator) -> np.ndarray:
    truth = np.zeros((CLASSES, *SIZE), dtype=bool)
    for column in range(CLASSES - 2):  # two classes without a mask, as in CheXlocalize
        top, left = rng.integers(0, 1600, 2)
        truth[column, top:top + int(rng.integers(200, 700)), left:left + int(rng.integers(200, 1100))] = True
    return truth


def plain(maps: np.ndarray, truth: np.ndarray):
    segmentation = heatmap_to_mask(maps, output_size=SIZE)
    return (metrics.iou(segmentation, truth), metrics.pointing_game(maps[None], truth[None])[0],
            metrics.pointing_game(maps[None], truth[None], ties="fraction")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    truth = expert_masks(rng)
    print("| maps like | streamed s/map | plain s/map | speed-up | 234 x 10 maps, streamed |\n|---|---|---|---|---|")
    totals = []
    for kind in ("Grad-CAM", "LRP", "LIME / SHAP"):
        maps = method_like_maps(kind, rng)
        timings = {}
        for route in ("streamed", "plain"):
            best = np.inf
            for _ in range(arguments.repeats):
                start = time.perf_counter()
                result = score_image(maps, truth) if route == "streamed" else plain(maps, truth)
                best = min(best, (time.perf_counter() - start) / CLASSES)
            timings[route] = best
            if route == "streamed":
                streamed = result
        reference = plain(maps, truth)
        np.testing.assert_array_equal(streamed[0], reference[0])
        np.testing.assert_array_equal(streamed[3], reference[1])
        np.testing.assert_array_equal(streamed[4], reference[2])
        totals.append(timings["streamed"])
        print(f"| {kind} | {timings['streamed']:.3f} | {timings['plain']:.3f} | "
              f"{timings['plain'] / timings['streamed']:.1f}x | {timings['streamed'] * 2340 / 60:.1f} min |")
    per_method = [totals[0], totals[1], totals[2], totals[2]]  # Grad-CAM, LRP, LIME, SHAP
    print(f"\nThe paper's 234 images x 10 classes x 4 methods: {sum(per_method) * 2340 / 60:.1f} min of scoring "
          "on one core (mask decoding not included).")


if __name__ == "__main__":
    main()
