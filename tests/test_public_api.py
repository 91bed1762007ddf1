"""The public API is declared once: each name in its module's `__all__`."""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import keras
import pytest

import keras_capsules
from tests.conftest import REPO_ROOT

TOP_LEVEL_MODULES = ("layers", "losses", "models", "callbacks")
ALL_MODULES = (*TOP_LEVEL_MODULES, "ops", "visualization", "datasets")


@pytest.mark.parametrize("name", ALL_MODULES)
def test_every_listed_name_exists_and_no_public_definition_is_unlisted(name):
    module = importlib.import_module(f"keras_capsules.{name}")
    missing = [public for public in module.__all__ if not hasattr(module, public)]
    assert not missing, f"keras_capsules.{name}.__all__ lists absent {missing}"
    unlisted = [
        attribute
        for attribute, value in vars(module).items()
        if not attribute.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").startswith(f"keras_capsules.{name}")
        and attribute not in module.__all__
    ]
    assert not unlisted, f"keras_capsules.{name} defines unlisted {unlisted}"


def test_the_top_level_holds_every_name_of_the_class_modules():
    for name in TOP_LEVEL_MODULES:
        module = getattr(keras_capsules, name)
        for public in module.__all__:
            assert public in keras_capsules.__all__, public
            assert getattr(keras_capsules, public) is getattr(module, public)


def test_every_registered_class_is_exported():
    exported = {
        id(getattr(importlib.import_module(f"keras_capsules.{name}"), public))
        for name in TOP_LEVEL_MODULES
        for public in importlib.import_module(f"keras_capsules.{name}").__all__
    }
    registered = [
        key
        for key, value in keras.saving.get_custom_objects().items()
        if key.startswith("keras_capsules>") and id(value) not in exported
    ]
    assert not registered, f"registered but not exported: {registered}"


def test_the_api_page_lists_exactly_the_modules_names():
    path = REPO_ROOT / "scripts" / "docs" / "api_index.py"
    spec = importlib.util.spec_from_file_location("api_index", path)
    assert spec is not None and spec.loader is not None
    api_index = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(api_index)
    page = api_index.PAGE.read_text()
    assert page == api_index.rendered(page), (
        "docs/api/index.md is out of date: run python scripts/docs/api_index.py"
    )
