"""The numbers of the README and the docs agree with their metrics files and the code.

Every Markdown file is rendered again by `scripts/docs/render_numbers.py`
and compared with the committed text; the defaults that the pages and the
examples' `--help` state are compared with the models' `TrainingRecipe`.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import keras_capsules
from keras_capsules import models

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "docs"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def numbers():
    return _load("render_numbers")


def _files_with_numbers() -> list[Path]:
    return [
        path
        for path in _load("render_numbers").markdown_files(REPO)
        if "<!-- numbers:" in path.read_text()
    ]


@pytest.mark.parametrize(
    "path", _files_with_numbers(), ids=lambda path: str(path.relative_to(REPO))
)
def test_rendered_numbers_match_their_metrics_files(numbers, path):
    text = path.read_text()
    rendered = numbers.render_text(text, path, REPO)
    if rendered != text:
        stale = [
            f"- committed: {old!r}\n  rendered:  {new!r}"
            for old, new in zip(
                numbers.MARKER.findall(text), numbers.MARKER.findall(rendered)
            )
            if old != new
        ]
        pytest.fail(
            f"{path.relative_to(REPO)} disagrees with its metrics files; run "
            "`python scripts/docs/render_numbers.py`:\n" + "\n".join(stale)
        )


def test_the_readme_and_the_pages_show_numbers():
    readme = (REPO / "README.md").read_text()
    table = readme.partition("<!-- numbers:method-table -->")[2]
    assert "\n| model |" in table.partition("<!-- /numbers -->")[0]
    for page in ("example", "experiments", "performance", "backends", "concepts"):
        assert "<!-- numbers:" in (REPO / "docs" / f"{page}.md").read_text(), page


def test_the_readme_pictures_exist_relative_to_it():
    readme = (REPO / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme)
    assert len(pictures) >= 3, pictures  # the method table's chart and two more
    for picture in pictures:
        assert not picture.startswith(("http", "/")), picture
        assert (REPO / picture).exists(), picture


def test_value_paths(numbers):
    data = {
        "rows": [{"a": "x", "v": 1.0}, {"a": "y", "v": 3.0}],
        "history": {"acc": [0.5, 0.9, 0.7, 0.9]},
        "it": {"2": {"s": 0.25}},
    }
    assert numbers.lookup(data, "rows[a=y].v") == 3.0
    assert numbers.lookup(data, "history.acc.-1") == 0.9
    assert numbers.lookup(data, "history.acc[1:3].min") == 0.7
    assert numbers.lookup(data, "history.acc.first_max") == 2
    assert numbers.lookup(data, "history.acc.median") == 0.8
    assert numbers.lookup(data, "it.2.s") == 0.25
    assert numbers.format_value(0.9937, "{p:.2f} %") == "99.37 %"
    assert numbers.format_value(120.0, "{m:.0f} min") == "2 min"
    with pytest.raises(numbers.RenderError, match="no row"):
        numbers.lookup(data, "rows[a=z].v")


def test_a_changed_metrics_file_makes_the_page_stale(numbers, tmp_path):
    (tmp_path / "docs" / "assets" / "example").mkdir(parents=True)
    metrics = tmp_path / "docs" / "assets" / "example" / "metrics.json"
    metrics.write_text(json.dumps({"test_accuracy": 0.5}))
    page = tmp_path / "docs" / "p.md"
    text = "At <!-- numbers:value example test_accuracy {p:.1f} % -->50.0 %<!-- /numbers -->.\n"
    assert numbers.render_text(text, page, tmp_path) == text
    metrics.write_text(json.dumps({"test_accuracy": 0.75}))
    assert "75.0 %" in numbers.render_text(text, page, tmp_path)


def test_unknown_blocks_and_sources_are_refused(numbers, tmp_path):
    page = tmp_path / "p.md"
    with pytest.raises(numbers.RenderError, match="unknown block"):
        numbers.render_text("<!-- numbers:nope -->\n<!-- /numbers -->", page, tmp_path)
    with pytest.raises(numbers.RenderError, match="no metrics file"):
        numbers.render_text(
            "<!-- numbers:value example x {v} -->1<!-- /numbers -->", page, tmp_path
        )


# --- defaults stated in the docs and the examples' --help ---------------------


def test_every_model_of_the_package_is_in_the_method_table():
    table = _load("method_table_results")
    found = table.capsule_models()
    assert {"CapsNet", "EfficientCapsNet", "MatrixCapsNet"} <= set(found)
    readme = (REPO / "README.md").read_text()
    for name in found:
        assert f"| `{name}` |" in readme, name


def _help(script: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return " ".join(result.stdout.split())


def test_capsnet_mnist_help_states_the_recipes():
    text = _help("capsnet_mnist.py")
    capsnet, efficient = models.CapsNet.recipe, models.EfficientCapsNet.recipe
    number = r"([0-9.e-]+)"
    stated = {
        "epochs": rf"--epochs EPOCHS .*?the recipe's, {number} / {number}\)",
        "batch_size": rf"--batch-size BATCH_SIZE .*?recipe: {number} / {number}\)",
        "learning_rate": rf"--lr LR .*?recipe: {number} / {number}\)",
        "decay_per_epoch": rf"--lr-decay LR_DECAY .*?\({number} / {number}\)",
        "min_learning_rate": rf"--min-lr MIN_LR .*?\({number} / {number}\)",
    }
    for field, pattern in stated.items():
        match = re.search(pattern, text)
        assert match, f"--help does not state the recipes' {field}: {text}"
        assert [float(match.group(1)), float(match.group(2))] == [
            getattr(capsnet, field),
            getattr(efficient, field),
        ], f"--help's {field} {match.groups()} differs from the recipes"
    match = re.search(rf"--recon-weight RECON_WEIGHT .*?recipe: {number}\)", text)
    assert match
    weight = float(match.group(1))
    assert weight == capsnet.reconstruction_weight == efficient.reconstruction_weight


def test_make_example_is_described_as_what_it_runs():
    makefile = (REPO / "Makefile").read_text()
    epochs = re.search(r"capsnet_mnist\.py .*\\\n\s+--epochs (\d+)", makefile)
    assert epochs, "the Makefile's example target names its --epochs"
    stated = f"for {epochs.group(1)} epoch"
    assert stated in (REPO / "README.md").read_text().replace("\n", " ")
    getting_started = (REPO / "docs" / "getting-started.md").read_text()
    assert "same run" not in getting_started
    assert f"{epochs.group(1)} epoch on all 60,000 images" in getting_started.replace(
        "\n", " "
    )


# Phrases that describe the machine the docs were written on, not the software.
OUR_MACHINE = re.compile(
    r"\.\./shared|kill -STOP|\bsessions?\b|cannot be downloaded|"
    r"\b(downloaded|measured|took|slower|faster|batch of \d+|run|runs|h) here\b"
)


def test_no_page_speaks_of_the_authors_machine():
    pages = [
        REPO / "README.md",
        REPO / "CHANGELOG.md",
        REPO / "benchmarks" / "README.md",
        REPO / "Makefile",
        *sorted((REPO / "docs").rglob("*.md")),
    ]
    problems = [
        f"{page.relative_to(REPO)}:{number}: {line.strip()}"
        for page in pages
        for number, line in enumerate(page.read_text().splitlines(), start=1)
        if OUR_MACHINE.search(line)
    ]
    # The README is read first, by people who have not seen our machine.
    readme = (REPO / "README.md").read_text()
    problems += [f"README.md: {line}" for line in re.findall(r".*\bhere\b.*", readme)]
    assert not problems, "\n".join(problems)


def test_the_top_level_names_the_pages_state():
    """Each `keras_capsules.Name` of the README and the API page exists, and
    a module said to be re-exported at the top level is, name by name."""
    import importlib

    for page in (REPO / "README.md", REPO / "docs" / "api" / "index.md"):
        text = page.read_text()
        for name in re.findall(r"`keras_capsules\.([A-Z]\w*)`", text):
            assert name in keras_capsules.__all__, f"{page.name}: {name}"
    text = (REPO / "docs" / "api" / "index.md").read_text().replace("\n", " ")
    claim = re.search(r"Every name of (.*?) is also available at the top level", text)
    if claim is None:
        return
    modules = re.findall(r"`(?:keras_capsules)?\.(\w+)`", claim.group(1))
    assert modules, claim.group(0)
    for module in modules:
        public = importlib.import_module(f"keras_capsules.{module}").__all__
        missing = [name for name in public if name not in keras_capsules.__all__]
        assert not missing, f"keras_capsules.{module}: {missing} not at the top level"


def test_the_call_arguments_the_docs_state():
    import inspect

    from keras_capsules import layers

    for name in layers.__all__:
        cls = getattr(layers, name)
        if not isinstance(cls, type) or not hasattr(cls, "call"):
            continue
        parameters = inspect.signature(cls.call).parameters
        if "Matrix" in name and name != "PrimaryMatrixCapsule":
            assert "return_assignments" in parameters, name
        elif "Routing" in name:
            assert "return_coupling" in parameters, name
    readme = (REPO / "README.md").read_text().replace("\n", " ")
    assert "layer(inputs, return_assignments=True)" in readme
    assert "layer(inputs, return_coupling=True)" in readme
