"""Argument checks shared by ops, layers, losses and models.

Every check lives here once, so every error reads the same: it names the
argument and echoes what it received. NumPy integers count as integers
everywhere (sizes often come from array shapes).
"""

from __future__ import annotations

import numbers
from typing import Any

import keras


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


def check_padding(padding: Any) -> str:
    """`"valid"` or `"same"`, in any case, as lower case; else raises."""
    return check_choice(
        "padding", padding.lower() if isinstance(padding, str) else padding,
        ("valid", "same"),
    )  # fmt: skip


def check_data_format(data_format: Any) -> str:
    """A data format, `None` meaning `keras.config.image_data_format()`."""
    if data_format is None:
        data_format = keras.config.image_data_format()
    return check_choice("data_format", data_format, ("channels_last", "channels_first"))


def check_positive_number(name: str, value: Any) -> float:
    """Returns `value` as a float if it is a finite number > 0, else raises."""
    if not _is_real(value) or not 0 < value < float("inf"):
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a positive "
            f"number. Received: {name}={value!r}"
        )
    return float(value)


def check_non_negative_number(name: str, value: Any) -> float:
    """Returns `value` as a float if it is a finite number >= 0, else raises."""
    if not _is_real(value) or not 0 <= value < float("inf"):
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a non-negative "
            f"number. Received: {name}={value!r}"
        )
    return float(value)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive_ints(name: str, values: Any, length: int | None = None) -> tuple:
    """Returns `values` as a tuple of ints if all are positive integers.

    With `length`, the sequence must have exactly that many entries.
    """
    try:
        items = tuple(values)
    except TypeError:
        items = (None,)
    if (length is not None and len(items) != length) or not all(
        _is_int(v) and v >= 1 for v in items
    ):
        count = "a sequence" if length is None else f"{length}"
        raise ValueError(
            f"Received an invalid value for `{name}`, expected {count} of "
            f"positive integers. Received: {name}={values!r}"
        )
    return tuple(int(v) for v in items)


def shapes_compatible(a: Any, b: Any) -> bool:
    """Whether two shapes can be equal once their unknown (`None`) sizes are."""
    a, b = tuple(a), tuple(b)
    return len(a) == len(b) and all(
        x is None or y is None or x == y for x, y in zip(a, b)
    )


def check_same_shape(function: str, **tensors: Any) -> None:
    """Raises unless every tensor has the same shape, up to unknown sizes.

    Elementwise losses call this: a broadcast would silently compute the
    wrong loss, and a mismatch would fail inside the backend.
    """
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if not all(shapes_compatible(first, shape) for shape in shapes.values()):
        names = " and ".join(f"`{name}`" for name in shapes)
        received = ", ".join(f"{name}.shape={shape}" for name, shape in shapes.items())
        raise ValueError(
            f"`{function}` expects {names} of the same shape. Received: {received}"
        )
