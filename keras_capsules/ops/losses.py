"""The losses of capsule networks, one value per example."""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_capsules._validation import check_same_shape


def margin_loss(
    y_true: Any,
    y_pred: Any,
    m_plus: float = 0.9,
    m_minus: float = 0.1,
    down_weight: float = 0.5,
) -> Any:
    """Margin loss of eq. 4 of Sabour et al. (2017), summed over classes.

    `L_k = T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2`

    Args:
        y_true: One-hot targets `T`, shape `(batch, num_classes)`.
        y_pred: Capsule lengths `|v|`, shape `(batch, num_classes)`.
        m_plus: Length a present class's capsule should exceed. Defaults to
            `0.9`.
        m_minus: Length an absent class's capsule should stay below.
            Defaults to `0.1`.
        down_weight: The factor `lambda` on the absent-class term. Defaults
            to `0.5`.

    Returns:
        The loss of each example, shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import margin_loss
    >>> y_true = np.array([[0.0, 1.0]], dtype="float32")
    >>> y_pred = np.array([[0.3, 0.8]], dtype="float32")
    >>> loss = keras.ops.convert_to_numpy(margin_loss(y_true, y_pred))
    >>> [round(float(a), 4) for a in loss]
    [0.03]
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    check_same_shape("margin_loss", y_true=y_true, y_pred=y_pred)
    present = y_true * ops.square(ops.relu(m_plus - y_pred))
    absent = down_weight * (1.0 - y_true) * ops.square(ops.relu(y_pred - m_minus))
    return ops.sum(present + absent, axis=-1)


def reconstruction_loss(y_true: Any, y_pred: Any) -> Any:
    """Sum of squared errors of each example, the CapsNet decoder's loss.

    Sabour et al. (2017) train the decoder by minimising the sum of squared
    differences between the pixels of the input image and of its
    reconstruction. The sum (not the mean) over every non-batch axis keeps
    the paper's scale, which its weight of 0.0005 assumes.

    Args:
        y_true: Target images, shape `(batch, ...)`.
        y_pred: Reconstructions, of the shape of `y_true`.

    Returns:
        The loss of each example, shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import reconstruction_loss
    >>> y_true = np.array([[[1.0, 0.0], [0.0, 1.0]]], dtype="float32")
    >>> y_pred = np.array([[[0.5, 0.0], [0.0, 0.0]]], dtype="float32")
    >>> keras.ops.convert_to_numpy(reconstruction_loss(y_true, y_pred)).tolist()
    [1.25]
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    check_same_shape("reconstruction_loss", y_true=y_true, y_pred=y_pred)
    squared_error = ops.square(y_pred - y_true)
    pixel_axes = tuple(range(1, len(squared_error.shape)))
    if not pixel_axes:
        return squared_error
    return ops.sum(squared_error, axis=pixel_axes)
