"""Argument checks shared by the layers, so every error reads the same."""

from __future__ import annotations

import numbers
from typing import Any


def _is_int(value: Any) -> bool:
    # Python and NumPy integers (sizes often come from array shapes or
    # `np.prod`), but not booleans.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any) -> int:
    """Returns `value` as an int if it is a positive integer, else raises."""
    if not _is_int(value) or value < 1:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a positive "
            f"integer. Received: {name}={value!r}"
        )
    return int(value)


def normalize_pair(name: str, value: Any) -> tuple[int, int]:
    """Turns an int or a pair of ints into a pair of positive ints."""
    pair: Any = (value, value) if _is_int(value) else value
    try:
        pair = tuple(pair)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(_is_int(v) and v >= 1 for v in pair):
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a positive "
            f"integer or a tuple of 2 positive integers. Received: {name}={value!r}"
        )
    return (int(pair[0]), int(pair[1]))


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Returns `value` if it is one of the strings `choices`, else raises."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected one of "
            f"{choices}. Received: {name}={value!r}"
        )
    return value
