"""A minimal smoke run built with the library (not the notebooks): data, a 2-epoch model, test
predictions, cached Grad-CAM and LRP maps and the localisation pairs table, in a ``SHAMSUL_RUNS``
folder. About 15 s on 2 cores, much cheaper than notebooks 01-07; the workshop tests and the live
browser test explore it.
"""

from pathlib import Path

import pytest


def build_smoke_run(runs: Path) -> Path:
    """Build the smoke profile's run under ``runs`` (``runs/smoke/...``); returns ``runs``."""
    from shamsul_utils import datasets, evaluation, study, training
    from shamsul_utils.config import load_profile
    from shamsul_utils.files import write_table
    from shamsul_utils.models import load_trained_model
    from shamsul_utils.phantom import PhantomSettings, write_dataset

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("SHAMSUL_RUNS", str(runs))
        config = load_profile("smoke")
        write_dataset(config.data_root, sizes=config.data.sizes, seed=config.seed,
                      settings=PhantomSettings(**config.data.phantom))
        training.train(config, progress=False)
        model, _ = load_trained_model(config)
        training.predict_split(config, model, datasets.read_split(config, "test"))
        explanation = study.explanation_set(config)
        maps = {name: study.explain_cached(config, model, explanation, study.METHODS[name], progress=False)
                for name in ("Grad-CAM", "LRP")}
        scores = {name: evaluation.score_method(name, explanation, value, signed=config.evaluation.signed)
                  for name, value in maps.items()}
        write_table(evaluation.per_pair_table(scores, explanation), config.paths.tables / "localisation_pairs.csv")
    return runs
