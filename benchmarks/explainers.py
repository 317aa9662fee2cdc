"""Seconds per image of the four explainers, against the model's forward floor and the reference libraries.

For one image and all 14 classes, on the demo model (``densenet_small``, 128 px) and on DenseNet121
(224 px, random weights), this script times

* the **floors**: the model's batched forward (``torch.inference_mode``, batch 50 = the perturbation
  explainers' batch size) for the same number of evaluations as LIME / Kernel SHAP, and one
  forward + backward (to the input) of one image for Grad-CAM and LRP;
* **ours**: ``shamsul_utils.explainers`` (Grad-CAM, LRP with each of the four rules for 14 classes
  and for 1 class, LIME, Kernel SHAP), all classes from one call;
* the **references** on the same model and image: ``lime.lime_image.LimeImageExplainer``,
  ``shap.KernelExplainer`` used the plain way (numpy masking of all coalitions at once, as shap's
  image example), captum ``LayerGradCam`` / ``Lime`` / ``KernelShap`` looped over the 14 targets,
  zennit's ``Gradient`` attributor with our composite and canonizer looped over the 14 classes.
  The ``grad-cam`` PyPI package (pytorch-grad-cam) is not installed and is not measured.

Every task runs ``--repeats`` times, round-robin over all tasks (order reversed on every other
repeat), after a warm-up; a short call (Grad-CAM, LRP, the forward + backward floor) is made
several times per repeat (to about ``INNER_SECONDS``). The best (minimum) and the median over all
timed calls are reported, in wall time and in this process's CPU time, and every ratio is formed
within the same run. Repeat 1 of every task runs in a fresh child process (``--only TASK``: build
the model and the image, warm up, run the task once), which also gives the task's peak resident
set size; the other repeats run in this process. The peak is the child's ``VmHWM``
(``/proc/self/status``); ``ru_maxrss`` is recorded too, but on Linux a child started from a large
parent inherits the parent's high-water mark through fork/exec, so it overstates small tasks.

``--threads N`` sets ``torch.set_num_threads(N)`` and limits the BLAS threads of numpy / scipy
(threadpoolctl) to N (default: the libraries' own choice, one per core). On
a machine shared with other processes, torch's OpenMP threads wait for each other at every
operator, and a descheduled thread stalls the others: single-image passes then run many times
slower with 2 threads than with 1 (see ``benchmarks/README.md``).

Run ``.venv/bin/python benchmarks/explainers.py --help`` (or ``make benchmark``); results go to
``--output`` (CSV, one row per task) and a markdown table per model is printed.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # lime's per-sample progress bar

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(ROOT))

from shamsul_utils.datasets import normalize  # noqa: E402
from shamsul_utils.explainers import gradcam, lime, lrp, shap  # noqa: E402
from shamsul_utils.models import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_model,
    denormalize,  # noqa: E402
    last_dense_block,
)
from shamsul_utils.phantom import PhantomSettings, generate_case  # noqa: E402

NUM_CLASSES = 14
BATCH = 50  # the perturbation explainers' default batch size (lime.explain, shap.explain)
ONE_CLASS = 2  # the class explained by the one-class LRP runs (Cardiomegaly)
RULES = lrp.RULES
RSS_LIMIT_MIB = 3e9 / 2**20  # the target: 3 GB (10^9 bytes) = 2861 MiB
INNER_SECONDS = 1.0  # a short call (Grad-CAM, LRP, floor fwd+bwd) is repeated to about this long
MAX_INNER = 20  # ... but at most this many times per repeat
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@dataclass(frozen=True)
class ModelSpec:
    key: str
    architecture: str
    options: dict
    size: int
    default_samples: int
    default_repeats: int


MODELS = {
    "demo": ModelSpec("demo", "densenet_small", {"growth_rate": 12, "block_config": (4, 8, 12)}, 128, 1000, 3),
    "densenet121": ModelSpec("densenet121", "densenet121", {}, 224, 200, 2),
}


# --------------------------------------------------------------------------- the bench: model + image


@dataclass
class Bench:
    """The model, the image and the settings every task of one model shares."""

    spec: ModelSpec
    samples: int
    captum_samples: int
    model: torch.nn.Module = field(init=False)
    image: torch.Tensor = field(init=False)  # [1, 3, H, W], ImageNet-normalised
    unit: np.ndarray = field(init=False)  # [H, W, 3] float64 in [0, 1]

    def __post_init__(self) -> None:
        torch.manual_seed(0)
        model = build_model(self.spec.architecture, **self.spec.options)
        self.model = model.eval().to(memory_format=torch.channels_last)
        case = generate_case(0, "test", 0, PhantomSettings(image_size=self.spec.size))
        self.image = normalize(case.image)[None].contiguous()
        self.unit = np.clip(denormalize(self.image)[0], 0.0, 1.0)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """``sigmoid(model(batch))``, ``BATCH`` images per forward, in inference mode."""
        with torch.inference_mode():
            return torch.cat([torch.sigmoid(self.model(batch[k : k + BATCH])) for k in range(0, len(batch), BATCH)])


def _from_unit(batch: np.ndarray) -> torch.Tensor:
    """numpy ``[B, H, W, 3]`` in [0, 1] -> normalised ``[B, 3, H, W]`` (a channels_last view)."""
    return (torch.from_numpy(batch).permute(0, 3, 1, 2).float() - MEAN) / STD


# --------------------------------------------------------------------------- the timed calls


def floor_forward(bench: Bench, samples: int) -> None:
    """``samples`` evaluations of the model, ``BATCH`` per forward, channels_last, inference mode."""
    batch = bench.image.expand(BATCH, -1, -1, -1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for start in range(0, samples, BATCH):
            bench.model(batch[: min(BATCH, samples - start)])


def floor_forward_backward(bench: Bench, samples: int) -> None:
    """One forward and one backward (gradient of one logit w.r.t. the input) of one image."""
    x = bench.image.clone().requires_grad_(True)
    logits = bench.model(x)
    torch.autograd.grad(logits[:, ONE_CLASS].sum(), x)


def gradcam_ours(bench: Bench, samples: int) -> None:
    gradcam.explain(bench.model, bench.image)


def gradcam_captum(bench: Bench, samples: int, classes: int = NUM_CLASSES) -> None:
    from captum.attr import LayerAttribution, LayerGradCam

    explainer = LayerGradCam(bench.model, last_dense_block(bench.model))
    for c in range(classes):
        attr = explainer.attribute(bench.image, target=c, relu_attributions=True)
        LayerAttribution.interpolate(attr, tuple(bench.image.shape[2:]), "bilinear")


def lrp_ours(rule: str, classes: list[int] | None) -> Callable[[Bench, int], None]:
    def run(bench: Bench, samples: int) -> None:
        lrp.explain(bench.model, bench.image, classes, rule=rule)

    return run


def lrp_zennit(rule: str) -> Callable[..., None]:
    def run(bench: Bench, samples: int, classes: int = NUM_CLASSES) -> None:
        from zennit.attribution import Gradient

        composite = lrp.make_composite(rule)  # our rules + lrp.DenseNetCanonizer
        with Gradient(bench.model, composite) as attributor:
            for c in range(classes):
                one_hot = torch.zeros(1, NUM_CLASSES)
                one_hot[0, c] = 1.0
                attributor(bench.image, attr_output=lambda out, one_hot=one_hot: out * one_hot)

    return run


def lime_ours(bench: Bench, samples: int) -> None:
    lime.explain(bench.model, bench.image, num_samples=samples, batch_size=BATCH)


def lime_ours_plain(bench: Bench, samples: int) -> None:
    """Ours without the first-layer shortcut: every masked image built and run through the model."""
    lime.explain(bench.model, bench.image, num_samples=samples, batch_size=BATCH, first_layer_shortcut=False)


def lime_reference(bench: Bench, samples: int) -> None:
    from lime import lime_image

    def classifier_fn(batch: np.ndarray) -> np.ndarray:
        return bench.probabilities(_from_unit(batch)).double().numpy()

    lime_image.LimeImageExplainer(random_state=0).explain_instance(
        bench.unit,
        classifier_fn,
        labels=range(NUM_CLASSES),
        top_labels=None,
        hide_color=0,
        num_samples=samples,
        batch_size=BATCH,
    )


def lime_captum(bench: Bench, samples: int, classes: int = NUM_CLASSES) -> None:
    from captum.attr import Lime

    segments = torch.from_numpy(lime.quickshift_segments(bench.unit))[None, None]
    black = (torch.zeros(1, 3, 1, 1) - MEAN) / STD  # hide_color=0 in [0, 1] RGB space
    explainer = Lime(lambda x: torch.sigmoid(bench.model(x)))
    for c in range(classes):
        explainer.attribute(
            bench.image,
            baselines=black,
            target=c,
            feature_mask=segments,
            n_samples=samples,
            perturbations_per_eval=BATCH,
        )


def shap_ours(bench: Bench, samples: int) -> None:
    shap.explain(bench.model, bench.image, nsamples=samples, batch_size=BATCH)


def shap_ours_plain(bench: Bench, samples: int) -> None:
    """Ours without the first-layer shortcut: every masked image built and run through the model."""
    shap.explain(bench.model, bench.image, nsamples=samples, batch_size=BATCH, first_layer_shortcut=False)


def shap_reference(bench: Bench, samples: int) -> None:
    """shap's image example: SLIC segments, a numpy mask_image over every coalition, one call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        import shap as shap_package
    from skimage.segmentation import slic

    segments = slic(bench.unit, n_segments=50, compactness=30, sigma=3, start_label=0)
    num_segments = int(segments.max()) + 1
    fill = bench.unit.mean(axis=(0, 1))  # shap.explain's default fill="mean"

    def f(coalitions: np.ndarray) -> np.ndarray:
        masked = np.empty((coalitions.shape[0], *bench.unit.shape))
        for i, row in enumerate(coalitions):
            masked[i] = bench.unit
            for j in range(num_segments):
                if row[j] == 0:
                    masked[i][segments == j] = fill
        return bench.probabilities(_from_unit(masked)).double().numpy()

    state = np.random.get_state()
    np.random.seed(0)
    try:
        explainer = shap_package.KernelExplainer(f, np.zeros((1, num_segments)))
        explainer.shap_values(np.ones((1, num_segments)), nsamples=samples, l1_reg="aic", silent=True)
    finally:
        np.random.set_state(state)


def shap_captum(bench: Bench, samples: int, classes: int = NUM_CLASSES) -> None:
    from captum.attr import KernelShap

    segments = torch.from_numpy(shap.slic_segments(bench.unit))[None, None]
    fill = torch.from_numpy(bench.unit.mean(axis=(0, 1))).float().view(1, 3, 1, 1)
    explainer = KernelShap(lambda x: torch.sigmoid(bench.model(x)))
    for c in range(classes):
        explainer.attribute(
            bench.image,
            baselines=(fill - MEAN) / STD,
            target=c,
            feature_mask=segments,
            n_samples=samples,
            perturbations_per_eval=BATCH,
        )


# --------------------------------------------------------------------------- the task list


@dataclass
class Task:
    """One timed call and how it is reported."""

    name: str  # unique, also the --only argument
    method: str
    implementation: str
    classes: int
    run: Callable[..., None] | None  # None: not measured (see note)
    kind: str = "ours"  # floor | ours | reference
    samples: str = "none"  # "samples" | "captum" | "none": which sample count the call gets
    baseline: str | None = None  # name of the task the ratio is taken against
    target: float | None = None  # the ratio target, if any
    ours: str | None = None  # for a reference: the task of ours it replaces
    note: str = ""
    warm_classes: int | None = None  # warm-up with this many classes (loops over classes)
    work: str = ""  # what a call computes, for the tasks without a sample count


def build_tasks(spec: ModelSpec, *, rules: tuple[str, ...], full: bool) -> list[Task]:
    """All tasks of one model, in the order they are timed (each group next to its floor).

    Without ``full``, densenet121 skips the captum Lime / KernelShap loops and zennit for the
    z and deep-Taylor rules (the slowest loops; epsilon and alpha2-beta1 stay).
    """
    slow = full or spec.key == "demo"
    skipped = "skipped on densenet121 without --full"
    tasks = [
        Task("gradcam/ours", "Grad-CAM", "ours (gradcam.explain)", 14, gradcam_ours,
             baseline="floor/forward-backward", target=1.5, work="1 fwd + 1 batched bwd (14 classes)"),
        Task("floor/forward-backward", "floor", "1 forward + 1 backward (to the input)", 1,
             floor_forward_backward, kind="floor", work="1 fwd + 1 bwd"),
        Task("gradcam/captum", "Grad-CAM", "captum LayerGradCam x14", 14, gradcam_captum, kind="reference",
             baseline="floor/forward-backward", ours="gradcam/ours", warm_classes=1,
             work="14 x (fwd + bwd)"),
        Task("gradcam/grad-cam", "Grad-CAM", "grad-cam (pytorch-grad-cam)", 14, None, kind="reference",
             note="not installed (not a pinned dependency); not measured"),
    ]
    for rule in rules:
        zennit = lrp_zennit(rule) if slow or rule in ("epsilon", "alpha2beta1") else None
        tasks += [
            Task(f"lrp/ours-{rule}-1", f"LRP {rule}", "ours (lrp.explain), 1 class", 1,
                 lrp_ours(rule, [ONE_CLASS]), baseline="floor/forward-backward",
                 work="2 fwd + 1 LRP bwd (1 class)"),
            Task(f"lrp/ours-{rule}", f"LRP {rule}", "ours (lrp.explain)", 14, lrp_ours(rule, None),
                 baseline=f"lrp/ours-{rule}-1", target=4.0, work="2 fwd + 1 LRP bwd (14 classes batched)"),
            Task(f"lrp/zennit-{rule}", f"LRP {rule}", "zennit Gradient x14 (same composite)", 14, zennit,
                 kind="reference", baseline=f"lrp/ours-{rule}-1", ours=f"lrp/ours-{rule}", warm_classes=1,
                 work="14 x (fwd + LRP bwd)", note="" if zennit else skipped),
        ]
    tasks += [
        Task("lime/lime", "LIME", "lime LimeImageExplainer", 14, lime_reference, kind="reference",
             samples="samples", baseline="floor/forward", ours="lime/ours"),
        Task("lime/captum", "LIME", "captum Lime x14", 14, lime_captum if slow else None,
             kind="reference", samples="captum", baseline="floor/forward", ours="lime/ours",
             warm_classes=1, note="" if slow else skipped),
        Task("lime/ours", "LIME", "ours (lime.explain)", 14, lime_ours, samples="samples",
             baseline="floor/forward", target=1.05),
        Task("lime/ours-plain", "LIME", "ours, plain route (first_layer_shortcut=False)", 14, lime_ours_plain,
             samples="samples", baseline="floor/forward"),
        Task("floor/forward", "floor", f"forward, inference_mode, batch {BATCH}", 14, floor_forward,
             kind="floor", samples="samples"),
        Task("shap/ours", "Kernel SHAP", "ours (shap.explain)", 14, shap_ours, samples="samples",
             baseline="floor/forward", target=1.05),
        Task("shap/ours-plain", "Kernel SHAP", "ours, plain route (first_layer_shortcut=False)", 14,
             shap_ours_plain, samples="samples", baseline="floor/forward"),
        Task("shap/shap", "Kernel SHAP", "shap KernelExplainer (numpy masking)", 14, shap_reference,
             kind="reference", samples="samples", baseline="floor/forward", ours="shap/ours"),
        Task("shap/captum", "Kernel SHAP", "captum KernelShap x14", 14, shap_captum if slow else None,
             kind="reference", samples="captum", baseline="floor/forward", ours="shap/ours",
             warm_classes=1, note="" if slow else skipped),
    ]
    return tasks


def call(task: Task, bench: Bench, *, warm: bool = False) -> tuple[float, float]:
    """Run one task once; seconds of wall time and of this process's CPU time (all threads)."""
    if task.samples == "samples":
        samples = bench.samples
    elif task.samples == "captum":
        samples = bench.captum_samples
    else:
        samples = 0
    kwargs = {}
    if warm:
        # a short run: imports, code paths, and the batch shape (BATCH) the timed run uses
        samples = 0 if task.samples == "none" else BATCH
        if task.warm_classes is not None:
            kwargs["classes"] = task.warm_classes
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    task.run(bench, samples, **kwargs)
    return time.perf_counter() - start, time.process_time() - start_cpu


# --------------------------------------------------------------------------- peak RSS in a child


def peak_rss_kib() -> dict[str, int]:
    """This process's peak RSS: ``VmHWM`` of its own address space, and ``ru_maxrss`` (both KiB)."""
    report = {"ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                report["vmhwm_kib"] = int(line.split()[1])
    except OSError:
        pass
    report.setdefault("vmhwm_kib", report["ru_maxrss_kib"])
    return report


def child_main(args: argparse.Namespace) -> None:
    """``--only TASK``: build the bench, warm up, run the task once, print one JSON line."""
    spec = MODELS[args.model]
    samples = args.samples or spec.default_samples
    bench = Bench(spec, samples, min(args.captum_samples, samples))
    tasks = {t.name: t for t in build_tasks(spec, rules=RULES, full=True) if t.run is not None}
    if args.only not in tasks:
        raise SystemExit(f"--only: unknown task {args.only!r}; one of {', '.join(tasks)}")
    task = tasks[args.only]
    setup = peak_rss_kib()
    call(task, bench, warm=True)
    seconds, cpu_seconds = call(task, bench)
    peak = peak_rss_kib()
    print(json.dumps({"task": task.name, "seconds": seconds, "cpu_seconds": cpu_seconds, "setup_kib": setup["vmhwm_kib"],
                      "peak_kib": peak["vmhwm_kib"], "ru_maxrss_kib": peak["ru_maxrss_kib"],
                      "threads": torch.get_num_threads()}))


def run_child(task: Task, args: argparse.Namespace, spec: ModelSpec, samples: int) -> dict:
    """Run ``--only task.name`` in a fresh interpreter; its JSON report (or an error)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--only", task.name, "--model", spec.key,
               "--samples", str(samples), "--captum-samples", str(args.captum_samples)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"child failed ({result.returncode}): {tail[0]}"}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- one model


def benchmark_model(spec: ModelSpec, args: argparse.Namespace) -> list[dict]:
    """Time every task of one model; one result row per task."""
    samples = args.samples or spec.default_samples
    repeats = args.repeats or spec.default_repeats
    bench = Bench(spec, samples, min(args.captum_samples, samples))
    tasks = build_tasks(spec, rules=tuple(args.rules), full=args.full)
    measured = [t for t in tasks if t.run is not None]
    print(f"\n## {spec.key}: {spec.architecture}, {spec.size} px, {samples} samples "
          f"(captum: {bench.captum_samples} per target, scaled), {repeats} repeats", flush=True)

    wall: dict[str, list[float]] = {t.name: [] for t in measured}
    cpu: dict[str, list[float]] = {t.name: [] for t in measured}
    rss: dict[str, dict] = {}
    inner: dict[str, int] = {}  # calls per repeat: short calls are repeated to ~INNER_SECONDS
    for repeat in range(repeats):
        in_child = repeat == 0 and not args.no_rss
        if not in_child and not inner:
            for task in measured:  # imports, oneDNN primitives of every batch shape, first-call caches
                seconds, _ = call(task, bench, warm=True)
                if task.samples == "none":
                    estimate = seconds * (NUM_CLASSES / task.warm_classes if task.warm_classes else 1)
                    inner[task.name] = int(min(MAX_INNER, max(1, INNER_SECONDS // max(estimate, 1e-3))))
                else:
                    inner[task.name] = 1
        order = measured if repeat % 2 == 0 else measured[::-1]
        for task in order:
            extra = ""
            if in_child:
                rss[task.name] = report = run_child(task, args, spec, samples)
                if "error" in report:
                    print(f"  repeat 1 (child) {task.name:26s} {report['error']}", flush=True)
                    continue
                seconds, cpu_seconds = report["seconds"], report["cpu_seconds"]
                extra = f"  peak RSS {report['peak_kib'] / 1024:6.0f} MiB"
                wall[task.name].append(seconds)
                cpu[task.name].append(cpu_seconds)
            else:
                for _ in range(inner[task.name]):
                    seconds, cpu_seconds = call(task, bench)
                    wall[task.name].append(seconds)
                    cpu[task.name].append(cpu_seconds)
                seconds, cpu_seconds = min(wall[task.name][-inner[task.name]:]), min(cpu[task.name][-inner[task.name]:])
                if inner[task.name] > 1:
                    extra = f"  (best of {inner[task.name]} calls)"
            where = "(child)" if in_child else ""
            print(f"  repeat {repeat + 1}/{repeats} {where:7s} {task.name:26s} {seconds:9.3f} s wall "
                  f"{cpu_seconds:9.3f} s CPU{extra}", flush=True)

    def scale(name: str) -> float:  # the captum loops ran with fewer samples: scale to `samples`
        return samples / bench.captum_samples if by_name(tasks, name).samples == "captum" else 1.0

    def stat(values: dict[str, list[float]], how: Callable) -> dict[str, float]:
        return {name: how(v) * scale(name) for name, v in values.items() if v}

    best, median, best_cpu = stat(wall, min), stat(wall, statistics.median), stat(cpu, min)
    rows = []
    for task in tasks:
        name, base = task.name, task.baseline
        row = {
            "model": spec.key, "architecture": spec.architecture, "image_px": spec.size,
            "task": name, "method": task.method, "implementation": task.implementation,
            "kind": task.kind, "classes": task.classes, "evaluations": evaluations(task, samples, bench),
            "samples": samples if task.samples != "none" else "",
            "timed_samples": {"samples": samples, "captum": bench.captum_samples}.get(task.samples, ""),
            "scale": scale(name), "calls": len(wall.get(name, [])),
            "best_s": best.get(name), "median_s": median.get(name), "best_cpu_s": best_cpu.get(name),
            "wall_s": " ".join(f"{t:.4f}" for t in wall.get(name, [])),
            "cpu_s": " ".join(f"{t:.4f}" for t in cpu.get(name, [])),
            "baseline": base or "", "ratio_best": None, "ratio_median": None, "ratio_best_cpu": None,
            "target": task.target, "met": "", "met_cpu": "", "vs_ours_best": None,
            "peak_rss_mib": None, "setup_rss_mib": None, "ru_maxrss_mib": None, "rss_target_met": "",
            "note": task.note,
        }
        if name in best and base in best:
            row["ratio_best"] = best[name] / best[base]
            row["ratio_median"] = median[name] / median[base]
            row["ratio_best_cpu"] = best_cpu[name] / best_cpu[base]
            if task.target is not None:
                row["met"] = "yes" if row["ratio_best"] <= task.target else "no"
                row["met_cpu"] = "yes" if row["ratio_best_cpu"] <= task.target else "no"
        if task.ours and name in best and task.ours in best:
            row["vs_ours_best"] = best[name] / best[task.ours]
        report = rss.get(name, {})
        if "peak_kib" in report:
            row["peak_rss_mib"] = report["peak_kib"] / 1024
            row["setup_rss_mib"] = report["setup_kib"] / 1024
            row["ru_maxrss_mib"] = report["ru_maxrss_kib"] / 1024
            if spec.key == "densenet121" and task.kind == "ours":
                row["rss_target_met"] = "yes" if row["peak_rss_mib"] <= RSS_LIMIT_MIB else "no"
        elif "error" in report:
            row["note"] = "; ".join(filter(None, [row["note"], report["error"]]))
        rows.append(row)
    return rows


def by_name(tasks: list[Task], name: str) -> Task:
    return next(t for t in tasks if t.name == name)


def evaluations(task: Task, samples: int, bench: Bench) -> str:
    if task.samples == "none":
        return task.work
    if task.samples == "captum":
        return f"14 x {samples} (timed: 14 x {bench.captum_samples})"
    check = " + 1 (shortcut check)" if task.name in ("lime/ours", "shap/ours") else ""
    if task.method == "Kernel SHAP":
        return f"{samples + 2}{check}"
    return f"{samples}{check}"


# --------------------------------------------------------------------------- output


def _fmt(value, digits: int = 3) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(rows: list[dict]) -> str:
    """The result rows of one model as a markdown table."""
    header = ("| method | implementation | evaluations | wall s best | wall s median | CPU s best | vs "
              "| ratio best | ratio median | ratio CPU | target | met (wall / CPU) | ref / ours | peak RSS MiB |")
    columns = header.count("|") - 1
    lines = [header, "|" + "---|" * columns]
    for row in rows:
        if row["best_s"] is None:
            cells = [row["method"], row["implementation"], f"not measured: {row['note']}"]
            lines.append("| " + " | ".join(cells + ["-"] * (columns - len(cells))) + " |")
            continue
        target = f"<= {row['target']:g}x" if row["target"] else "-"
        met = f"{row['met']} / {row['met_cpu']}" if row["met"] else "-"
        rss = _fmt(row["peak_rss_mib"], 0)
        if row["rss_target_met"]:
            rss += " (<= 3 GB)" if row["rss_target_met"] == "yes" else " (> 3 GB)"
        cells = [
            row["method"], row["implementation"], row["evaluations"] or "-", _fmt(row["best_s"]),
            _fmt(row["median_s"]), _fmt(row["best_cpu_s"]), row["baseline"] or "-",
            _fmt(row["ratio_best"], 2), _fmt(row["ratio_median"], 2), _fmt(row["ratio_best_cpu"], 2),
            target, met, _fmt(row["vs_ours_best"], 2), rss,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment(args: argparse.Namespace) -> dict:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "threads_flag": args.threads or "default",
        "device": "cpu", "python": platform.python_version(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["demo", "densenet121", "both"], default="both",
                        help="which model(s) (default: both)")
    parser.add_argument("--samples", type=int, default=None,
                        help="LIME/SHAP samples and floor evaluations (default: 1000 demo, 200 densenet121)")
    parser.add_argument("--captum-samples", type=int, default=200,
                        help="samples per target of the captum Lime/KernelShap loops, times scaled to --samples (default: 200)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per task, best and median reported (default: 3 demo, 2 densenet121)")
    parser.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES), help="LRP rules to time (default: all)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads and the BLAS thread limit (default: the libraries' own)")
    parser.add_argument("--full", action="store_true",
                        help="densenet121 too: captum Lime/KernelShap loops and zennit for every rule (slow)")
    parser.add_argument("--no-rss", action="store_true",
                        help="run repeat 1 in this process too (no child processes, no peak RSS)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results.csv",
                        help="CSV of the results (default: benchmarks/results.csv)")
    parser.add_argument("--only", default=None, help="internal: run one task once, print JSON (peak RSS)")
    args = parser.parse_args(argv)
    for name in ("samples", "captum_samples", "repeats", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive int, got {value}")
    if args.only and args.model == "both":
        parser.error("--only needs --model demo or --model densenet121")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.simplefilter("ignore")  # shap's LassoLarsIC convergence chatter, deprecations
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)  # numpy/scipy BLAS of lime, shap, sklearn too
    if args.only:
        child_main(args)
        return
    load_start = os.getloadavg()
    env = environment(args)
    print(f"# explainer benchmark  {env['date']}  {env['cpu']} x{env['cpu_count']}  torch {env['torch']}  "
          f"threads {env['torch_threads']} ({env['threads_flag']})  load average at start "
          + " ".join(f"{x:.2f}" for x in load_start), flush=True)
    keys = ["demo", "densenet121"] if args.model == "both" else [args.model]
    rows = []
    tables = []
    for key in keys:
        model_rows = benchmark_model(MODELS[key], args)
        rows += model_rows
        tables.append((key, model_rows))
    load_end = os.getloadavg()
    for row in rows:
        row.update({f"env_{k}": v for k, v in env.items()})
        row["load_start"] = " ".join(f"{x:.2f}" for x in load_start)
        row["load_end"] = " ".join(f"{x:.2f}" for x in load_end)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    for key, model_rows in tables:
        spec = MODELS[key]
        print(f"\n### {key} ({spec.architecture}, {spec.size} px, phantom image, random weights)\n")
        print(markdown(model_rows))
    print(f"\nload average at start {' '.join(f'{x:.2f}' for x in load_start)}, "
          f"at end {' '.join(f'{x:.2f}' for x in load_end)} (1, 5, 15 min); {env['torch_threads']} torch threads; "
          f"CSV: {args.output}")


if __name__ == "__main__":
    main()
