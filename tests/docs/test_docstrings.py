"""Runs the examples in the package's docstrings as doctests.

One test per module of `keras_capsules`, on the backend chosen by
`KERAS_BACKEND`. The examples print plain lists and tuples, so the same
expected output holds on TensorFlow, PyTorch and JAX.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_capsules


def _module_names() -> list[str]:
    names = [keras_capsules.__name__]
    for info in pkgutil.walk_packages(
        keras_capsules.__path__, prefix=keras_capsules.__name__ + "."
    ):
        names.append(info.name)
    return sorted(names)


MODULE_NAMES = _module_names()


def test_every_public_module_is_collected():
    for name in (
        "keras_capsules.ops",
        "keras_capsules.layers",
        "keras_capsules.losses",
    ):
        assert name in MODULE_NAMES


@pytest.mark.parametrize("module_name", MODULE_NAMES)
def test_docstring_examples(module_name: str) -> None:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    globs = {"keras": keras, "keras_capsules": keras_capsules, "np": np}
    # Only the docstrings defined in this module, not those it re-exports.
    tests = [
        test
        for test in finder.find(module, module_name, globs=globs)
        if _defined_in(test, module_name)
    ]
    if not any(test.examples for test in tests):
        pytest.skip(f"{module_name} has no docstring examples")
    failures = []
    for test in tests:
        keras.utils.set_random_seed(0)
        output: list[str] = []
        result = runner.run(test, out=output.append, clear_globs=True)
        if result.failed:
            failures.append("".join(output))
    assert not failures, "\n".join(failures)


def _defined_in(test: doctest.DocTest, module_name: str) -> bool:
    module = importlib.import_module(module_name)
    filename = getattr(module, "__file__", None)
    return filename is None or test.filename is None or test.filename == filename
