"""Shared test settings: one thread (the CI machine has 2 cores), headless plotting, and the
``numerics`` marker.

``numerics`` marks the tests whose expectations involve floating-point results of torch, numpy or
BLAS kernels (explainers, segmentation, scoring, metrics, training, the workshop's views): the
tests that could pass on one CPU and fail on another. CI runs them again under other CPU kernels
(``make test-kernels``: torch's scalar kernels with oneDNN and MKL held to SSE4, then AVX2 on an
AVX-512 machine); locally, ``make test-kernels`` does the same.
"""

import os

os.environ.setdefault("MPLBACKEND", "agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# Test modules whose expectations depend on float kernels; in them, tests that execute notebooks
# (minutes, and covered by the chain tests) are left out of the marker.
NUMERICS_MODULES = frozenset({
    "test_gradcam", "test_lrp", "test_lime", "test_shap", "test_perturbation", "test_registry",
    "test_segmentation", "test_scoring", "test_metrics", "test_score_cli", "test_evaluation", "test_seeds",
    "test_torchxrayvision", "test_workshop", "test_training", "test_checkpoints", "test_shortcut", "test_datasets",
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = getattr(item, "module", None)
        module = module.__name__.rsplit(".", 1)[-1] if module is not None else ""
        if module in NUMERICS_MODULES and "notebook" not in item.name:
            item.add_marker(pytest.mark.numerics)


def pytest_report_header(config):
    limits = ", ".join(f"{name}={os.environ[name]}" for name in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
                       if os.environ.get(name))
    return (f"torch CPU kernels: {torch.backends.cpu.get_cpu_capability()} (ATEN_CPU_CAPABILITY to choose)"
            + (f"; {limits}" if limits else ""))
