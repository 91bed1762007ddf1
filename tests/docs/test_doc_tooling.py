"""Tests of the documentation tooling in scripts/docs (no browser, no build)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "docs"


def _load(name: str):
    if name in sys.modules:  # one module object, as the hooks import it
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hooks():
    pytest.importorskip("mkdocs")
    sys.path.insert(0, str(SCRIPTS))
    return _load("mkdocs_hooks")


@pytest.fixture(scope="module")
def renderers():
    sys.path.insert(0, str(SCRIPTS))
    return _load("renderers")


@pytest.fixture(scope="module")
def griffe_extension():
    pytest.importorskip("griffe")
    return _load("griffe_keras_docstrings")


def test_keras_example_section_is_indented_under_examples(griffe_extension):
    text = (
        "Summary.\n\nArgs:\n    x: A tensor.\n\nExample:\n\n"
        ">>> f(1)\n2\n\nMore text.\n\n```python\nReference:\n```\n\n"
        "Reference:\n    - [Paper](https://example.org)"
    )
    assert griffe_extension.indent_examples(text) == (
        "Summary.\n\nArgs:\n    x: A tensor.\n\nExamples:\n"
        "    >>> f(1)\n    2\n\n    More text.\n\n    ```python\n    Reference:\n"
        "    ```\n\nReference:\n    - [Paper](https://example.org)"
    )


def test_indented_example_section_is_left_alone(griffe_extension):
    text = "Summary.\n\nExamples:\n    >>> f(1)\n    2"
    assert griffe_extension.indent_examples(text) == text


def test_call_arguments_become_a_list(griffe_extension):
    text = (
        "Call arguments:\n    inputs: The capsules,\n        of shape (b, n, d).\n"
        "    training: A boolean.\n\nReturns:\n    x"
    )
    assert griffe_extension.list_call_arguments(text) == (
        "Call arguments:\n    - `inputs`: The capsules,\n      of shape (b, n, d).\n"
        "    - `training`: A boolean.\n\nReturns:\n    x"
    )


def _page(src_uri: str):
    class File:
        pass

    class Page:
        pass

    page = Page()
    page.file = File()
    page.file.src_uri = src_uri
    return page


def test_missing_results_render_as_pending(renderers, tmp_path):
    out = renderers.render_parity(tmp_path)
    assert out.startswith('!!! pending "Results pending"')


def test_the_hook_renders_checks_and_strips_the_markers(hooks, tmp_path, caplog):
    docs = tmp_path / "docs"
    (docs / "assets" / "example").mkdir(parents=True)
    (docs / "assets" / "example" / "metrics.json").write_text('{"epochs": 3}')
    marker = "<!-- numbers:value example epochs {v} -->"
    config = {"docs_dir": str(docs)}
    fresh = f"Trained {marker}3<!-- /numbers --> epochs.\n"
    assert hooks.on_page_markdown(fresh, _page("t.md"), config, None) == (
        "Trained 3 epochs.\n"
    )
    assert not caplog.records
    stale = f"Trained {marker}2<!-- /numbers --> epochs.\n"
    assert hooks.on_page_markdown(stale, _page("t.md"), config, None) == (
        "Trained 3 epochs.\n"
    )
    assert "render_numbers.py" in caplog.text


def test_unknown_block_fails_the_build(hooks, tmp_path):
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match="unknown"):
        hooks.on_page_markdown(
            "<!-- numbers:nope -->\n<!-- /numbers -->\n",
            _page("t.md"),
            {"docs_dir": str(tmp_path)},
            None,
        )


def test_parity_table_shows_every_pair(renderers, tmp_path):
    pair = {
        "prediction_max_abs": 2e-7,
        "worst_output": "lengths",
        "loss_max_abs": 1e-8,
        "update_max_abs": 1e-9,
        "update_max_rel": 3e-6,
        "largest_update": 1e-3,
        "worst_variable": "conv/kernel",
    }
    report = {
        "keras_version": "3.x",
        "loaded_by": {
            b: {
                "prediction_max_abs_vs_saver": 0.0 if b == "jax" else 1e-7,
                "worst_output": "lengths",
                "loss": {"loss": 1.0},
                "framework_version": f"{b}-1",
                "seconds": 1.0,
            }
            for b in ("jax", "tensorflow", "torch")
        },
        "loader_pairs": {"jax vs torch": pair},
        "errors": [],
    }
    path = tmp_path / "assets" / "parity" / "parity.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"saved_by": {"jax": report}, "tolerances": {}}))
    out = renderers.render_parity(tmp_path)
    assert "saved by **jax** | 0 (identical) | 1.00e-07 | 1.00e-07 |" in out
    assert (
        "| jax | jax vs torch | 2.00e-07 | 1.00e-08 | 3.00e-06 (`conv/kernel`) |" in out
    )
    assert "torch torch-1" in out


@pytest.mark.parametrize(
    "module, page",
    [
        ("keras_capsules.layers", "layers.md"),
        ("keras_capsules.losses", "losses.md"),
        ("keras_capsules.models", "models.md"),
        ("keras_capsules.ops", "ops.md"),
        ("keras_capsules.visualization", "visualization.md"),
        ("keras_capsules.datasets", "datasets.md"),
        ("keras_capsules.callbacks", "callbacks.md"),
    ],
)
def test_api_reference_covers_every_public_name(module: str, page: str) -> None:
    import importlib

    text = (SCRIPTS.parents[1] / "docs" / "api" / page).read_text()
    if f"::: {module}\n" in text:
        return  # the whole module is rendered, so every public member is.
    public = getattr(importlib.import_module(module), "__all__", [])
    missing = [name for name in public if f"::: {module}.{name}\n" not in text]
    assert not missing, f"docs/api/{page} lacks `::: {module}.<name>` for {missing}"
