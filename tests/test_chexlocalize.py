"""CheXlocalize formats: RLE segmentation JSON and heatmap pickles."""

import json
import pickle

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from shamsul_utils.chexlocalize import (
    HEATMAP_PKL_KEYS,
    cxr_id_from_path,
    decode_mask,
    encode_mask,
    export_heatmap_pkls,
    export_segmentations,
    import_heatmap_pkls,
    read_segmentations,
)
from shamsul_utils.errors import DataError
from shamsul_utils.labels import LOCALIZED_CLASSES
from shamsul_utils.segmentation import heatmap_to_mask

CLASS_NAMES = ["No Finding", "Lung Opacity", "Cardiomegaly"]
IDS = ["patient64541_study1_view1_frontal", "patient64542_study1_view1_frontal"]


def test_cxr_id_and_rle_round_trip():
    assert cxr_id_from_path("CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg") == IDS[0]
    mask = np.random.default_rng(0).random((5, 7)) > 0.5
    np.testing.assert_array_equal(decode_mask(encode_mask(mask)), mask)


def test_exported_segmentations_decode_with_pycocotools(tmp_path):
    rng = np.random.default_rng(1)
    masks = rng.random((2, 3, 6, 9)) > 0.6  # non-square (h=6, w=9)
    path = tmp_path / "pred.json"
    export_segmentations(path, masks, IDS, CLASS_NAMES)
    content = json.loads(path.read_text())
    assert sorted(content) == IDS
    for n, cxr_id in enumerate(IDS):
        entry = content[cxr_id]
        assert (
            len(entry) == len(LOCALIZED_CLASSES) and "No Finding" not in entry and "Lung Opacity" not in entry
        )
        assert entry["Airspace Opacity"]["size"] == [6, 9]
        decoded = coco_mask.decode(
            {**entry["Airspace Opacity"], "counts": entry["Airspace Opacity"]["counts"]}
        )
        np.testing.assert_array_equal(decoded.astype(bool), masks[n, 1])
        np.testing.assert_array_equal(coco_mask.decode(entry["Cardiomegaly"]).astype(bool), masks[n, 2])
        assert not coco_mask.decode(entry["Edema"]).any()  # localised tasks not given: empty
    assert set(read_segmentations(path)[IDS[0]]) == set(LOCALIZED_CLASSES)


def test_heatmap_pkls_have_chexlocalize_keys_and_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    heatmaps = rng.random((2, 3, 4, 5)).astype(np.float32)
    probabilities = rng.random((2, 3))
    labels = np.array([[0, 1, 0], [1, 0, 1]])
    images = torch.rand(2, 3, 12, 20)  # non-square original: H = 12, W = 20
    written = export_heatmap_pkls(
        tmp_path, heatmaps, IDS, CLASS_NAMES, probabilities, images=images, labels=labels
    )
    assert sorted(path.name for path in written) == sorted(
        f"{cxr_id}_{task}_map.pkl" for cxr_id in IDS for task in ("Airspace Opacity", "Cardiomegaly")
    )  # only localised classes, under CheXlocalize's task names
    with open(tmp_path / f"{IDS[1]}_Airspace Opacity_map.pkl", "rb") as handle:
        content = pickle.load(handle)
    assert set(content) == set(HEATMAP_PKL_KEYS)
    assert isinstance(content["map"], torch.Tensor) and content["map"].shape == (1, 1, 4, 5)
    assert content["map"].dtype == torch.float32
    np.testing.assert_array_equal(content["map"][0, 0].numpy(), heatmaps[1, 1])
    assert content["cxr_dims"] == (20, 12)  # (w, h)
    assert isinstance(content["cxr_img"], torch.Tensor) and content["cxr_img"].shape == (3, 12, 20)
    assert content["task"] == "Airspace Opacity" and content["gt"] == 0
    assert content["prob"] == pytest.approx(probabilities[1, 1])

    imported = import_heatmap_pkls(tmp_path)
    assert sorted(imported) == IDS and sorted(imported[IDS[0]]) == ["Cardiomegaly", "Lung Opacity"]
    entry = imported[IDS[0]]["Cardiomegaly"]
    np.testing.assert_array_equal(entry.map, heatmaps[0, 2])
    assert entry.size == (12, 20) and entry.label == 0  # (h, w) again
    assert entry.probability == pytest.approx(probabilities[0, 2])
    # the segmentation from the pickle equals the one from the arrays
    np.testing.assert_array_equal(
        heatmap_to_mask(entry.map, output_size=entry.size),
        heatmap_to_mask(heatmaps[0, 2], output_size=(12, 20)),
    )


def test_original_sizes_without_images_and_bad_pickles(tmp_path):
    heatmaps = np.ones((1, 1, 2, 2))
    export_heatmap_pkls(tmp_path, heatmaps, IDS[:1], ["Edema"], [[0.5]], original_sizes=[(30, 40)])
    entry = import_heatmap_pkls(tmp_path)[IDS[0]]["Edema"]
    assert entry.size == (30, 40) and entry.label is None
    with pytest.raises(DataError, match="images or original_sizes"):
        export_heatmap_pkls(tmp_path, heatmaps, IDS[:1], ["Edema"], [[0.5]])
    broken = tmp_path / "other" / f"{IDS[1]}_Edema_map.pkl"
    broken.parent.mkdir()
    broken.write_bytes(pickle.dumps({"map": torch.ones(1, 1, 2, 2), "task": "Edema"}))
    with pytest.raises(DataError, match="missing key.*prob, cxr_dims") as error:
        import_heatmap_pkls(tmp_path)
    assert "\n" not in str(error.value)


def test_rle_counts_equal_the_runs_of_the_mask():
    from scipy import ndimage

    from shamsul_utils.chexlocalize import encode_mask, rle_counts

    rng = np.random.default_rng(0)
    for _ in range(100):
        height, width = (int(value) for value in rng.integers(1, 40, 2))
        mask = ndimage.gaussian_filter(rng.random((height, width)), rng.random() * 3) > rng.random()
        flat = mask.ravel(order="F")  # COCO runs go down the columns, starting with background
        changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
        edges = np.concatenate([[0], changes, [flat.size]])
        runs = np.diff(edges).tolist()
        if flat[0]:
            runs = [0, *runs]
        assert rle_counts(encode_mask(mask)["counts"]) == runs


@pytest.mark.parametrize("entry, message", [
    ({"size": [4, 4], "counts": "04"}, r"runs sum to 4 pixels .* has 16"),  # garbage that pycocotools decodes
    ({"size": [100000, 100000], "counts": "0"}, r"sides from 1 to 8192"),  # would allocate ~10 GB
    ({"size": [8000, 8000], "counts": "0"}, r"at most 16777216 pixels"),  # 10 such masks: 640 MB
    ({"size": [4, 4], "counts": 200_000_000}, r"counts is a int, not a string"),  # bytes(2e8): 200 MB
    ({"size": [4, 4], "counts": 10**11}, r"counts is a int, not a string"),  # a MemoryError before
    ({"size": [-3, 4], "counts": "0"}, r"RLE size \[-3, 4\]"),
    ({"size": [2, 2], "counts": [1, -1, 4]}, r"negative"),
    ({"size": [2, 2], "counts": "a~~"}, r"not a COCO RLE entry"),
])
def test_bad_rle_entries_are_refused_before_decoding(entry, message):
    from shamsul_utils.chexlocalize import decode_mask

    with pytest.raises(DataError, match=message):
        decode_mask(entry, where="patient00001/Edema")
