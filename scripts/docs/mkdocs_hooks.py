"""MkDocs hook: the pages' numbers, checked against their metrics files.

The numbers and tables of the pages are written into the Markdown files by
`scripts/docs/render_numbers.py`, between `<!-- numbers:... -->` and
`<!-- /numbers -->`. At build time this hook renders every page again with
the same code: a page whose committed text differs from what its metrics
files give is a warning (so `mkdocs build --strict` fails, naming the
command that fixes it), and the site shows the fresh rendering, without the
marker comments. An unknown marker fails the build.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

# MkDocs loads this file by path; its sibling modules are imported from here.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from render_numbers import render_text  # noqa: E402
from renderers import RenderError, strip_markers  # noqa: E402

log = logging.getLogger("mkdocs.hooks.keras_capsules")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"])
    path = docs_dir / page.file.src_uri
    repo = docs_dir.parent
    try:
        rendered = render_text(markdown, path, repo)
    except RenderError as error:
        raise PluginError(str(error)) from error
    if rendered != markdown:
        log.warning(
            "%s: its numbers differ from its metrics files; run "
            "`python scripts/docs/render_numbers.py`",
            page.file.src_uri,
        )
    return strip_markers(rendered)
