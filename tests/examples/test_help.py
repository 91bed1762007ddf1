"""Every module of `examples/` answers `--help`, scripts and their helpers alike."""

from __future__ import annotations

import re
import subprocess
import sys

import keras
import pytest

from tests.examples._example_runs import REPO_ROOT, example_env

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent("argument parsing")]

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.py"))
# Modules of shared code that the scripts import; run, they say so.
HELPERS = [
    REPO_ROOT / "examples" / name
    for name in ("mnist_training.py", "efficient_capsnet_augmentation.py")
]


def _run(path, *arguments):
    return subprocess.run(
        [sys.executable, str(path), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env=example_env(keras.backend.backend()),
    )


def test_the_helper_modules_are_examples():
    assert set(HELPERS) <= set(EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_answers_help(path):
    result = _run(path, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {path.name} "), result.stdout[:200]
    assert "-h, --help" in result.stdout
    # A script lists its options; a module that has none says it is no script.
    options = set(re.findall(r"^  (--[a-z][-a-z]*)", result.stdout, re.MULTILINE))
    not_a_script = "This module is not a script" in result.stdout
    assert not_a_script == (path in HELPERS), result.stdout[-400:]
    assert bool(options) != not_a_script, options


@pytest.mark.parametrize("path", HELPERS, ids=lambda path: path.name)
def test_helper_module_run_as_a_script_says_it_is_not_one(path):
    result = _run(path)

    assert result.returncode == 2
    assert "not a script" in result.stderr
    assert result.stdout == ""
