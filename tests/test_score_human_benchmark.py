"""python -m shamsul_utils.score with raw annotations as ground truth and with CheXlocalize's human benchmark."""

import json

import numpy as np
import pandas as pd
import pytest

from shamsul_utils.annotations import annotations_to_segmentations, masks_to_annotations, write_annotations
from shamsul_utils.chexlocalize import decode_mask, encode_mask, export_segmentations
from shamsul_utils.human_benchmark import percentage_decrease
from shamsul_utils.labels import CHEXLOCALIZE_TASK_NAMES, LOCALIZED_CLASSES
from shamsul_utils.score import main

A, B = "patient00001_study1_view1_frontal", "patient00002_study1_view1_frontal"
OVERALL = "all tasks (mean of task means)"


def _mask(cells, size=(4, 4)):
    mask = np.zeros(size, bool)
    for row, col in cells:
        mask[row, col] = True
    return mask


def _json(path, masks, *, all_tasks=False, size=(4, 4)):
    """A segmentation JSON of {cxr_id: {task: mask}} (every task when ``all_tasks``, empty where not given)."""
    content = {}
    for cxr_id, by_task in masks.items():
        tasks = CHEXLOCALIZE_TASK_NAMES.values() if all_tasks else by_task
        content[cxr_id] = {task: encode_mask(by_task.get(task, np.zeros(size, bool))) for task in tasks}
    path.write_text(json.dumps(content))
    return str(path)


# Two 4 x 4 images, two tasks with expert masks; the numbers are worked out in the comments.
TOP_LEFT = _mask([(0, 0), (0, 1), (1, 0), (1, 1)])
BOTTOM_ROW = _mask([(3, col) for col in range(4)])
LEFT_COLUMN = _mask([(row, 0) for row in range(4)])
TRUTH = {A: {"Cardiomegaly": TOP_LEFT, "Edema": BOTTOM_ROW}, B: {"Edema": LEFT_COLUMN}}
METHOD = {A: {"Cardiomegaly": _mask([(row, col) for row in (0, 1) for col in range(4)])},  # IoU 4/8; Edema missed
          B: {"Cardiomegaly": _mask([(2, 2)]),  # a false positive
              "Edema": _mask([(0, 0), (1, 0)])}}  # IoU 2/4
HUMAN = {A: {"Cardiomegaly": TOP_LEFT, "Edema": _mask([(3, 0), (3, 1)])},  # IoU 1 and 2/4
         B: {"Edema": LEFT_COLUMN}}  # IoU 1
POINTS = {A: {"Cardiomegaly": [[1.9, 0.2]],  # int -> row 0, col 1: inside, a hit
              "Edema": [[0, 0], [2.5, 3.7]]},  # the second (row 3, col 2) is inside: a hit
          B: {"Cardiomegaly": [[2, 2]]}}  # no expert mask: undefined; B's Edema has no point: a miss


def _files(tmp_path):
    gt = _json(tmp_path / "gt.json", TRUTH, all_tasks=True)
    method = _json(tmp_path / "method.json", METHOD)
    human = _json(tmp_path / "hb.json", HUMAN)
    points = tmp_path / "points.json"
    points.write_text(json.dumps(POINTS))
    return gt, method, human, str(points)


def _run(*arguments):
    return main([*map(str, arguments), "--bootstrap", "50"])


def test_the_human_benchmark_and_the_percentage_decrease_of_a_tiny_case(tmp_path, capsys):
    gt, method, human, points = _files(tmp_path)
    out = tmp_path / "out"
    assert _run("--segmentations", method, "--gt", gt, "--output", out,
                "--human-benchmark", human, "--human-salient-points", points) == 0
    printed = capsys.readouterr().out
    assert "human benchmark: mIoU 0.875 (true-positive slice), hit rate 0.750; the method is below it by 42.9 % in mIoU" in printed
    table = pd.read_csv(out / "human_benchmark.csv").set_index("task")
    assert table.loc["Cardiomegaly", "miou_true_positive"] == 1.0
    assert table.loc["Edema", "miou_true_positive"] == 0.75  # (2/4 + 1) / 2
    assert table.loc["Cardiomegaly", "hit_rate"] == 1.0 and table.loc["Edema", "hit_rate"] == 0.5
    assert table.loc["Cardiomegaly", "n_hit_rate"] == 1  # B has no Cardiomegaly mask: its point does not count
    assert table.loc[OVERALL, "miou_true_positive"] == 0.875 and table.loc[OVERALL, "hit_rate"] == 0.75
    assert not any("tie_aware" in column for column in table)
    pairs = pd.read_csv(out / "human_benchmark_pairs.csv")
    assert len(pairs) == 2 * len(LOCALIZED_CLASSES) and "hit_tie_aware" not in pairs
    change = pd.read_csv(out / "percentage_decrease.csv").set_index("task")
    # mIoU, true-positive slice: method 0.5 and 0.5, human 1 and 0.75
    assert change.loc["Cardiomegaly", "miou_true_positive_method"] == 0.5
    assert change.loc["Cardiomegaly", "miou_true_positive_decrease_pct"] == pytest.approx(50.0)
    assert change.loc["Edema", "miou_true_positive_decrease_pct"] == pytest.approx(100 * (0.75 - 0.5) / 0.75)
    # overall: of the task means (0.5 vs 0.875), not the mean of the task percentages
    assert change.loc[OVERALL, "miou_true_positive_decrease_pct"] == pytest.approx(100 * (0.875 - 0.5) / 0.875)
    # full set (either mask non-empty): method 0.25 and 0.25 (a miss and a false positive score 0), human 1 and 0.75
    assert change.loc["Cardiomegaly", "miou_full_set_decrease_pct"] == pytest.approx(75.0)
    assert change.loc["Edema", "miou_full_set_decrease_pct"] == pytest.approx(100 * (0.75 - 0.25) / 0.75)
    assert np.isnan(change.loc["Edema", "hit_rate_decrease_pct"])  # a segmentation JSON has no pointing game
    assert change.loc["Atelectasis"].drop(["miou_true_positive_method"]).isna().all()  # no pairs
    low, high = change.loc[OVERALL, ["miou_true_positive_decrease_pct_low", "miou_true_positive_decrease_pct_high"]]
    assert low <= high


def test_without_the_files_nothing_changes(tmp_path):
    gt, method, _, _ = _files(tmp_path)
    assert _run("--segmentations", method, "--gt", gt, "--output", tmp_path / "out") == 0
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["pairs.csv", "summary.csv"]


def test_percentage_decrease_of_hit_rates_and_its_paired_bootstrap():
    def pairs(hits):
        rows = [{"cxr_id": cxr_id, "task": task, "iou": np.nan, "gt_present": task in hits.get(cxr_id, {}),
                 "pred_present": False, "hit": hits.get(cxr_id, {}).get(task, np.nan), "hit_tie_aware": np.nan}
                for cxr_id in (A, B) for task in CHEXLOCALIZE_TASK_NAMES.values()]
        return pd.DataFrame(rows)

    method = pairs({A: {"Cardiomegaly": 1.0, "Edema": 0.0}, B: {"Edema": 1.0}})  # 1 and 1/2
    human = pairs({A: {"Cardiomegaly": 1.0, "Edema": 1.0}, B: {"Edema": 1.0}})  # 1 and 1
    table = percentage_decrease(method, human, n_resamples=200).set_index("task")
    assert table.loc["Cardiomegaly", "hit_rate_decrease_pct"] == 0.0
    assert table.loc["Edema", "hit_rate_decrease_pct"] == 50.0
    assert table.loc[OVERALL, "hit_rate_decrease_pct"] == 25.0  # method 0.75, human 1
    # the same images in every resample: a method equal to the benchmark is 0 % below it, in every resample
    same = percentage_decrease(human, human, n_resamples=200).set_index("task")
    assert (same.loc[["Edema", OVERALL], ["hit_rate_decrease_pct_low", "hit_rate_decrease_pct_high"]] == 0).all().all()
    with pytest.raises(Exception, match="different images"):
        percentage_decrease(method[method["cxr_id"] == A], human)


def test_a_human_benchmark_whose_images_differ_from_the_ground_truth(tmp_path, capsys):
    gt, method, _, points = _files(tmp_path)
    other = _json(tmp_path / "hb_other.json", {**HUMAN, "patient00003_study1_view1_frontal": {"Edema": LEFT_COLUMN}})
    assert _run("--segmentations", method, "--gt", gt, "--output", tmp_path / "a", "--human-benchmark", other) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "hb_other.json: image 'patient00003_study1_view1_frontal' is not in the ground truth" in error
    fewer = _json(tmp_path / "hb_fewer.json", {A: HUMAN[A]})
    assert _run("--segmentations", method, "--gt", gt, "--output", tmp_path / "b", "--human-benchmark", fewer) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and f"hb_fewer.json: no prediction for image '{B}'" in error
    assert "--human-benchmark-images ground-truth" in error
    # CheXlocalize's eval.py rule, on request: a missing image is an empty segmentation, an extra one is left out
    assert _run("--segmentations", method, "--gt", gt, "--output", tmp_path / "c", "--human-benchmark", fewer,
                "--human-benchmark-images", "ground-truth") == 0
    assert f"1 image with no human-benchmark segmentation: scored as empty (e.g. {B})" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "c" / "human_benchmark.csv").set_index("task")
    assert table.loc["Edema", "miou_full_set"] == 0.25  # A's 2/4, B's empty segmentation 0
    bad_points = tmp_path / "bad_points.json"
    bad_points.write_text(json.dumps({A: {"Edema": [[4, 0]]}}))  # x = 4 in a 4 px wide image
    assert _run("--segmentations", method, "--gt", gt, "--output", tmp_path / "d", "--human-benchmark",
                tmp_path / "hb.json", "--human-salient-points", bad_points) == 2
    assert f"bad_points.json: {A}/Edema: point (x=4, y=0) is outside the image (w=4, h=4" in capsys.readouterr().err
    assert _run("--segmentations", method, "--gt", gt, "--output", tmp_path / "e", "--human-salient-points", points) == 2
    assert "--human-salient-points needs --human-benchmark" in capsys.readouterr().err


def test_raw_annotations_as_ground_truth_equal_their_converted_segmentations(tmp_path, capsys):
    rng = np.random.default_rng(0)
    sizes = {A: (9, 13), B: (11, 7)}
    truth = {cxr_id: {name: rng.random(size) < 0.3 for name in ("Cardiomegaly", "Lung Opacity", "Edema")}
             for cxr_id, size in sizes.items()}
    write_annotations(tmp_path / "annotations.json", masks_to_annotations(truth))
    annotations_to_segmentations(tmp_path / "annotations.json", tmp_path / "gt.json")
    converted = json.loads((tmp_path / "gt.json").read_text())
    for cxr_id, by_class in truth.items():  # random masks with holes, back pixel for pixel
        for name, mask in by_class.items():
            np.testing.assert_array_equal(decode_mask(converted[cxr_id][CHEXLOCALIZE_TASK_NAMES[name]]), mask)
    predicted = [rng.random((len(LOCALIZED_CLASSES), *size)) < 0.3 for size in sizes.values()]
    export_segmentations(tmp_path / "pred.json", predicted, list(sizes), LOCALIZED_CLASSES)
    common = ["--segmentations", tmp_path / "pred.json"]
    assert _run(*common, "--gt", tmp_path / "gt.json", "--output", tmp_path / "a") == 0
    assert _run(*common, "--gt-annotations", tmp_path / "annotations.json", "--output", tmp_path / "b") == 0
    for table in ("pairs.csv", "summary.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / table), pd.read_csv(tmp_path / "b" / table))
    # an image the annotation file does not list has no finding: empty expert masks at its own size
    third = "patient00003_study1_view1_frontal"
    export_segmentations(tmp_path / "pred3.json", [*predicted, np.ones((10, 5, 6), bool)], [*sizes, third],
                         LOCALIZED_CLASSES)
    capsys.readouterr()
    assert _run("--segmentations", tmp_path / "pred3.json", "--gt-annotations", tmp_path / "annotations.json",
                "--output", tmp_path / "c") == 0
    assert "1 scored image not in" in capsys.readouterr().out
    rows = pd.read_csv(tmp_path / "c" / "pairs.csv").query("cxr_id == @third")
    assert len(rows) == 10 and not rows["gt_present"].any() and (rows["iou"] == 0).all()
    assert (rows["scored_height"] == 5).all() and (rows["scored_width"] == 6).all()
    assert _run("--segmentations", tmp_path / "pred3.json", "--gt", tmp_path / "gt.json", "--output", tmp_path / "d") == 2
    assert f"image '{third}' is not in the ground truth" in capsys.readouterr().err
    # and the human benchmark is scored on the same images (the third one included)
    assert _run("--segmentations", tmp_path / "pred3.json", "--gt-annotations", tmp_path / "annotations.json",
                "--output", tmp_path / "e", "--human-benchmark", tmp_path / "pred3.json") == 0
    change = pd.read_csv(tmp_path / "e" / "percentage_decrease.csv")
    assert (change["miou_full_set_decrease_pct"].dropna() == 0).all()


def test_a_heatmap_cache_needs_every_image_in_the_annotations(tmp_path):
    from shamsul_utils.errors import DataError
    from shamsul_utils.score import read_ground_truth, score_store

    write_annotations(tmp_path / "annotations.json", masks_to_annotations({A: {"Edema": LEFT_COLUMN}}))
    for cxr_id in (A, B):  # refused before any file is read: the cache keeps no image sizes
        (tmp_path / f"{cxr_id}.npz").write_bytes(b"")
    with pytest.raises(DataError, match=f"image '{B}' is not in the annotations and has no size here"):
        score_store(tmp_path, read_ground_truth(annotations=tmp_path / "annotations.json"))


@pytest.mark.parametrize("ground_truth", [[], ["--gt", "gt.json", "--gt-annotations", "annotations.json"]],
                         ids=["neither", "both"])
def test_the_ground_truth_is_given_exactly_once(ground_truth, tmp_path, capsys):
    assert main(["--segmentations", "pred.json", *ground_truth, "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "score: give the ground truth once: --gt <segmentations.json> or --gt-annotations <annotations.json>"


def test_a_bad_annotation_file_stops_the_cli_in_one_line(tmp_path, capsys):
    gt, method, _, _ = _files(tmp_path)
    bad = tmp_path / "annotations.json"
    bad.write_text(json.dumps({A: {"img_size": [4, 4], "Edema": [[[0, 0], [3, 3]]]}}))
    assert _run("--segmentations", method, "--gt-annotations", bad, "--output", tmp_path / "out") == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.endswith(f"{A}/Edema: contour 0 has 2 point(s); a polygon needs at least 3")
