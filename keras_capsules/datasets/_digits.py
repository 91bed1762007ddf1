"""Argument checks shared by the dataset builders, so every error reads the same."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from keras_capsules._validation import _is_int, check_positive_int

__all__ = [
    "as_digits",
    "as_labels",
    "check_non_negative_float",
    "check_non_negative_int",
    "check_positive_int",
    "check_seed",
]


def as_digits(images: Any) -> np.ndarray:
    """Returns `images` as float32 `(num_images, height, width)` in [0, 1].

    Integer images (MNIST's uint8) are scaled by 1/255; float images must
    already lie in [0, 1].
    """
    array = np.asarray(images)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(
            "Expected `images` of shape (num_images, height, width) or "
            "(num_images, height, width, 1). "
            f"Received: images.shape={np.shape(images)}"
        )
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                "Expected integer `images` in [0, 255]. Received: values in "
                f"[{array.min()}, {array.max()}] with images.dtype={array.dtype}"
            )
        # float32 division keeps uint8 input bit-identical to `x / 255` in
        # either float32 or float64, so both spellings give the same data.
        return array.astype(np.float32) / np.float32(255)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            "Expected `images` of an integer or float dtype. "
            f"Received: images.dtype={array.dtype}"
        )
    # Written so that NaN fails the check too.
    if array.size and not np.all((array >= 0) & (array <= 1)):
        raise ValueError(
            "Expected float `images` in [0, 1] (divide uint8 pixels by 255). "
            f"Received: values in [{array.min()}, {array.max()}]"
        )
    return array.astype(np.float32)


def as_labels(labels: Any, num_images: int) -> np.ndarray:
    """Returns `labels` as int64 `(num_images,)`, one class index per image."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != num_images:
        raise ValueError(
            "Expected `labels` of shape (num_images,), one class index per "
            f"image, with num_images={num_images}. "
            f"Received: labels.shape={np.shape(labels)}"
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            "Expected integer class indices in `labels` (not one-hot). "
            f"Received: labels.dtype={array.dtype}"
        )
    return array.astype(np.int64)


def check_non_negative_int(name: str, value: Any) -> int:
    """Returns `value` as an int if it is an integer >= 0, else raises."""
    if not _is_int(value) or value < 0:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a non-negative "
            f"integer. Received: {name}={value!r}"
        )
    return int(value)


def check_non_negative_float(name: str, value: Any) -> float:
    """Returns `value` as a float if it is a finite real >= 0, else raises."""
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a finite "
            f"number >= 0. Received: {name}={value!r}"
        )
    return float(value)


def check_seed(seed: Any) -> int | None:
    """Returns `seed` if `numpy.random.default_rng` takes it, else raises."""
    if seed is None or (_is_int(seed) and seed >= 0):
        return None if seed is None else int(seed)
    raise ValueError(
        "Received an invalid value for `seed`, expected a non-negative "
        f"integer or None. Received: seed={seed!r}"
    )
