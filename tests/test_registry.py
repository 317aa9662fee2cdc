"""The method registry: one record per method, and no other module names a method."""

import re
from pathlib import Path

from shamsul_utils import explainers
from shamsul_utils.config import load_profile
from shamsul_utils.explainers.registry import REGISTRY, method, study_methods


def test_records_are_complete_and_distinct():
    assert list(REGISTRY) == ["gradcam", "lrp", "lime", "shap"]  # the study's order
    assert len({record.name for record in REGISTRY.values()}) == len({r.colour for r in REGISTRY.values()}) == 4
    for key, record in REGISTRY.items():
        assert record.explain is getattr(explainers, key).explain
        assert record.kind in ("gradient", "perturbation") and record.code_version == explainers.code_version(key)
        assert method(record.name) is method(key) is record
    assert study_methods() == {"Grad-CAM": "gradcam", "LRP": "lrp", "LIME": "lime", "SHAP": "shap"}
    assert [record.signed for record in REGISTRY.values()] == [False, True, True, True]


def test_options_translate_one_vocabulary_into_each_librarys_names():
    profile = load_profile("smoke")
    settings = profile.explain
    assert method("gradcam").options(profile) == ("gradcam", {})
    assert method("lrp").options(profile) == (f"lrp-{settings.lrp_rule}", {"rule": settings.lrp_rule})
    assert method("lrp").options(profile, rule="z") == ("lrp-z", {"rule": "z"})
    assert method("lime").options(profile) == ("lime", {"num_samples": settings.lime_samples, "seed": profile.seed,
                                                        "hide_color": 0.0})
    assert method("shap").options(profile) == ("shap", {"nsamples": settings.shap_samples, "seed": profile.seed,
                                                        "fill": settings.shap_fill})
    assert method("lime").settings(profile)["n_samples"] == settings.lime_samples
    assert method("shap").samples(profile) == settings.shap_samples + 2 and method("lrp").samples(profile) == 0
    rows = list(range(10))
    assert method("lrp").sanity_rows(rows) == rows and method("shap").sanity_rows(rows) == rows[:2]


def test_no_module_outside_the_registry_names_a_method():
    """Adding a method must not mean editing string checks across the library."""
    library = Path(explainers.__file__).parent.parent
    names = [re.escape(f'"{text}"') for record in REGISTRY.values() for text in (record.key, record.name)]
    pattern = re.compile("|".join(names))
    allowed = {("evaluation.py", 'paper = "Grad-CAM"')}  # the paper's own claim, quoted by the narrative
    found = []
    for path in sorted(library.glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and not any(path.name == name and text in line for name, text in allowed):
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
