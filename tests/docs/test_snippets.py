"""Runs the Python code blocks of the documentation pages.

The blocks of one page run in order in one namespace, as a reader would run
them, in a fresh Python process (so that nothing imported by other tests
hides a missing import) on the backend chosen by `KERAS_BACKEND`. A comment
line `# ...` straight after a line that calls `print(` is the output that
call must print, so the pages cannot show output the code does not produce.

Pages whose code needs a particular backend, several devices or a trained
model (`distributed.md`, `example.md`) are not run here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [
    "index.md",
    "getting-started.md",
    "concepts.md",
    "methods.md",
    "keras-classifier.md",
]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(page: str) -> list[str]:
    return BLOCK.findall((DOCS / page).read_text())


def expected_output(code: str) -> list[str]:
    expected = []
    lines = code.splitlines()
    for index, line in enumerate(lines):
        if "print(" not in line or line.lstrip().startswith("#"):
            continue
        following = index + 1
        while following < len(lines) and lines[following].startswith("# "):
            expected.append(lines[following][2:])
            following += 1
    return expected


def run_page(page: str) -> list[list[str]]:
    """Runs the blocks of `page` here; returns the lines each one printed."""
    import keras

    keras.utils.set_random_seed(0)
    namespace: dict = {"__name__": "__docs__"}
    printed = []
    for number, code in enumerate(python_blocks(page), start=1):
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            exec(
                compile(code, f"docs/{page}, python block {number}", "exec"), namespace
            )
        printed.append(stdout.getvalue().splitlines())
    return printed


def test_pages_have_code():
    for page in PAGES:
        assert python_blocks(page), f"docs/{page} has no ```python blocks"


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs_and_prints_what_it_shows(page: str) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.run(
        [sys.executable, __file__, page],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, (
        f"docs/{page}: the code failed:\n{process.stderr[-4000:]}"
    )
    printed = json.loads(process.stdout.splitlines()[-1])
    for number, (code, lines) in enumerate(zip(python_blocks(page), printed), start=1):
        assert lines == expected_output(code), (
            f"docs/{page}, python block {number}: printed {lines}, "
            f"the page shows {expected_output(code)}"
        )


if __name__ == "__main__":
    print(json.dumps(run_page(sys.argv[1])))
