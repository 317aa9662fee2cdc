"""The phantom and the demo's recipe are frozen before explanations are scored (the conclusions issue):
changing either is a conscious step - bump the version, record the new digest here, rerun and re-test -
never a silent edit under published claims."""

import dataclasses
import hashlib
import json

from shamsul_utils import phantom
from shamsul_utils.config import REPOSITORY_ROOT, load_profile

# PHANTOM_VERSION -> sha256 of the generator's sources (data/README.md: "The phantom's tuning target")
FROZEN_PHANTOM = {
    "1.1": {"phantom.py": "50ae6224440ed9734c57c1b0e4edb187e9aeba39e67a3340cf14f330c25e9e55",
            "phantom_drawing.py": "904cf71c2a327e6efbb1476cdae539669ccffb7f75dba4fe27106790bc6a784a"},
}
# sha256 of the demo profile's data, model and training sections (the recipe the claims were tested on)
FROZEN_DEMO_RECIPE = "afe4642b7180b4393efeab5296738643f95922806664d74415e36118fcc07891"


def test_the_phantom_generator_is_frozen_at_its_version():
    assert phantom.PHANTOM_VERSION in FROZEN_PHANTOM, "record the new version's digests in FROZEN_PHANTOM"
    for name, expected in FROZEN_PHANTOM[phantom.PHANTOM_VERSION].items():
        digest = hashlib.sha256((REPOSITORY_ROOT / "shamsul_utils" / name).read_bytes()).hexdigest()
        assert digest == expected, (f"{name} changed under phantom version {phantom.PHANTOM_VERSION}: bump "
                                    "PHANTOM_VERSION (the data regenerate), rerun make reproduce, and record it here")


def test_the_demo_recipe_is_frozen():
    profile = load_profile("demo")
    recipe = {"data": dataclasses.asdict(profile.data), "model": dataclasses.asdict(profile.model),
              "training": dataclasses.asdict(profile.training)}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()
    assert digest == FROZEN_DEMO_RECIPE, ("the demo's data, model or training settings changed: the published "
                                          "claims were tested on the old recipe; rerun make reproduce and "
                                          "make replicate, then record the new digest here")
