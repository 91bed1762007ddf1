"""Math of matrix capsules (Hinton, Sabour & Frosst, 2018) besides routing.

A matrix capsule is a pose matrix, kept flattened as its last axis
(`pose_size = n * n` entries, row by row), and an activation in `(0, 1)`.
The EM routing between matrix capsules is in `keras_capsules.ops.routing`.

Reference:
    - [Hinton, Sabour & Frosst, 2018. Matrix capsules with EM routing](
      https://openreview.net/forum?id=HJWLfGWRb)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from keras import ops

from keras_capsules._validation import check_same_shape


def pose_side(pose_size: Any) -> int | None:
    """`n` if `pose_size` is `n * n` for a positive integer `n`, else `None`."""
    if not isinstance(pose_size, (int, np.integer)) or isinstance(pose_size, bool):
        return None
    side = math.isqrt(int(pose_size)) if pose_size > 0 else 0
    return side if side > 0 and side * side == pose_size else None


def coordinate_addition(votes: Any) -> Any:
    """Adds each capsule's scaled position to its votes (coordinate addition).

    Hinton et al. (2018) share the class capsules' transformation matrices
    across positions and add "the scaled coordinate (row, column) of the
    center of the receptive field of each capsule to the first two elements
    of the right-hand column of its vote matrix". Row `y` of an `H x W` grid
    is scaled to `(y + 0.5) / H` and added to entry `(0, n - 1)` of every
    vote; column `x`, as `(x + 0.5) / W`, to entry `(1, n - 1)`. The scaled
    coordinates are the grid cells' centres in `(0, 1)`, as in the IBM code
    (which adds the column to the first entry and the row to the second; the
    paper's order, row first, is kept here).

    Args:
        votes: Votes of shape `(batch, height, width, ..., pose_size)`, with
            `height`, `width` known and `pose_size = n * n` for `n >= 2`.

    Returns:
        The votes plus the coordinates, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import coordinate_addition
    >>> votes = coordinate_addition(np.zeros((1, 2, 2, 16), "float32"))
    >>> keras.ops.convert_to_numpy(votes)[0, 1, 0, [3, 7]].tolist()
    [0.75, 0.25]
    """
    votes = ops.convert_to_tensor(votes)
    shape = tuple(votes.shape)
    side = pose_side(shape[-1]) if len(shape) >= 4 else None
    if side is None or side < 2 or shape[1] is None or shape[2] is None:
        raise ValueError(
            "`coordinate_addition` expects votes of shape (batch, height, "
            "width, ..., pose_size) with known height and width and a pose "
            "matrix of at least 2x2 (pose_size 4, 9, 16, ...). "
            f"Received: votes.shape={shape}"
        )
    height, width = shape[1], shape[2]
    offsets = np.zeros((height, width, shape[-1]), dtype="float64")
    offsets[:, :, side - 1] = ((np.arange(height) + 0.5) / height)[:, None]
    offsets[:, :, 2 * side - 1] = ((np.arange(width) + 0.5) / width)[None, :]
    offsets = offsets.reshape((height, width) + (1,) * (len(shape) - 4) + (-1,))
    return votes + ops.convert_to_tensor(offsets, dtype=votes.dtype)


def spread_loss(y_true: Any, y_pred: Any, margin: float = 0.2) -> Any:
    """Spread loss, eq. 3 of Hinton et al. (2018), one value per example.

    `L = sum_{i != t} max(0, m - (a_t - a_i))^2`, for the activation `a_t`
    of the target class and those `a_i` of the others: every wrong class
    closer than the margin `m` to the target is penalised by the squared
    distance to the margin.

    Args:
        y_true: One-hot targets, shape `(batch, num_classes)`.
        y_pred: Class activations `a`, shape `(batch, num_classes)`.
        margin: The margin `m`. Defaults to `0.2`, the paper's start (it
            grows to 0.9 during training).

    Returns:
        The loss of each example, shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import spread_loss
    >>> y_true = np.array([[0.0, 1.0, 0.0]], dtype="float32")
    >>> y_pred = np.array([[0.5, 0.6, 0.1]], dtype="float32")
    >>> loss = keras.ops.convert_to_numpy(spread_loss(y_true, y_pred, margin=0.2))
    >>> [round(float(a), 4) for a in loss]
    [0.01]
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    check_same_shape("spread_loss", y_true=y_true, y_pred=y_pred)
    target = ops.sum(y_true * y_pred, axis=-1, keepdims=True)
    shortfall = ops.relu(margin - (target - y_pred))
    return ops.sum((1.0 - y_true) * ops.square(shortfall), axis=-1)
