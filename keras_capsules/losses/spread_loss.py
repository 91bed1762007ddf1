from __future__ import annotations

from typing import Any

import keras

from keras_capsules import ops as capsule_ops
from keras_capsules._validation import check_non_negative_number, check_same_shape


@keras.saving.register_keras_serializable(package="keras_capsules")
class SpreadLoss(keras.losses.Loss):
    """The spread loss of eq. 3 of Hinton, Sabour & Frosst (2018).

    For the activation `a_t` of the target class and those `a_i` of the
    other classes:

    `L = sum_{i != t} max(0, m - (a_t - a_i))^2`

    so a wrong class is penalised by its squared distance to the margin `m`
    when it comes closer than `m` to the target. The batch is reduced by
    `reduction` (the mean over examples by default).

    The paper starts with `m = 0.2` and grows it to `0.9` during training,
    which avoids dead capsules in the early layers: add
    `keras_capsules.callbacks.SpreadMarginSchedule` to `fit` for that. The
    margin is the attribute `margin`, read every time the loss is computed
    (the callback rebuilds the compiled train and test functions when it
    changes, so jit-compiled steps see the new value).

    Args:
        margin: The margin `m`, a non-negative number. Defaults to `0.2`.
        reduction: Type of reduction over the batch. Defaults to
            `"sum_over_batch_size"`.
        name: Name of the loss. Defaults to `"spread_loss"`.
        dtype: Dtype of the loss computation. Defaults to `None`, the
            backend's float type.

    Call arguments:
        y_true: One-hot targets, `(batch, num_classes)`.
        y_pred: Class activations, `(batch, num_classes)`, e.g. the output
            of `keras_capsules.models.MatrixCapsNet`.

    Example:

    >>> import numpy as np
    >>> loss = keras_capsules.losses.SpreadLoss(margin=0.2)
    >>> y_true = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype="float32")
    >>> y_pred = np.array([[0.5, 0.6, 0.1], [0.9, 0.1, 0.2]], dtype="float32")
    >>> round(float(loss(y_true, y_pred)), 4)
    0.005

    Reference:
        - [Hinton, Sabour & Frosst, 2018. Matrix capsules with EM routing](
          https://openreview.net/forum?id=HJWLfGWRb)
    """

    def __init__(
        self,
        margin: float = 0.2,
        reduction: str = "sum_over_batch_size",
        name: str = "spread_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_non_negative_number("margin", margin)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        check_same_shape("SpreadLoss", y_true=y_true, y_pred=y_pred)
        return capsule_ops.spread_loss(y_true, y_pred, margin=self.margin)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin}
