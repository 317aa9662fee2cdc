"""Error against model evaluations: LIME and Kernel SHAP, the libraries' sampling vs this project's designs.

For a few images of the demo explanation set (the trained demo model, all 14 classes), each estimator
runs at several budgets and seeds and is compared with a 20,000-evaluation reference of the library:

* Kernel SHAP (50 SLIC segments, mean fill): reference ``shap.KernelExplainer`` with ``l1_reg=False`` at
  20,000 samples; candidates shap with ``l1_reg="aic"`` (the study's paper route), shap with
  ``l1_reg=False``, and ``estimator="fast"`` (leverage-score sampling). Error: relative L2 distance of
  each class's Shapley values to the reference's, ``|phi - phi_ref| / |phi_ref|``.
* LIME (quickshift, black fill): reference lime at 20,000 samples; candidates lime itself and
  ``estimator="fast"``. Agreement: Spearman correlation of each class's superpixel weights with the
  reference's.

Budgets count every model evaluation (shap's ``nsamples`` plus its two ends; LIME's ``num_samples``,
the unperturbed image included). Model outputs are memoised per image, so estimators that evaluate the
same coalitions (shap's two ``l1_reg`` settings, lime's nested draws) share them; the reported budget is
what each estimator alone would evaluate.

Usage::

    python benchmarks/estimators.py                       # 4 images, seeds 0-2, writes benchmarks/estimators.csv
    python benchmarks/estimators.py --part 1/2 --output a.csv   # half of the images (run two at once)
    python benchmarks/estimators.py --report a.csv b.csv  # the summary table and the figure from the rows
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent

SHAP_BUDGETS = (100, 200, 400, 800, 1000, 2000)
LIME_BUDGETS = (125, 250, 500, 1000, 2000)
REFERENCE = 20_000


class _Memo:
    """A CoalitionModel that remembers every coalition's outputs, per image, across instances."""

    cache: dict[tuple, dict[bytes, np.ndarray]] = {}
    evaluated = 0

    def __init__(self, model, image, fill, segments, classes, *, batch_size, shortcut=True):
        import hashlib

        from shamsul_utils.explainers._perturbation import CoalitionModel

        key = hashlib.sha256(image.cpu().numpy().tobytes() + fill.cpu().numpy().tobytes()
                             + segments.cpu().numpy().tobytes()).hexdigest()
        self.store = self.cache.setdefault((key, tuple(classes)), {})
        self.inner = CoalitionModel(model, image, fill, segments, classes, batch_size=batch_size, shortcut=shortcut)

    def __call__(self, coalitions):
        rows = np.asarray(coalitions) != 0
        keys = [row.tobytes() for row in rows]
        todo = sorted({key: index for index, key in enumerate(keys) if key not in self.store}.values())
        if todo:
            outputs = self.inner(rows[todo].astype(np.float64))
            type(self).evaluated += len(todo)
            for index, output in zip(todo, outputs, strict=True):
                self.store[keys[index]] = output
        return np.stack([self.store[key] for key in keys])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _rows(method: str, image: int, reference, candidates: dict) -> list[dict]:
    """One row per candidate estimate and class: its error and agreement with the reference."""
    rows = []
    for (estimator, budget, seed), result in candidates.items():
        for index, values in enumerate(result.weights):
            truth = reference.weights[index]
            rows.append({"method": method, "image": image, "class": index, "estimator": estimator, "budget": budget,
                         "seed": seed, "segments": truth.size,
                         "relative_l2": float(np.linalg.norm(values - truth) / np.linalg.norm(truth)),
                         "spearman": _spearman(values, truth), "reference_norm": float(np.linalg.norm(truth))})
    return rows


def measure(images: list[int], seeds: list[int]) -> pd.DataFrame:
    import torch

    from shamsul_utils import study
    from shamsul_utils.config import load_profile
    from shamsul_utils.explainers import lime as lime_module
    from shamsul_utils.explainers import shap as shap_module
    from shamsul_utils.explainers._perturbation import inference_evaluation_mode
    from shamsul_utils.models import load_trained_model

    torch.set_num_threads(1)
    lime_module.CoalitionModel = _Memo  # memoised model calls (see the module docstring)
    shap_module.CoalitionModel = _Memo
    config = load_profile("demo")
    model, _ = load_trained_model(config)
    explanation = study.explanation_set(config)
    classes = list(range(14))
    rows = []
    for row in images:
        image = explanation.images[row]
        started = time.perf_counter()
        with inference_evaluation_mode(model):
            reference = shap_module.explain_segments(model, image, classes, nsamples=REFERENCE - 2, l1_reg=False,
                                                     seed=10_000)
            candidates = {}
            for budget in SHAP_BUDGETS:
                for seed in seeds:
                    candidates[("shap (aic, paper)", budget, seed)] = shap_module.explain_segments(
                        model, image, classes, nsamples=budget - 2, seed=seed, l1_reg="aic")
                    candidates[("shap (l1_reg=False)", budget, seed)] = shap_module.explain_segments(
                        model, image, classes, nsamples=budget - 2, seed=seed, l1_reg=False)
                    candidates[("fast (leverage)", budget, seed)] = shap_module.explain_segments(
                        model, image, classes, nsamples=budget, seed=seed, estimator="fast")
            rows += _rows("SHAP", row, reference, candidates)
            reference = lime_module.explain_segments(model, image, classes, num_samples=REFERENCE, seed=10_000)
            candidates = {}
            for budget in LIME_BUDGETS:
                for seed in seeds:
                    candidates[("lime (paper)", budget, seed)] = lime_module.explain_segments(
                        model, image, classes, num_samples=budget, seed=seed)
                    candidates[("fast (paired, stratified)", budget, seed)] = lime_module.explain_segments(
                        model, image, classes, num_samples=budget, seed=seed, estimator="fast")
            rows += _rows("LIME", row, reference, candidates)
        print(f"image {row}: {time.perf_counter() - started:.0f} s, {_Memo.evaluated} model evaluations so far",
              flush=True)
    return pd.DataFrame(rows)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per method, estimator and budget: median and 90th percentile of the relative L2 error, median
    and 10th percentile of the Spearman correlation, over image x class x seed maps."""
    groups = rows.groupby(["method", "estimator", "budget"], sort=False)
    table = groups.agg(maps=("relative_l2", "size"),
                       l2_median=("relative_l2", "median"), l2_p90=("relative_l2", lambda x: x.quantile(0.9)),
                       spearman_median=("spearman", "median"),
                       spearman_p10=("spearman", lambda x: x.quantile(0.1))).reset_index()
    return table.sort_values(["method", "estimator", "budget"]).reset_index(drop=True)


def figure(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method, metric, axis, label in (("SHAP", "l2_median", axes[0], "median relative L2 error to the reference"),
                                        ("LIME", "spearman_median", axes[1], "median Spearman with the reference")):
        part = table[table["method"] == method]
        for estimator, curve in part.groupby("estimator", sort=False):
            axis.plot(curve["budget"], curve[metric], marker="o", label=estimator)
        axis.set_xscale("log")
        budgets = sorted(part["budget"].unique())
        axis.set_xticks(budgets, [str(budget) for budget in budgets])
        axis.minorticks_off()
        if method == "SHAP":
            axis.set_yscale("log")
        axis.set_xlabel("model evaluations per image")
        axis.set_ylabel(label)
        axis.set_title(f"{method}: 20,000-evaluation reference")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="images of the explanation set, evenly spaced")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--part", default="1/1", help="k/n: the k-th of n interleaved parts of the images")
    parser.add_argument("--output", type=Path, default=ROOT / "estimators.csv")
    parser.add_argument("--report", type=Path, nargs="*", help="summarise these row files instead of measuring")
    arguments = parser.parse_args(argv)
    if arguments.report:
        rows = pd.concat([pd.read_csv(path) for path in arguments.report], ignore_index=True)
        table = summarise(rows)
        table.to_csv(ROOT / "estimators_summary.csv", index=False, float_format="%.4f")
        figure(table, ROOT / "estimators.png")
        print(table.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
        return 0
    from shamsul_utils import study
    from shamsul_utils.config import load_profile

    count = len(study.explanation_set(load_profile("demo")))
    chosen = np.linspace(0, count - 1, arguments.images).round().astype(int).tolist()
    part, parts = (int(value) for value in arguments.part.split("/"))
    rows = measure(chosen[part - 1::parts], list(range(arguments.seeds)))
    rows.to_csv(arguments.output, index=False)
    print(f"{len(rows)} rows in {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
