from __future__ import annotations

from typing import Any

import keras

from keras_capsules import ops as capsule_ops
from keras_capsules._validation import check_non_negative_number, check_same_shape


@keras.saving.register_keras_serializable(package="keras_capsules")
class MarginLoss(keras.losses.Loss):
    """The margin loss of eq. 4 of Sabour et al. (2017).

    For each class `k` with capsule length `|v_k|` and one-hot target `T_k`:

    `L_k = T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2`

    The per-class terms are summed; the batch is reduced by `reduction`
    (the mean over examples by default, as in Keras's other losses).

    Args:
        m_plus: Length the capsule of a present class should exceed.
            Defaults to `0.9`.
        m_minus: Length the capsule of an absent class should stay below.
            Defaults to `0.1`.
        down_weight: The factor `lambda` that down-weights the absent-class
            term so that early training does not shrink every capsule.
            Defaults to `0.5`.
        reduction: Type of reduction over the batch. Defaults to
            `"sum_over_batch_size"`.
        name: Name of the loss. Defaults to `"margin_loss"`.
        dtype: Dtype of the loss computation. Defaults to `None`, the
            backend's float type.

    Call arguments:
        y_true: One-hot targets, `(batch, num_classes)`.
        y_pred: Capsule lengths, `(batch, num_classes)`, e.g. the output of
            `keras_capsules.layers.Length`.

    Example:

    >>> import numpy as np
    >>> loss = keras_capsules.losses.MarginLoss()
    >>> y_true = np.array([[0.0, 1.0], [1.0, 0.0]], dtype="float32")
    >>> y_pred = np.array([[0.3, 0.8], [0.95, 0.05]], dtype="float32")
    >>> round(float(loss(y_true, y_pred)), 4)
    0.015

    Reference:
        - [Sabour, Frosst & Hinton, 2017](https://arxiv.org/abs/1710.09829)
    """

    def __init__(
        self,
        m_plus: float = 0.9,
        m_minus: float = 0.1,
        down_weight: float = 0.5,
        reduction: str = "sum_over_batch_size",
        name: str = "margin_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.m_plus = check_non_negative_number("m_plus", m_plus)
        self.m_minus = check_non_negative_number("m_minus", m_minus)
        self.down_weight = check_non_negative_number("down_weight", down_weight)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        check_same_shape("MarginLoss", y_true=y_true, y_pred=y_pred)
        return capsule_ops.margin_loss(
            y_true,
            y_pred,
            m_plus=self.m_plus,
            m_minus=self.m_minus,
            down_weight=self.down_weight,
        )

    def get_config(self) -> dict[str, Any]:
        config = {
            "m_plus": self.m_plus,
            "m_minus": self.m_minus,
            "down_weight": self.down_weight,
        }
        return {**super().get_config(), **config}
