"""Renders the measured numbers into the Markdown files, between markers.

Every number of a page or of the README that comes from a run is written by
this script from a committed metrics file (`docs/assets/*/metrics.json`,
`docs/assets/benchmarks/**/*.json`, `docs/assets/parity/parity.json`, a
preset's `metadata.json`) or, for a default, from the code (a model's
`TrainingRecipe`). A Markdown file asks for one with a pair of comments:

    <!-- numbers:value example test_accuracy {p:.2f} % -->99.37 %<!-- /numbers -->

    <!-- numbers:parity -->
    (the table, rewritten by this script)
    <!-- /numbers -->

The text between the two comments is this script's output, committed, so
that the files read on the repository page show the numbers; the test
`tests/docs/test_numbers.py` renders every file again and fails when the
text differs, and the MkDocs hook does the same at build time.

The first word after `numbers:` says what is rendered:

- `value SOURCE PATH FORMAT`: one number of a metrics file. SOURCE is a
  name of `SOURCES`, `preset:NAME`, or a path from the repository root;
  PATH walks the JSON (`history.val_accuracy.-1`, `iterations.2.accuracy`,
  `rows[bench=capsnet,phase=train,contender=keras,process=jax].images_per_s`,
  `epoch_seconds[44:80]` (a slice),
  a list reduced by a last `.min`, `.max`, `.mean`, `.median`, `.sum`,
  `.len`, or `.first_min` / `.first_max`, the epoch, from 1, of its first
  smallest / largest value), and `PATH / PATH` divides two of them. FORMAT is a `str.format`
  template of `v` (the value), `p` (100 v), `k` (v / 1000), `m` (v / 60)
  and `h` (v / 3600).
- `recipe MODEL FIELD FORMAT`: a field of `keras_capsules.models.MODEL.recipe`.
- any other word: a block of `BLOCKS` (a table and its notes), on the lines
  between the comments.

    python scripts/docs/render_numbers.py           # rewrites what changed
    python scripts/docs/render_numbers.py --check   # lists it, exit 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import method_table_results  # noqa: E402
import renderers  # noqa: E402
from renderers import MARKER, RenderError  # noqa: E402

SOURCES = {
    "example": "docs/assets/example/metrics.json",
    "efficient_capsnet": "docs/assets/efficient_capsnet/metrics.json",
    "matrix_capsnet": "docs/assets/matrix_capsnet/metrics.json",
    "multi_mnist": "docs/assets/multi_mnist/metrics.json",
    "affine_robustness": "docs/assets/affine_robustness/metrics.json",
    "coupling": "docs/assets/concepts/coupling.json",
    "benchmarks": "docs/assets/benchmarks/results.json",
    "capsule_methods": "docs/assets/benchmarks/capsule-methods/results.json",
    "breakdown": "docs/assets/benchmarks/efficient-capsnet-breakdown/results.json",
    "parity": "docs/assets/parity/parity.json",
    "method_table": method_table_results.METRICS,
}
INLINE = ("value", "recipe")
REDUCERS: dict[str, Callable[[list], Any]] = {
    "min": min,
    "max": max,
    "mean": statistics.fmean,
    "median": statistics.median,
    "sum": sum,
    "len": len,
    # The 1-based position (an epoch) of the first smallest / largest value.
    "first_min": lambda values: values.index(min(values)) + 1,
    "first_max": lambda values: values.index(max(values)) + 1,
}
STEP = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


class Context:
    """Where a file is: its blocks' links are relative to its folder."""

    def __init__(self, path: Path, repo: Path = REPO):
        self.repo = repo
        self.docs_dir = repo / "docs"
        self.folder = path.resolve().parent

    def link(self, path: str) -> str:
        """`path`, from the repository root, relative to the file's folder."""
        return Path(os.path.relpath(self.repo / path, self.folder)).as_posix()


def _docs_block(render: Callable[[Path], str]) -> Callable[[Context], str]:
    return lambda context: render(context.docs_dir)


BLOCKS: dict[str, Callable[[Context], str]] = {
    **{name: _docs_block(render) for name, render in renderers.RENDERERS.items()},
    "method-table": lambda context: method_table_results.render(
        context.repo, context.link
    ),
}


def _source(name: str, repo: Path) -> Any:
    if name.startswith("preset:"):
        relative = (
            f"keras_capsules/models/preset_files/{name[len('preset:') :]}/metadata.json"
        )
    else:
        relative = SOURCES.get(name, name)
    path = repo / relative
    if not path.exists():
        raise RenderError(f"no metrics file {relative} (source `{name}`)")
    return json.loads(path.read_text())


def lookup(data: Any, path: str) -> Any:
    """The value at `path` in `data` (the module docstring's PATH)."""
    value = data
    for key, selector in STEP.findall(path):
        if selector:
            if re.fullmatch(r"-?\d+", selector):
                value = value[int(selector)]
                continue
            if re.fullmatch(r"-?\d*:-?\d*", selector):  # epochs a+1 to b: [a:b]
                start, stop = (int(n) if n else None for n in selector.split(":"))
                value = value[start:stop]
                continue
            wanted = dict(part.split("=", 1) for part in selector.split(","))
            matches = [
                row
                for row in value
                if all(str(row.get(k)) == v for k, v in wanted.items())
            ]
            if not matches:
                raise RenderError(f"no row [{selector}] in `{path}`")
            value = matches[0]
        elif isinstance(value, list) and key in REDUCERS:
            value = REDUCERS[key](value)
        elif isinstance(value, list):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            raise RenderError(f"`{path}`: no `{key}`")
    return value


def format_value(value: Any, template: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return template.format(
            v=value, p=100 * value, k=value / 1000, m=value / 60, h=value / 3600
        )
    return template.format(v=value)


def render_inline(spec: str, repo: Path) -> str:
    kind, _, rest = spec.partition(" ")
    words = rest.split(" ")
    at = next((i for i, word in enumerate(words) if "{" in word), len(words))
    arguments, template = words[:at], " ".join(words[at:])
    if not template:
        raise RenderError(f"`{spec}`: no format (a `{{v}}` template)")
    if kind == "recipe":
        import keras_capsules.models

        model, field = arguments
        return format_value(
            getattr(getattr(keras_capsules.models, model).recipe, field), template
        )
    data = _source(arguments[0], repo)
    expression = " ".join(arguments[1:]).split(" / ")
    value = lookup(data, expression[0])
    if len(expression) == 2:
        value = value / lookup(data, expression[1])
    return format_value(value, template)


def render_text(markdown: str, path: Path, repo: Path = REPO) -> str:
    """`markdown` (the file at `path`) with every marker's text rendered."""
    context = Context(path, repo)

    def replace(match: re.Match[str]) -> str:
        spec = match.group(1).strip()
        kind = spec.split(" ", 1)[0]
        try:
            if kind in INLINE:
                text = render_inline(spec, repo)
                return f"<!-- numbers:{spec} -->{text}<!-- /numbers -->"
            if kind not in BLOCKS:
                raise RenderError(
                    f"unknown block `{kind}`; expected one of {sorted(BLOCKS)}"
                )
            text = BLOCKS[kind](context).strip("\n")
        except RenderError as error:
            raise RenderError(f"{path}: {error}") from error
        body = f"\n{text}\n" if text else "\n"
        return f"<!-- numbers:{spec} -->{body}<!-- /numbers -->"

    return MARKER.sub(replace, markdown)


def markdown_files(repo: Path = REPO) -> list[Path]:
    """The files with numbers, the runs' notes first (pages fold them in)."""
    first = sorted((repo / "docs" / "assets").rglob("*.md"))
    rest = [
        repo / "README.md",
        repo / "CHANGELOG.md",
        repo / "benchmarks" / "README.md",
        *sorted((repo / "docs").rglob("*.md")),
    ]
    files = list(dict.fromkeys([*first, *rest]))
    return [path for path in files if path.exists()]


def stale_files(repo: Path = REPO, write: bool = False) -> list[Path]:
    """The files whose rendered text differs from the committed one."""
    stale = []
    for path in markdown_files(repo):
        text = path.read_text()
        if "<!-- numbers:" not in text:
            continue
        rendered = render_text(text, path, repo)
        if rendered != text:
            stale.append(path)
            if write:
                path.write_text(rendered)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is stale"
    )
    args = parser.parse_args(argv)
    stale = stale_files(write=not args.check)
    for path in stale:
        action = "stale" if args.check else "rendered"
        print(f"{action}: {path.relative_to(REPO)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
