"""Claims as test results: the pooled paired bootstrap, Holm's correction and the generated sentences,
checked against hand-computed cases, normal theory and simulation."""

from __future__ import annotations

import numpy as np
import pytest

from shamsul_utils.claims import (
    UntestableError,
    claims_markdown,
    claims_table,
    holm,
    minimum_detectable_difference,
    pooled_paired_bootstrap,
)


def test_holm_by_hand_and_by_its_definition():
    # by hand: sorted 0.001, 0.01, 0.02, 0.04 times 4, 3, 2, 1 -> 0.004, 0.03, 0.04, 0.04 (monotone)
    np.testing.assert_allclose(holm([0.04, 0.001, 0.02, 0.01]), [0.04, 0.004, 0.04, 0.03])
    rng = np.random.default_rng(0)
    p = rng.random(12) ** 3
    order = np.argsort(p)
    expected = np.empty(12)
    running = 0.0
    for rank, index in enumerate(order):  # the step-down definition, written out
        running = max(running, min(1.0, (12 - rank) * p[index]))
        expected[index] = running
    np.testing.assert_allclose(holm(p), expected)


def test_one_model_one_class_is_the_paired_image_bootstrap_of_normal_theory():
    rng = np.random.default_rng(1)
    differences = rng.normal(0.1, 1.0, size=400)
    a = differences.reshape(1, -1, 1)
    result = pooled_paired_bootstrap(a, np.zeros_like(a), n_resamples=4000, seed=3)
    half_width = 1.96 * differences.std(ddof=1) / np.sqrt(400)
    assert result.difference == pytest.approx(differences.mean())
    assert result.low == pytest.approx(differences.mean() - half_width, abs=0.015)
    assert result.high == pytest.approx(differences.mean() + half_width, abs=0.015)
    assert result.standard_error == pytest.approx(differences.std(ddof=1) / 20, rel=0.06)


def test_the_test_keeps_its_level_under_the_null_with_image_effects_shared_by_the_models():
    """No true difference, but every image has its own difference between the methods, shared by the
    models that explain it (the images are crossed with the models): p < 0.05 in about 5 % of
    simulated studies. Resampling the images independently per model rejected about a third."""
    rng = np.random.default_rng(2)
    rejected = 0
    studies = 150
    for study in range(studies):
        truth = rng.random((1, 40, 4))  # per-image difficulty, shared by the three models
        shared = rng.normal(0, 0.3, (1, 40, 4))  # the image's own A - B difference, mean 0
        a = truth + shared + rng.normal(0, 0.1, (3, 40, 4))
        b = truth + rng.normal(0, 0.1, (3, 40, 4))
        a[:, :, 3] = b[:, :, 3] = np.where(rng.random((1, 40)) < 0.5, np.nan, a[:, :, 3])
        rejected += pooled_paired_bootstrap(a, b, n_resamples=400, seed=study).p_value < 0.05
    assert rejected / studies < 0.1  # 5 % expected; 0.1 is 2.8 binomial sd above it


def test_the_same_model_twice_carries_no_new_information_and_the_class_set_is_fixed():
    rng = np.random.default_rng(3)
    one = rng.normal(0.05, 0.3, size=(1, 60, 3))
    single = pooled_paired_bootstrap(one, np.zeros_like(one), n_resamples=3000, seed=0)
    twice = np.concatenate([one, one])  # the same images under a second, identical model
    double = pooled_paired_bootstrap(twice, np.zeros_like(twice), n_resamples=3000, seed=0)
    assert double.difference == pytest.approx(single.difference)
    assert double.standard_error == pytest.approx(single.standard_error, rel=0.06)  # not / sqrt(2)
    shifted = np.concatenate([one, one + 0.4])  # models that disagree widen the interval
    assert pooled_paired_bootstrap(shifted, np.zeros_like(shifted), n_resamples=3000, seed=0).standard_error > \
        2 * single.standard_error
    rare = rng.normal(0.0, 0.3, size=(2, 30, 4))
    rare[:, 2:, 2] = np.nan  # class 2: two pairs per model; it stays in every resample's mean
    rare[1, 1:, 1] = np.nan  # class 1: one pair under the second model: outside the fixed set
    rare[:, 1:, 3] = np.nan  # class 3: one pair under every model: cannot be resampled, outside
    result = pooled_paired_bootstrap(rare, np.zeros_like(rare), n_resamples=300, seed=0)
    assert result.classes == 2 and np.isfinite([result.low, result.high, result.p_value]).all()
    expected = np.mean([np.mean([rare[k, :, 0].mean(), rare[k, :2, 2].mean()]) for k in range(2)])
    assert result.difference == pytest.approx(expected)
    with pytest.raises(UntestableError, match="no class has 2 defined pairs under every model"):
        pooled_paired_bootstrap(np.full((1, 4, 2), np.nan), np.zeros((1, 4, 2)))


def test_claims_are_the_tests_that_survive_holm_and_the_sentences_say_so():
    rng = np.random.default_rng(4)
    base = rng.random((3, 40, 5))
    scores = {}
    for metric in ("miou_all", "hit_rate"):
        scores[("Grad-CAM", metric)] = base + 0.25 + rng.normal(0, 0.05, base.shape)  # clearly best
        scores[("LRP", metric)] = base + rng.normal(0, 0.05, base.shape)
        scores[("LIME", metric)] = base + (0.1 if metric == "miou_all" else 0.0) + rng.normal(0, 0.05, base.shape)
    table = claims_table(scores, metrics=("miou_all", "hit_rate"), n_resamples=500)
    assert len(table) == 6 and (table["p_holm"] >= table["p"]).all()
    holding = table[table["holds"]]
    assert sorted(zip(holding["metric"], holding["better"], strict=True)) == [
        ("hit_rate", "Grad-CAM"), ("hit_rate", "Grad-CAM"), ("miou_all", "Grad-CAM"), ("miou_all", "Grad-CAM"),
        ("miou_all", "LIME")]
    not_held = table[~table["holds"]]
    assert list(zip(not_held["metric"], not_held["method_a"], not_held["method_b"], strict=True)) == [
        ("hit_rate", "LRP", "LIME")]
    assert (table["mdd"] > table["mdd_nominal"]).all()  # the family's strictest level asks for more
    text = claims_markdown(table)
    assert text.startswith("5 of 6 declared comparisons hold (3 models x 40 images")
    assert "- **Grad-CAM > LRP** by mIoU (full set): +0.2" in text
    # the better method is the table's method_b here: the sentence turns the difference and interval round
    row = table[(table["metric"] == "miou_all") & (table["method_a"] == "LRP")].iloc[0]
    assert row["method_b"] == "LIME" and row["difference"] < 0
    assert f"- **LIME > LRP** by mIoU (full set): {-row['difference']:+.3f} [{-row['high']:+.3f}, {-row['low']:+.3f}]" in text
    assert "- not separated by hit rate: LRP / LIME (" in text


def test_minimum_detectable_difference_by_hand():
    # (1.959964 + 0.841621) x 0.01 at alpha 0.05, power 0.8
    assert minimum_detectable_difference(0.01, alpha=0.05) == pytest.approx(0.028016, abs=1e-6)


def test_publish_rewrites_only_readmes_claims_block(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from shamsul_utils import claims, config

    (tmp_path / "figures").mkdir()
    before = f"# Title\n\nintro\n\n{claims.README_START}\nold claims\n{claims.README_END}\n\nafter\n"
    (tmp_path / "README.md").write_text(before)
    monkeypatch.setattr(config, "REPOSITORY_ROOT", tmp_path)
    profile = SimpleNamespace(publish_figures=True, paths=SimpleNamespace(tables=tmp_path / "tables"))
    claims.publish(profile, "- **A > B** by hit rate\n")
    readme = (tmp_path / "README.md").read_text()
    assert readme == f"# Title\n\nintro\n\n{claims.README_START}\n- **A > B** by hit rate\n{claims.README_END}\n\nafter\n"
    assert claims.readme_block(readme) == (tmp_path / "figures" / "07_claims.md").read_text()
    assert (tmp_path / "tables" / "claims.md").read_text() == "- **A > B** by hit rate\n"
    claims.publish(profile, "- **A > B** by hit rate\n")
    assert (tmp_path / "README.md").read_text() == readme  # idempotent


def test_readme_quotes_the_published_runs_claims_and_no_other():
    """README's results block is the default run's generated text, as published in figures/."""
    from shamsul_utils import claims
    from shamsul_utils.config import REPOSITORY_ROOT

    readme = (REPOSITORY_ROOT / "README.md").read_text(encoding="utf-8")
    published = REPOSITORY_ROOT / "figures" / "07_claims.md"
    assert published.is_file(), "make reproduce publishes figures/07_claims.md"
    assert claims.readme_block(readme) == published.read_text(encoding="utf-8")
    replication = REPOSITORY_ROOT / "figures" / "07_replication.md"  # make replicate's, when it has run
    block = claims.readme_block(readme, "replication")
    assert block == (replication.read_text(encoding="utf-8") if replication.is_file() else "\n")
    for name in ("shortcut", "significance"):  # notebooks 10 and 08
        _, _, file = claims.README_BLOCKS[name]
        assert claims.readme_block(readme, name) == (REPOSITORY_ROOT / "figures" / file).read_text(encoding="utf-8")


def test_replication_rate_is_the_share_of_held_out_models_where_a_claim_holds_the_same_way():
    import pandas as pd

    from shamsul_utils.replicate import replication_markdown, replication_table

    def table(rows):
        return pd.DataFrame([{"metric": metric, "method_a": a, "method_b": b, "holds": holds, "better": better,
                              "difference": 0.1 if better == a else -0.1, "p_holm": 0.01 if holds else 0.5}
                             for metric, a, b, holds, better in rows])

    main = table([("hit_rate", "A", "B", True, "A"), ("hit_rate", "A", "C", False, "C"),
                  ("miou_all", "A", "B", True, "B")])
    pooled = table([("hit_rate", "A", "B", True, "A"), ("hit_rate", "A", "C", True, "C"),
                    ("miou_all", "A", "B", True, "A")])  # the mIoU claim flips on held-out models
    per_model = {5: table([("hit_rate", "A", "B", True, "A"), ("hit_rate", "A", "C", False, "C"),
                           ("miou_all", "A", "B", False, "B")]),
                 6: table([("hit_rate", "A", "B", False, "A"), ("hit_rate", "A", "C", False, "C"),
                           ("miou_all", "A", "B", True, "B")])}
    result = replication_table(main, pooled, per_model).set_index(["metric", "method_a", "method_b"])
    assert result.loc[("hit_rate", "A", "B"), "replication_rate"] == 0.5
    assert bool(result.loc[("hit_rate", "A", "B"), "pooled_replicates"])
    assert result.loc[("miou_all", "A", "B"), "replication_rate"] == 0.5
    assert not result.loc[("miou_all", "A", "B"), "pooled_replicates"]
    text = replication_markdown(result.reset_index(), [5, 6], "replicate")
    assert "- **A > B** by hit rate: replicates pooled" in text and "holds on 50% of them" in text
    assert "- **B > A** by mIoU (full set): does not replicate" in text
    assert "not claimed by the main run, but held out: C > A by hit rate" in text
