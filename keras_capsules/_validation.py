"""Argument checks shared by the layers, so every error reads the same."""

from __future__ import annotations

from typing import Any


def check_positive_int(name: str, value: Any) -> int:
    """Returns `value` if it is a positive integer, else raises a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a positive "
            f"integer. Received: {name}={value!r}"
        )
    return value


def normalize_pair(name: str, value: Any) -> tuple[int, int]:
    """Turns an int or a pair of ints into a pair of positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair
    ):
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a positive "
            f"integer or a tuple of 2 positive integers. Received: {name}={value!r}"
        )
    return (int(pair[0]), int(pair[1]))
