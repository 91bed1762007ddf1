"""A Griffe extension that reads Keras-style docstrings as Google style.

Keras (and this package, see STYLE.md) writes the doctest of a docstring
unindented under its header:

    Example:

    >>> layer = keras_capsules.layers.RoutingCapsule(10, 16)

whereas the Google style that mkdocstrings parses wants the body of a
section indented under `Examples:`. This extension rewrites such a section
before the docstring is parsed, for the documentation only; the package's
docstrings (and their doctests) stay as they are. Everything up to the next
section header (`Reference:`, `Returns:`, ...) or the end belongs to the
example. It also lists the items of `Call arguments:` (which Griffe shows
as a plain admonition) and, in class docstrings, titles `Returns:` (the
output of `call`) "Call returns".

Used from mkdocs.yml:

    plugins:
      - mkdocstrings:
          handlers:
            python:
              options:
                extensions:
                  - scripts/docs/griffe_keras_docstrings.py
"""

from __future__ import annotations

import re
from typing import Any

import griffe

EXAMPLE_HEADER = re.compile(r"^Examples?:\s*$")
# A section header of the Keras / Google style: "Args:", "Call arguments:", ...
SECTION_HEADER = re.compile(r"^[A-Z][A-Za-z ]{0,30}:\s*$")


def indent_examples(text: str) -> str:
    """Indents the unindented body of `Example:` sections under `Examples:`."""
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not EXAMPLE_HEADER.match(line):
            out.append(line)
            index += 1
            continue
        body_start = index + 1
        while body_start < len(lines) and not lines[body_start].strip():
            body_start += 1
        if body_start < len(lines) and lines[body_start].startswith((" ", "\t")):
            # Already indented: Google style as it is.
            out.append(line)
            index += 1
            continue
        end = body_start
        in_fence = False
        while end < len(lines):
            current = lines[end]
            if current.lstrip().startswith("```"):
                in_fence = not in_fence
            elif not in_fence and SECTION_HEADER.match(current):
                break
            end += 1
        body = lines[body_start:end]
        while body and not body[-1].strip():
            body.pop()
        out.append("Examples:")
        out.extend("    " + b if b.strip() else "" for b in body)
        if end < len(lines):
            out.append("")
        index = end
    return "\n".join(out)


CALL_ARGUMENT = re.compile(r"^    (\*{0,2}\w+): ?(.*)$")


def list_call_arguments(text: str) -> str:
    """Turns the `name: description` items of `Call arguments:` into a list.

    Griffe renders a section it does not know as an admonition of plain
    text, which would run the items together.
    """
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        out.append(lines[index])
        if lines[index].strip() != "Call arguments:":
            index += 1
            continue
        index += 1
        while index < len(lines) and (
            lines[index].startswith("    ") or not lines[index].strip()
        ):
            item = CALL_ARGUMENT.match(lines[index])
            if item:
                out.append(f"    - `{item.group(1)}`: {item.group(2)}")
            elif lines[index].strip():
                out.append("      " + lines[index].strip())
            else:
                out.append("")
            index += 1
    return "\n".join(out)


def rename_class_returns(text: str) -> str:
    """In a class docstring, `Returns:` describes `call`: say so."""
    return re.sub(r"^Returns:\s*$", "Call returns:", text, flags=re.MULTILINE)


class KerasDocstrings(griffe.Extension):
    """Rewrites the Keras-style sections of every docstring for mkdocstrings."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        text = docstring.value
        if "Example" in text:
            text = indent_examples(text)
        if "Call arguments:" in text:
            text = list_call_arguments(text)
        if obj.is_class:
            text = rename_class_returns(text)
        docstring.value = text
