"""The method registry: one record per method, and no other module names a method."""

import re
from pathlib import Path

import numpy as np

from shamsul_utils import explainers
from shamsul_utils.config import load_profile
from shamsul_utils.explainers.registry import REGISTRY, method, study_methods


def test_records_are_complete_and_distinct():
    assert list(REGISTRY) == ["gradcam", "lrp", "lime", "shap", "integrated_gradients"]  # the study's order first
    assert len({record.name for record in REGISTRY.values()}) == len({r.colour for r in REGISTRY.values()}) == 5
    for key, record in REGISTRY.items():
        assert record.explain is getattr(explainers, key).explain
        assert record.kind in ("gradient", "perturbation") and record.code_version == explainers.code_version(key)
        assert method(record.name) is method(key) is record
    assert study_methods() == {"Grad-CAM": "gradcam", "LRP": "lrp", "LIME": "lime", "SHAP": "shap"}
    assert [record.signed for record in REGISTRY.values()] == [False, True, True, True, True]


def test_options_translate_one_vocabulary_into_each_librarys_names():
    profile = load_profile("smoke")
    settings = profile.explain
    assert method("gradcam").options(profile) == ("gradcam", {})
    assert method("lrp").options(profile) == (f"lrp-{settings.lrp_rule}", {"rule": settings.lrp_rule})
    assert method("lrp").options(profile, rule="z") == ("lrp-z", {"rule": "z"})
    assert method("lime").options(profile) == ("lime", {"num_samples": settings.lime_samples, "seed": profile.seed,
                                                        "hide_color": 0.0, "estimator": settings.estimator})
    assert method("shap").options(profile) == ("shap", {"nsamples": settings.shap_samples, "seed": profile.seed,
                                                        "fill": settings.shap_fill, "estimator": settings.estimator})
    assert method("lime").settings(profile)["n_samples"] == settings.lime_samples
    extra = 2 if settings.estimator == "paper" else 0  # shap's two ends besides its nsamples
    assert method("shap").samples(profile) == settings.shap_samples + extra and method("lrp").samples(profile) == 0
    fast = load_profile("smoke", {"explain": {"estimator": "fast"}})
    assert method("shap").samples(fast) == fast.explain.shap_samples and method("shap").options(fast)[1]["estimator"] == "fast"
    rows = list(range(10))
    assert method("lrp").sanity_rows(rows) == rows and method("shap").sanity_rows(rows) == rows[:2]
    other = load_profile("smoke", {"seed": 7, "training": {"seed": 3}})  # explanations follow the profile's seed
    assert method("lime").options(other)[1]["seed"] == 7 and method("shap").options(other)[1]["seed"] == 7


def test_no_module_outside_the_registry_names_a_method():
    """Adding a method must not mean editing string checks across the library."""
    library = Path(explainers.__file__).parent.parent
    names = [re.escape(f'"{text}"') for record in REGISTRY.values() for text in (record.key, record.name)]
    pattern = re.compile("|".join(names))
    allowed = {("claims.py", "PAPER_QUANTITATIVE_BEST = "), ("claims.py", "PAPER_MEDICAL_BEST = ")}  # the paper's claims
    found = []
    modules = [path for path in sorted(library.rglob("*.py")) if "explainers" not in path.relative_to(library).parts]
    assert {"evaluation.py", "localisation.py", "explorer.py"} <= {path.name for path in modules}  # subpackages too
    for path in modules:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and not any(path.name == name and text in line for name, text in allowed):
                found.append(f"{path.relative_to(library)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_integrated_gradients_is_one_module_and_one_record_and_obeys_completeness():
    """The axiom is the independent truth: each map sums to the logit's change from the baseline."""
    import torch

    from shamsul_utils.models import IMAGENET_MEAN, IMAGENET_STD, build_model

    torch.manual_seed(0)
    model = build_model("densenet_small", growth_rate=4, block_config=(1, 1)).double().eval()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    record = method("Integrated Gradients")
    assert not record.study and "Integrated Gradients" not in study_methods() and not record.cheap
    name, options = record.options(load_profile("smoke"))
    assert name == "integrated_gradients" and options == {"n_steps": 32, "baseline": "black"}
    maps = explainers.explain("integrated_gradients", model, images, [1, 5], batch_size=16, n_steps=64)
    assert maps.shape == (2, 2, 32, 32)
    black = ((0.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).double().view(1, 3, 1, 1)
    with torch.no_grad():
        change = (model(images) - model(black.expand_as(images)))[:, [1, 5]].numpy()
    from captum.attr import IntegratedGradients

    for row in range(2):
        for column, target in enumerate((1, 5)):
            plain, delta = IntegratedGradients(model).attribute(
                images[row:row + 1], baselines=black.expand(1, 3, 32, 32), target=target, n_steps=64,
                return_convergence_delta=True)
            # batching over images and classes changes nothing (float32 output)
            np.testing.assert_allclose(maps[row, column], plain.sum(1)[0].numpy(), rtol=1e-5, atol=1e-7)
            # completeness, up to the quadrature error captum reports for this piecewise-linear network
            assert abs(maps[row, column].sum() - change[row, column]) <= abs(float(delta)) + 1e-5
