"""Runs docs/own-data.md as written, on small generated data.

In a fresh folder holding a small `cifar-10-binary.tar.gz` (in the binary
format, 4 images a file) and `my_images/` (classes `cat` and `dog`), the
page's Python blocks run in order in one namespace, printing what the page
shows (the `.npz` block writes `my_data.npz`); then every
`python examples/train.py` command of its bash blocks runs as written, with
options appended that keep it tiny: one epoch, batches of 4, the model's
small configuration from its tests (`tiny_model_config`), and an output
folder of its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import tarfile

import numpy as np
import pytest

from tests.datasets.image_files import write_cifar10_folder, write_image_folder
from tests.docs.test_snippets import DOCS, expected_output, python_blocks
from tests.examples._example_runs import example_module
from tests.examples.test_train import TRAIN, tiny_model_config

PAGE = "own-data.md"
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.backend_independent("the page's commands run examples/train.py"),
]


def page_commands() -> list[str]:
    text = (DOCS / PAGE).read_text()
    return [
        line.strip()
        for block in BASH_BLOCK.findall(text)
        for line in block.splitlines()
        if line.startswith("python examples/train.py")
    ]


def test_the_page_shows_each_source_and_is_in_the_nav():
    commands = " ".join(page_commands())
    for option in ("--cifar10", "--images", "--data"):
        assert option in commands
    assert "own-data.md" in (DOCS.parent / "mkdocs.yml").read_text()


@pytest.fixture
def page_folder(tmp_path, monkeypatch):
    write_cifar10_folder(tmp_path / "c10")
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "c10", arcname="cifar-10-batches-bin")
    # Photographs of another aspect ratio, for the page's --resize crop.
    write_image_folder(tmp_path / "my_images", per_class=5, size=(40, 50))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_page_runs_as_written(page_folder):
    namespace: dict = {"__name__": "__docs__"}
    for number, code in enumerate(python_blocks(PAGE), start=1):
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            exec(
                compile(code, f"docs/{PAGE}, python block {number}", "exec"), namespace
            )
        assert stdout.getvalue().splitlines() == expected_output(code), number
    assert np.load("my_data.npz")["y_train"].dtype.kind == "i"

    commands = page_commands()
    assert len(commands) >= 3
    for number, command in enumerate(commands):
        argv = shlex.split(command)[2:]
        model = argv[argv.index("--model") + 1]
        output_dir = page_folder / f"run{number}"
        tiny = [
            "--epochs", "1",
            "--batch-size", "4",
            "--model-config", json.dumps(tiny_model_config(model)),
            "--output-dir", str(output_dir),
        ]  # fmt: skip
        code = example_module(TRAIN).main([*argv, *tiny])
        assert code == 0, command
        assert (output_dir / f"{model}.keras").is_file(), command
