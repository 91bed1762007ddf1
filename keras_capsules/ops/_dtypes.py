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
    layers do), float64 for float64. Not `keras.backend.result_type`, which
    gives float32 for float64 outside TensorFlow (Keras caps it at 32 bits
    to follow JAX's default).
    """
    return "float64" if dtype == "float64" else "float32"


def matmul(x1: Any, x2: Any) -> Any:
    """`keras.ops.matmul` that keeps float64 in float64 on every backend.

    Outside TensorFlow `keras.ops.matmul` casts float64 operands to the
    32-bit `result_type` before multiplying; `einsum` keeps them. Other
    dtypes take `ops.matmul` unchanged.
    """
    if dtype_name(x1) == "float64" or dtype_name(x2) == "float64":
        return ops.einsum("...ij,...jk->...ik", x1, x2)
    return ops.matmul(x1, x2)


def clamp_min(x: Any, floor: float) -> Any:
    """`maximum(x, floor)` in the dtype of `x`, with the same gradient.

    `keras.ops.maximum(x, floor)` takes the 32-bit `result_type` outside
    TensorFlow, so float64 `x` would come back as float32; `clip` keeps the
    dtype of `x`.
    """
    return ops.clip(x, floor, float("inf"))
