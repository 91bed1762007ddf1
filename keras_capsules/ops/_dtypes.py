"""Dtype rules shared by the capsule ops."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

LOW_PRECISION_DTYPES = ("float16", "bfloat16")


def dtype_name(x: Any) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def at_least_float32(x: Any) -> Any:
    """`x` in float32 if it is float16 or bfloat16, else unchanged.

    Squared norms of float16 capsules overflow at |s| ~ 256 and small
    epsilons underflow to 0, so the sensitive reductions run in float32;
    float32 and float64 keep their own precision.
    """
    if dtype_name(x) in LOW_PRECISION_DTYPES:
        return ops.cast(x, "float32")
    return x


def statistics_dtype(dtype: str) -> str:
    """The dtype of routing logits and softmaxes for capsules of `dtype`.

    float32 for float16, bfloat16 and float32 (as Keras's normalization
    layers do), float64 for float64.
    """
    return keras.backend.result_type(dtype, "float32")
