"""CheXlocalize's raw annotations (polygons): reading, drawing as CheXlocalize draws, and masks back to polygons."""

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from scipy import ndimage

from shamsul_utils.annotations import (
    annotations_to_masks,
    annotations_to_segmentations,
    draw_polygons,
    mask_to_polygons,
    masks_to_annotations,
    read_annotations,
    read_salient_points,
    write_annotations,
)
from shamsul_utils.errors import DataError
from shamsul_utils.labels import LOCALIZED_CLASSES
from shamsul_utils.phantom import PhantomSettings, generate_case


def _pixels(mask):
    """The (row, col) of a mask's pixels, as a set."""
    return {(int(row), int(col)) for row, col in zip(*np.nonzero(mask), strict=True)}


def _write(path, content):
    path.write_text(json.dumps(content))
    return path


# A 5 x 8 image (h x w, not square, so swapped coordinates show). Points are [x, y] = [column, row].
TRIANGLE = [[3, 0], [7, 0], [7, 4]]  # right angle at (x=7, y=0); hypotenuse x - y = 3
SQUARE = [[1, 1], [3, 1], [3, 3], [1, 3]]
# Worked out by hand: the outline passes through these pixel centres, the fill takes what lies between
TRIANGLE_PIXELS = {(0, 3), (0, 4), (0, 5), (0, 6), (0, 7), (1, 4), (1, 5), (1, 6), (1, 7),
                   (2, 5), (2, 6), (2, 7), (3, 6), (3, 7), (4, 7)}  # x - y >= 3, x <= 7
SQUARE_PIXELS = {(row, col) for row in (1, 2, 3) for col in (1, 2, 3)}


def test_a_triangle_and_a_square_give_the_pixels_worked_out_by_hand(tmp_path):
    path = _write(tmp_path / "annotations.json",
                  {"p1": {"img_size": [5, 8], "Airspace Opacity": [TRIANGLE], "Cardiomegaly": [SQUARE]}})
    annotations = read_annotations(path)
    assert annotations["p1"]["img_size"] == (5, 8) and set(annotations["p1"]) == {"img_size", "Lung Opacity",
                                                                                  "Cardiomegaly"}
    masks = annotations_to_masks(annotations)["p1"]
    assert list(masks) == list(LOCALIZED_CLASSES)  # all 10, as CheXlocalize writes them
    assert _pixels(masks["Lung Opacity"]) == TRIANGLE_PIXELS
    assert _pixels(masks["Cardiomegaly"]) == SQUARE_PIXELS
    assert all(masks[name].shape == (5, 8) and not masks[name].any()
               for name in LOCALIZED_CLASSES if name not in ("Lung Opacity", "Cardiomegaly"))
    # the segmentation JSON: CheXlocalize's task names, COCO RLE that pycocotools decodes to the same masks
    annotations_to_segmentations(path, tmp_path / "segmentations.json")
    written = json.loads((tmp_path / "segmentations.json").read_text())["p1"]
    assert "Airspace Opacity" in written and "Lung Opacity" not in written and len(written) == 10
    decoded = coco_mask.decode({"size": written["Airspace Opacity"]["size"],
                                "counts": written["Airspace Opacity"]["counts"].encode()})
    assert written["Airspace Opacity"]["size"] == [5, 8] and _pixels(decoded) == TRIANGLE_PIXELS


def test_the_contours_of_a_task_are_united_and_the_format_has_no_holes():
    left, right = [(0, 0), (1, 0), (1, 1), (0, 1)], [(4, 2), (5, 2), (5, 3), (4, 3)]
    two = draw_polygons([left, right], (4, 6))
    assert _pixels(two) == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 4), (2, 5), (3, 4), (3, 5)}
    overlapping = draw_polygons([[(0, 0), (2, 0), (2, 2), (0, 2)], [(1, 1), (3, 1), (3, 3), (1, 3)]], (4, 4))
    assert _pixels(overlapping) == ({(row, col) for row in range(3) for col in range(3)}
                                    | {(row, col) for row in range(1, 4) for col in range(1, 4)})
    # a contour inside another fills, it does not cut a hole (CheXlocalize draws every contour with fill=1)
    ring = draw_polygons([[(0, 0), (4, 0), (4, 4), (0, 4)], [(1, 1), (3, 1), (3, 3), (1, 3)]], (5, 5))
    assert ring.all()


def test_a_mask_with_a_hole_comes_back_exactly_through_a_cut():
    ring = np.ones((5, 5), bool)
    ring[2, 2] = False  # one pixel of background enclosed
    polygons = mask_to_polygons(ring)
    assert len(polygons) == 2  # the ring opened by a cut above the hole, and the cut itself
    assert all(len(polygon) >= 3 for polygon in polygons)
    np.testing.assert_array_equal(draw_polygons(polygons, ring.shape), ring)


@pytest.mark.parametrize("mask", [
    np.pad(np.ones((1, 1), bool), 2),  # one pixel
    np.pad(np.ones((1, 2), bool), 2),  # two
    np.eye(6, dtype=bool),  # a diagonal line
    np.ones((3, 4), bool),  # the whole image
], ids=["pixel", "two_pixels", "diagonal", "whole_image"])
def test_small_and_thin_masks_come_back_exactly(mask, tmp_path):
    annotations = masks_to_annotations({"p1": {"Edema": mask}})
    write_annotations(tmp_path / "a.json", annotations)
    back = annotations_to_masks(read_annotations(tmp_path / "a.json"))["p1"]["Edema"]
    np.testing.assert_array_equal(back, mask)


def test_random_masks_with_holes_come_back_exactly():
    rng = np.random.default_rng(0)
    with_holes = 0
    for _ in range(300):
        height, width = rng.integers(1, 30, 2)
        mask = rng.random((height, width)) < rng.uniform(0.1, 0.9)
        if rng.random() < 0.5:
            mask = ndimage.binary_closing(mask)
        with_holes += bool((ndimage.binary_fill_holes(mask) & ~mask).any())
        np.testing.assert_array_equal(draw_polygons(mask_to_polygons(mask), mask.shape), mask)
    assert with_holes > 50


def test_the_phantoms_masks_round_trip_through_an_annotation_file_with_iou_1(tmp_path):
    """Bound: IoU = 1 (pixel for pixel) on every mask; the phantom's Support Devices have holes."""
    masks = {}
    for index in range(12):
        case = generate_case(0, "test", index, PhantomSettings(image_size=96))
        masks[f"patient{index:05d}_study1_view1_frontal"] = {name: mask for name, mask in case.masks.items()
                                                             if name in LOCALIZED_CLASSES}
    write_annotations(tmp_path / "phantom_annotations.json", masks_to_annotations(masks))
    back = annotations_to_masks(read_annotations(tmp_path / "phantom_annotations.json"))
    assert set(back) == {cxr_id for cxr_id, by_class in masks.items() if by_class}  # images without findings: left out
    ious = [float((mask & back[cxr_id][name]).sum() / (mask | back[cxr_id][name]).sum())
            for cxr_id, by_class in masks.items() for name, mask in by_class.items()]
    assert len(ious) >= 10 and min(ious) == 1.0
    assert any((ndimage.binary_fill_holes(mask) & ~mask).any() for by_class in masks.values() for mask in by_class.values())


CASES = {
    "missing_file": (None, r"annotation file not found"),
    "bad_json": ("{not json", r"not valid JSON"),
    "two_points": ({"p1": {"img_size": [5, 8], "Edema": [[[0, 0], [4, 4]]]}},
                   r"p1/Edema: contour 0 has 2 point\(s\); a polygon needs at least 3"),
    "outside": ({"p1": {"img_size": [5, 8], "Edema": [[[0, 0], [9, 0], [0, 4]]]}},
                r"p1/Edema: contour 0 has the point \(x=9, y=0\) outside the image \(w=8, h=5"),
    "swapped": ({"p1": {"img_size": [5, 8], "Edema": [[[0, 7], [4, 7], [4, 0]]]}},  # [row, col] by mistake
                r"the point \(x=0, y=7\) outside the image"),
    "negative": ({"p1": {"img_size": [5, 8], "Edema": [[[-1, 0], [3, 0], [3, 3]]]}}, r"outside the image"),
    "no_size": ({"p1": {"Edema": [SQUARE]}}, r"p1: no 'img_size' \[h, w\]"),
    "bad_size": ({"p1": {"img_size": [5], "Edema": [SQUARE]}}, r"p1: img_size must be \[h, w\]"),
    "huge_size": ({"p1": {"img_size": [100000, 100000]}}, r"img_size \[100000, 100000\] is not \[h, w\] with sides"),
    "unknown_task": ({"p1": {"img_size": [5, 8], "Pneumonia": [SQUARE]}}, r"p1: unknown task 'Pneumonia'"),
    "chexpert_name": ({"p1": {"img_size": [5, 8], "Lung Opacity": [SQUARE]}}, r"unknown task 'Lung Opacity'"),
    "not_points": ({"p1": {"img_size": [5, 8], "Edema": [[["a", "b"], [1, 1], [2, 2]]]}},
                   r"contour 0 is not a list of \[x, y\] points"),
    "not_a_list": ({"p1": {"img_size": [5, 8], "Edema": {"x": 1}}}, r"expected a list of contours"),
    "nan": ({"p1": {"img_size": [5, 8], "Edema": [[[0, 0], [1, float("nan")], [2, 2]]]}}, r"not a finite number"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_annotation_file_is_refused_in_one_line_naming_it(name, tmp_path):
    content, pattern = CASES[name]
    path = tmp_path / f"{name}.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DataError, match=pattern) as raised:
        read_annotations(path)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(str(path))


def test_salient_points_are_read_with_class_names_and_checked(tmp_path):
    path = _write(tmp_path / "points.json", {"p1": {"Airspace Opacity": [[1.5, 2.0], [3, 4]], "Edema": []}})
    points = read_salient_points(path)
    assert points["p1"]["Lung Opacity"].tolist() == [[1.5, 2.0], [3.0, 4.0]] and points["p1"]["Edema"].shape == (0, 2)
    for content, pattern in [({"p1": {"Edema": [1, 2]}}, r"p1/Edema: expected a list of \[x, y\] points"),
                             ({"p1": {"Pneumonia": [[1, 2]]}}, r"unknown task 'Pneumonia'"),
                             ([1, 2], r"expected an object")]:
        with pytest.raises(DataError, match=pattern):
            read_salient_points(_write(tmp_path / "bad.json", content))
