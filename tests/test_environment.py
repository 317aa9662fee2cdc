"""The pins agree: pyproject.toml (direct), environment.yml (mirror), requirements.lock (whole env)."""

import re
import tomllib

import yaml

from shamsul_utils.config import REPOSITORY_ROOT


def _pins(lines):
    pins = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)\s*", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_every_direct_dependency_is_pinned_exactly():
    dependencies = tomllib.loads((REPOSITORY_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert dependencies, "pyproject lists no dependencies"
    assert all("==" in item for item in dependencies), [item for item in dependencies if "==" not in item]


def test_environment_yml_mirrors_pyproject():
    direct = _pins(tomllib.loads((REPOSITORY_ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    environment = yaml.safe_load((REPOSITORY_ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert _pins(pip_section) == direct
    assert "python=3.11" in environment["dependencies"]


def test_lock_file_agrees_with_direct_pins():
    direct = _pins(tomllib.loads((REPOSITORY_ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    locked = _pins((REPOSITORY_ROOT / "requirements.lock").read_text().splitlines())
    disagreements = {name: (version, locked.get(name)) for name, version in direct.items() if locked.get(name) != version}
    assert not disagreements
