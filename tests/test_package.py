"""Package hygiene: every module imports, the package __init__ stays light, lint is clean."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import grouptune

ROOT = Path(__file__).resolve().parents[1]


def all_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(grouptune.__path__, "grouptune.")]


@pytest.mark.parametrize("name", all_modules())
def test_every_module_imports(name):
    importlib.import_module(name)


def test_package_init_does_not_import_torch_or_transformers():
    code = "import sys, grouptune; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "src", "tests", "benchmarks", "examples"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(path):
    """The example run configs use only settings that exist, with values of the right type."""
    from grouptune.config import load_config
    from grouptune.methods import check_method_config

    cfg = load_config(path)
    check_method_config(cfg.method)
    assert cfg.model.name_or_path and cfg.data.train
