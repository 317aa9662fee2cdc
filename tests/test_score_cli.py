"""python -m shamsul_utils.score on pkls written by the project's own export: equal to the plain route."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from shamsul_utils import metrics
from shamsul_utils.chexlocalize import encode_mask, export_heatmap_pkls, export_segmentations
from shamsul_utils.labels import CHEXLOCALIZE_TASK_NAMES, CLASSES, LOCALIZED_CLASSES
from shamsul_utils.score import main
from shamsul_utils.segmentation import heatmap_to_mask

SIZES = [(40, 52), (57, 33), (40, 52)]


def _case(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"patient{index:05d}_study1_view1_frontal" for index in range(len(SIZES))]
    truth = {}
    for cxr_id, (height, width) in zip(ids, SIZES, strict=True):
        masks = np.zeros((len(LOCALIZED_CLASSES), height, width), bool)
        for column in range(0, len(LOCALIZED_CLASSES), 2):  # half the tasks have a mask
            top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
            masks[column, top:top + 12, left:left + 15] = True
        truth[cxr_id] = masks
    content = {cxr_id: {CHEXLOCALIZE_TASK_NAMES[name]: encode_mask(masks[column])
                        for column, name in enumerate(LOCALIZED_CLASSES)} for cxr_id, masks in truth.items()}
    (tmp_path / "gt.json").write_text(json.dumps(content))
    heatmaps = ndimage.gaussian_filter(rng.normal(size=(len(ids), len(CLASSES), 16, 16)), sigma=(0, 0, 2, 2))
    probabilities = rng.random((len(ids), len(CLASSES)))
    export_heatmap_pkls(tmp_path / "pkls", heatmaps, ids, CLASSES, probabilities, original_sizes=SIZES)
    return ids, truth, heatmaps.astype(np.float32)


@pytest.mark.parametrize("signed", ["raw", "positive"])
def test_cli_on_exported_pkls_equals_the_plain_route(tmp_path, signed, capsys):
    ids, truth, heatmaps = _case(tmp_path)
    code = main(["--heatmaps", str(tmp_path / "pkls"), "--gt", str(tmp_path / "gt.json"),
                 "--output", str(tmp_path / "out"), "--signed", signed, "--bootstrap", "20"])
    assert code == 0 and "3 images" in capsys.readouterr().out
    pairs = pd.read_csv(tmp_path / "out" / "pairs.csv")
    assert len(pairs) == len(ids) * len(LOCALIZED_CLASSES)
    localised = [CLASSES.index(name) for name in LOCALIZED_CLASSES]
    for row, cxr_id in enumerate(ids):
        maps, masks = heatmaps[row, localised], truth[cxr_id]
        segmentation = heatmap_to_mask(maps, output_size=masks.shape[-2:], signed=signed)
        got = pairs[pairs["cxr_id"] == cxr_id]
        np.testing.assert_array_equal(got["iou"].to_numpy(), metrics.iou(segmentation, masks))
        np.testing.assert_array_equal(got["hit"].to_numpy(), metrics.pointing_game(maps[None], masks[None])[0])
        assert (got["scored_height"] == masks.shape[1]).all() and (got["scored_width"] == masks.shape[2]).all()
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    tp = pairs[(pairs["gt_present"] == 1) & (pairs["pred_present"] == 1)].groupby("task")["iou"].mean()
    per_task = summary.set_index("task")["miou_true_positive"]
    np.testing.assert_allclose(per_task[tp.index], tp.to_numpy())
    full_set = pairs[(pairs["gt_present"] == 1) | (pairs["pred_present"] == 1)].fillna({"iou": 0})
    np.testing.assert_allclose(summary["miou_full_set"].iloc[-1],
                               full_set.groupby("task")["iou"].mean().mean())


def test_cli_on_a_segmentation_json_and_its_one_line_errors(tmp_path, capsys):
    ids, truth, _ = _case(tmp_path)
    export_segmentations(tmp_path / "pred.json", [truth[cxr_id] for cxr_id in ids], ids, LOCALIZED_CLASSES)
    assert main(["--segmentations", str(tmp_path / "pred.json"), "--gt", str(tmp_path / "gt.json"),
                 "--output", str(tmp_path / "out"), "--bootstrap", "5"]) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary["miou_true_positive"].iloc[-1] == 1.0  # the expert masks scored against themselves
    (tmp_path / "pkls" / f"{ids[1]}_Edema_map.pkl").unlink()
    assert main(["--heatmaps", str(tmp_path / "pkls"), "--gt", str(tmp_path / "gt.json"),
                 "--output", str(tmp_path / "bad")]) == 2
    assert f"image '{ids[1]}' has no heatmap for 'Edema'" in capsys.readouterr().err
    content = json.loads((tmp_path / "gt.json").read_text())
    content["patient99999_study1_view1_frontal"] = content[ids[0]]
    (tmp_path / "gt2.json").write_text(json.dumps(content))
    assert main(["--segmentations", str(tmp_path / "pred.json"), "--gt", str(tmp_path / "gt2.json"),
                 "--output", str(tmp_path / "bad")]) == 2
    assert "no prediction for image 'patient99999_study1_view1_frontal'" in capsys.readouterr().err
    wrong = {cxr_id: dict(tasks) for cxr_id, tasks in json.loads((tmp_path / "pred.json").read_text()).items()}
    wrong[ids[0]]["Edema"] = encode_mask(np.zeros((5, 5), bool))
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    assert main(["--segmentations", str(tmp_path / "wrong.json"), "--gt", str(tmp_path / "gt.json"),
                 "--output", str(tmp_path / "bad")]) == 2
    assert "segmentation is (5, 5), the ground truth's masks are (40, 52)" in capsys.readouterr().err


def test_a_pkl_whose_prob_is_the_model_output_vector(tmp_path):
    import pickle

    import torch

    from shamsul_utils.chexlocalize import import_heatmap_pkls

    probabilities = torch.linspace(0.01, 0.14, len(CLASSES))
    content = {"map": torch.zeros(1, 1, 4, 4), "prob": probabilities, "task": "Edema", "gt": 1, "cxr_img": None,
               "cxr_dims": (6, 5)}
    (tmp_path / "patient00001_study1_view1_frontal_Edema_map.pkl").write_bytes(pickle.dumps(content))
    entry = import_heatmap_pkls(tmp_path)["patient00001_study1_view1_frontal"]["Edema"]
    assert entry.probability == pytest.approx(float(probabilities[CLASSES.index("Edema")]))
    assert entry.size == (5, 6) and entry.label == 1


def test_cli_on_this_projects_heatmap_store_equals_the_pkls(tmp_path):
    from shamsul_utils.store import HeatmapStore

    ids, _, heatmaps = _case(tmp_path)
    store = HeatmapStore(tmp_path / "heatmaps", "gradcam", {}, "model", code="test")
    store.compute(ids, torch.from_numpy(heatmaps), lambda images: images.numpy(), chunk=2, progress=False)
    common = ["--gt", str(tmp_path / "gt.json"), "--bootstrap", "5", "--signed", "raw"]
    assert main(["--store", str(store.folder), "--output", str(tmp_path / "a"), *common]) == 0
    assert main(["--heatmaps", str(tmp_path / "pkls"), "--output", str(tmp_path / "b"), *common]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "pairs.csv"), pd.read_csv(tmp_path / "b" / "pairs.csv"))


def test_a_pkl_that_would_run_code_is_refused(tmp_path):
    import pickle

    from shamsul_utils.chexlocalize import import_heatmap_pkls
    from shamsul_utils.errors import DataError

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    content = {"map": torch.zeros(1, 1, 4, 4), "prob": Payload(), "task": "Edema", "cxr_dims": (6, 5)}
    (tmp_path / "patient00001_study1_view1_frontal_Edema_map.pkl").write_bytes(pickle.dumps(content))
    with pytest.raises(DataError, match=r"not a readable heatmap pickle .*names io.open"):
        import_heatmap_pkls(tmp_path)
    assert not marker.exists()


CRAFTED = r"""
import io, json, pickle, sys, zipfile
from pathlib import Path
import numpy as np, torch
from shamsul_utils.score import main

folder, gt = Path(sys.argv[1]), sys.argv[2]
cases = {}
def pkl_case(name, **content):
    case = folder / name
    case.mkdir()
    base = {"map": torch.zeros(1, 1, 4, 4), "prob": 0.5, "task": "Edema", "cxr_dims": (52, 40)}
    (case / "patient00000_study1_view1_frontal_Edema_map.pkl").write_bytes(pickle.dumps(base | content))
    cases[name] = ["--heatmaps", str(case)]
# a zero-stride tensor: a few hundred bytes claiming a 100000 x 100000 map (37 GiB as float32)
pkl_case("zero_stride", map=torch.zeros(1).expand(1, 1, 100000, 100000))
pkl_case("zero_stride_small", map=torch.zeros(1).expand(1, 1, 20000, 20000))
pkl_case("text_prob", prob="high")
pkl_case("scalar_dims", cxr_dims=5)
pkl_case("text_map", map=np.array([["a", "b"], ["c", "d"]]))
pkl_case("huge_prob", prob=torch.zeros(1).expand(10**9))
# an npz whose header claims 14 maps of 100000 x 100000
store = folder / "store"
store.mkdir()
header = io.BytesIO()
np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (14, 100000, 100000)})
for index in range(3):
    with zipfile.ZipFile(store / f"patient{index:05d}_study1_view1_frontal.npz", "w") as archive:
        archive.writestr("heatmap.npy", header.getvalue() + b"\0" * 64)
cases["npz_header"] = ["--store", str(store)]
# ground truth whose RLE counts is an integer: bytes(2e8) and bytes(1e11)
for count in (200_000_000, 10**11):
    content = json.loads(Path(gt).read_text())
    first = next(iter(content))
    content[first]["Edema"] = {"size": [40, 52], "counts": count}
    (folder / f"gt_{count}.json").write_text(json.dumps(content))
    cases[f"rle_int_{count}"] = ["--segmentations", gt, "--gt", str(folder / f"gt_{count}.json")]
(folder / "a_file").write_text("")
cases["unwritable_output"] = ["--segmentations", gt, "--output", str(folder / "a_file" / "out")]
for name, arguments in cases.items():
    if "--gt" not in arguments:
        arguments = [*arguments, "--gt", gt]
    if "--output" not in arguments:
        arguments = [*arguments, "--output", str(folder / ("out_" + name))]
    print(name, main(arguments), flush=True)
# VmHWM: this process's peak resident memory since its execve (ru_maxrss would include the parent's)
print("peak_kib", next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def test_crafted_inputs_are_refused_in_one_line_naming_the_file_and_stay_under_1_gb(tmp_path):
    """Inputs that claim huge sizes in a few bytes (zero-stride tensors, npz headers, integer RLE
    counts) and malformed fields: each exits 2 with one line naming its file, before allocating."""
    import subprocess
    import sys

    ids, _, _ = _case(tmp_path)
    export_segmentations(tmp_path / "pred.json", [np.zeros((10, *size), bool) for size in SIZES], ids, LOCALIZED_CLASSES)
    (tmp_path / "work").mkdir()
    script = tmp_path / "crafted.py"
    script.write_text(CRAFTED)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "work"), str(tmp_path / "gt.json")],
                            capture_output=True, text=True, timeout=300)
    codes = dict(line.split() for line in result.stdout.splitlines())
    assert int(codes.pop("peak_kib")) < 1024 * 1024, "the score CLI must stay under 1 GB on crafted input"
    assert codes == dict.fromkeys(codes, "2") and len(codes) == 10, result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(codes) and all(line.startswith("score: ") for line in errors), result.stderr
    expected = [r"_Edema_map.pkl: map must be 1 x 1 x h x w with at most 16777216 pixels; got \(1, 1, 100000, 100000\)",
                r"_Edema_map.pkl: map must be 1 x 1 x h x w with at most 16777216 pixels; got \(1, 1, 20000, 20000\)",
                r"_Edema_map.pkl: prob/gt of Edema must be a number",
                r"_Edema_map.pkl: cxr_dims must be two integers \(w, h\); got 5",
                r"_Edema_map.pkl: map of dtype <U1; expected numbers",
                r"_Edema_map.pkl: prob/gt of Edema must be a number or 14 numbers",
                r"frontal.npz: declares maps of shape \(14, 100000, 100000\)",
                r"gt_200000000.json: patient\d+_study1_view1_frontal/Edema: not a COCO RLE entry .*\(counts is a int",
                r"gt_100000000000.json: patient\d+_study1_view1_frontal/Edema: not a COCO RLE entry .*\(counts is a int",
                r"a_file/out: cannot write the tables there"]
    for line, pattern in zip(errors, expected, strict=True):
        assert re.search(pattern, line), (pattern, line)


def test_cli_applies_chexlocalize_tuning_files_as_the_plain_route_does(tmp_path, capsys):
    """--thresholds and --probability-cutoffs in CheXlocalize's CSV layouts: per class, the fixed threshold
    replaces Otsu and a segmentation below its class's cutoff is empty; classes not listed keep Otsu."""
    ids, truth, heatmaps = _case(tmp_path)
    (tmp_path / "thresholds.csv").write_text("threshold,task\n0.4,Airspace Opacity\n0.6,Cardiomegaly\n")
    (tmp_path / "cutoffs.csv").write_text("prob_threshold,mIoU,task\n0.3,0.1,Edema\n0.5,0.2,Edema\n"
                                          "0.2,0.3,Cardiomegaly\n")
    code = main(["--heatmaps", str(tmp_path / "pkls"), "--gt", str(tmp_path / "gt.json"), "--output",
                 str(tmp_path / "out"), "--signed", "raw", "--bootstrap", "20", "--thresholds",
                 str(tmp_path / "thresholds.csv"), "--probability-cutoffs", str(tmp_path / "cutoffs.csv")])
    assert code == 0
    pairs = pd.read_csv(tmp_path / "out" / "pairs.csv")
    localised = [CLASSES.index(name) for name in LOCALIZED_CLASSES]
    fixed = np.array([{"Lung Opacity": 0.4, "Cardiomegaly": 0.6}.get(name, np.nan) for name in LOCALIZED_CLASSES])
    cutoff = np.array([{"Edema": 0.5, "Cardiomegaly": 0.2}.get(name, 0.0) for name in LOCALIZED_CLASSES])
    import pickle

    for cxr_id, masks in truth.items():
        row = ids.index(cxr_id)
        probability = []
        for name in LOCALIZED_CLASSES:
            with open(tmp_path / "pkls" / f"{cxr_id}_{CHEXLOCALIZE_TASK_NAMES[name]}_map.pkl", "rb") as handle:
                probability.append(float(pickle.load(handle)["prob"]))
        segmentation = heatmap_to_mask(heatmaps[row, localised], output_size=masks.shape[-2:], signed="raw",
                                       threshold=fixed, probability=np.array(probability), probability_cutoff=cutoff)
        got = pairs[pairs["cxr_id"] == cxr_id]
        np.testing.assert_array_equal(got["iou"].to_numpy(), metrics.iou(segmentation, masks))
        np.testing.assert_array_equal(got["pred_present"].to_numpy(), segmentation.any(axis=(-2, -1)))
    capsys.readouterr()
    for extra, message in ((["--probability-cutoff", "0.5"], "not both"),):
        with pytest.raises(SystemExit):
            main(["--heatmaps", str(tmp_path / "pkls"), "--gt", str(tmp_path / "gt.json"), "--output",
                  str(tmp_path / "o2"), "--probability-cutoffs", str(tmp_path / "cutoffs.csv"), *extra])
        assert message in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("threshold,task\n0.4,Nodule\n")
    assert main(["--heatmaps", str(tmp_path / "pkls"), "--gt", str(tmp_path / "gt.json"), "--output",
                 str(tmp_path / "o3"), "--thresholds", str(tmp_path / "bad.csv")]) == 2
    assert "unknown task(s) Nodule" in capsys.readouterr().err


def test_cli_geometry_equals_the_library_on_the_same_masks_and_pairs(tmp_path):
    """--geometry: CheXlocalize's features of the ground truth's masks and the regression of this method's pairs,
    the same numbers as geometry.features_table / geometry_regression on the masks and scores in memory."""
    from shamsul_utils import geometry

    ids, truth, _ = _case(tmp_path)
    assert main(["--heatmaps", str(tmp_path / "pkls"), "--gt", str(tmp_path / "gt.json"), "--output",
                 str(tmp_path / "out"), "--signed", "raw", "--bootstrap", "50", "--geometry"]) == 0
    features = pd.read_csv(tmp_path / "out" / "pathology_features.csv")
    expected = geometry.features_table([truth[cxr_id] for cxr_id in ids], cxr_ids=ids)
    pd.testing.assert_frame_equal(features, expected, check_dtype=False)
    square = np.zeros((8, 8), bool)
    square[2:6, 2:6] = True
    assert geometry.mask_features(square)["elongation"] == 1.0  # an independent hand case: a square
    pairs = pd.read_csv(tmp_path / "out" / "pairs.csv")
    scored = pairs[pairs["gt_present"] > 0].assign(method="pkls", segmented=pairs["pred_present"] > 0)
    scored["class"] = scored["task"].map({CHEXLOCALIZE_TASK_NAMES[name]: name for name in LOCALIZED_CLASSES})
    regression = pd.read_csv(tmp_path / "out" / "geometry_regression.csv")
    library = geometry.geometry_regression(scored, expected, n_resamples=50, seed=0)
    np.testing.assert_allclose(regression["coef"].to_numpy(float), library["coef"].to_numpy(float), equal_nan=True)
    assert set(regression["method"]) == {"pkls"}
