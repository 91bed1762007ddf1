"""Capsule vector math: squashing, lengths, predictions, masking.

Reference:
    - [Sabour, Frosst & Hinton, 2017. Dynamic Routing Between Capsules](
      https://arxiv.org/abs/1710.09829)
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_capsules._validation import check_positive_number
from keras_capsules.ops._dtypes import at_least_float32, clamp_min, dtype_name


def _epsilon(epsilon: float | None) -> float:
    if epsilon is None:
        return keras.config.epsilon()
    return check_positive_number("epsilon", epsilon)


def squash(x: Any, axis: int = -1, epsilon: float | None = None) -> Any:
    """Squashes vectors to a length in [0, 1) while keeping their direction.

    Eq. 1 of Sabour et al. (2017):

    $$v = \\frac{\\lVert s \\rVert^2}{1 + \\lVert s \\rVert^2}
    \\frac{s}{\\lVert s \\rVert}$$

    The division by the norm is written as a reciprocal square root of the
    squared norm clamped from below at `epsilon**2`, so the result is exact
    for every vector longer than `epsilon`, is 0 for the zero vector, and has
    a finite gradient there (a plain `sqrt` would give NaN). Float16 and
    bfloat16 inputs are squashed in float32 and cast back.

    Args:
        x: Tensor of capsule vectors.
        axis: The axis that holds the capsule dimensions. Defaults to `-1`.
        epsilon: Lengths below this are treated as this when dividing.
            Defaults to `keras.config.epsilon()`.

    Returns:
        A tensor of the shape and dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import squash
    >>> v = squash(np.array([[3.0, 4.0]], dtype="float32"))
    >>> [round(float(a), 4) for a in keras.ops.convert_to_numpy(v)[0]]
    [0.5769, 0.7692]
    """
    epsilon = _epsilon(epsilon)
    x = ops.convert_to_tensor(x)
    original_dtype = dtype_name(x)
    s = at_least_float32(x)
    squared_norm = ops.sum(ops.square(s), axis=axis, keepdims=True)
    scale = (squared_norm / (1.0 + squared_norm)) * ops.rsqrt(
        clamp_min(squared_norm, epsilon**2)
    )
    return ops.cast(s * scale, original_dtype)


def efficient_squash(x: Any, axis: int = -1, epsilon: float | None = None) -> Any:
    """The squash of Efficient-CapsNet, eq. 5 of Mazzia et al. (2021).

    $$v = \\left(1 - \\frac{1}{e^{\\lVert s \\rVert}}\\right)
    \\frac{s}{\\lVert s \\rVert}$$

    Unlike `squash`, it is sensitive to small lengths too: its slope at 0 is
    1, not 0. Written as `-expm1(-|s|) * s / |s|` with the norm clamped from
    below at `epsilon`, so the result is exact for every vector longer than
    `epsilon`, 0 for the zero vector, with a finite gradient there. Float16
    and bfloat16 inputs are squashed in float32 and cast back.

    Args:
        x: Tensor of capsule vectors.
        axis: The axis that holds the capsule dimensions. Defaults to `-1`.
        epsilon: Lengths below this are treated as this when dividing.
            Defaults to `keras.config.epsilon()`.

    Returns:
        A tensor of the shape and dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import efficient_squash
    >>> v = efficient_squash(np.array([[3.0, 4.0]], dtype="float32"))
    >>> [round(float(a), 4) for a in keras.ops.convert_to_numpy(v)[0]]
    [0.596, 0.7946]

    Reference:
        - [Mazzia, Salvetti & Chiaberge, 2021. Efficient-CapsNet: capsule
          network with self-attention routing](https://arxiv.org/abs/2101.12491)
    """
    epsilon = _epsilon(epsilon)
    x = ops.convert_to_tensor(x)
    original_dtype = dtype_name(x)
    s = at_least_float32(x)
    norm = ops.sqrt(
        clamp_min(ops.sum(ops.square(s), axis=axis, keepdims=True), epsilon**2)
    )
    return ops.cast(-ops.expm1(-norm) * s / norm, original_dtype)


def capsule_length(x: Any, axis: int = -1, epsilon: float | None = None) -> Any:
    """Euclidean length of capsule vectors, with a finite gradient at zero.

    Computed as `|s|^2 / sqrt(max(|s|^2, epsilon^2))`: exactly the norm for
    vectors longer than `epsilon`, exactly 0 for the zero vector, and
    differentiable everywhere. Float16 and bfloat16 inputs are measured in
    float32 and the result cast back.

    Args:
        x: Tensor of capsule vectors.
        axis: The axis that holds the capsule dimensions. Defaults to `-1`.
        epsilon: Lengths below this use the smooth branch. Defaults to
            `keras.config.epsilon()`.

    Returns:
        A tensor with `axis` removed, of the dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import capsule_length
    >>> x = np.array([[[3.0, 4.0], [0.0, 0.0]]], dtype="float32")
    >>> keras.ops.convert_to_numpy(capsule_length(x)).tolist()
    [[5.0, 0.0]]
    """
    epsilon = _epsilon(epsilon)
    x = ops.convert_to_tensor(x)
    original_dtype = dtype_name(x)
    s = at_least_float32(x)
    squared_norm = ops.sum(ops.square(s), axis=axis)
    length = squared_norm * ops.rsqrt(clamp_min(squared_norm, epsilon**2))
    return ops.cast(length, original_dtype)


def capsule_predictions(inputs: Any, kernel: Any) -> Any:
    """Prediction vectors `u_hat[j|i] = W[i, j] u[i]` of every input capsule.

    Eq. 2 of the paper. `dynamic_routing` routes without forming these
    (they are the largest tensor of a CapsNet); this is for reading them.

    Args:
        inputs: Input capsules, shape `(batch, input_num_capsules,
            input_capsule_dim)`.
        kernel: Transformation matrices, shape `(input_num_capsules,
            num_capsules, input_capsule_dim, capsule_dim)`.

    Returns:
        The prediction vectors, shape `(batch, num_capsules,
        input_num_capsules, capsule_dim)`. Output capsules come before input
        capsules so that both routing contractions are plain batched
        matrix products over `(batch, num_capsules)` with no transpose.
    """
    return ops.einsum("bid,ijde->bjie", inputs, kernel)


def mask_capsules(capsules: Any, labels: Any | None = None) -> Any:
    """Zeros every capsule but one per example and flattens the result.

    Args:
        capsules: Capsules, shape `(batch, num_capsules, capsule_dim)`.
        labels: One-hot labels, shape `(batch, num_capsules)`, choosing the
            capsule to keep. If `None`, the longest capsule is kept.

    Returns:
        Shape `(batch, num_capsules * capsule_dim)`.
    """
    capsules = ops.convert_to_tensor(capsules)
    num_capsules = capsules.shape[-2]
    if labels is None:
        labels = ops.one_hot(
            ops.argmax(capsule_length(capsules), axis=-1),
            num_capsules,
            dtype=capsules.dtype,
        )
    labels = ops.cast(labels, capsules.dtype)
    masked = ops.multiply(capsules, ops.expand_dims(labels, axis=-1))
    num_capsules, capsule_dim = masked.shape[-2], masked.shape[-1]
    if num_capsules is None or capsule_dim is None:
        return ops.reshape(masked, (ops.shape(masked)[0], -1))
    return ops.reshape(masked, (-1, num_capsules * capsule_dim))
