from __future__ import annotations

from typing import Any

import keras

from keras_capsules import ops as capsule_ops
from keras_capsules._validation import check_non_negative_number, check_same_shape


@keras.saving.register_keras_serializable(package="keras_capsules")
class ReconstructionLoss(keras.losses.Loss):
    """The weighted reconstruction loss of the CapsNet decoder.

    Sabour et al. (2017) regularise the capsules with a decoder that
    reconstructs the input image, trained on the sum of squared pixel
    errors of each example scaled down by 0.0005 "so that it does not
    dominate the margin loss":

    `L = weight * sum_pixels (reconstruction - image)^2`

    The weight is part of the loss, so that `MarginLoss()` and
    `ReconstructionLoss()` together are the paper's objective with no
    `loss_weights`; pass `weight=1.0` for the plain sum of squared errors.
    The batch is reduced by `reduction` (the mean over examples by default).

    Args:
        weight: Non-negative factor on the sum of squared errors. Defaults
            to `0.0005`.
        reduction: Type of reduction over the batch. Defaults to
            `"sum_over_batch_size"`.
        name: Name of the loss. Defaults to `"reconstruction_loss"`.
        dtype: Dtype of the loss computation. Defaults to `None`, the
            backend's float type.

    Call arguments:
        y_true: Target images, `(batch, ...)`.
        y_pred: Reconstructions of the same shape.

    Example:

    >>> import numpy as np
    >>> import keras_capsules
    >>> loss = keras_capsules.losses.ReconstructionLoss(weight=1.0)
    >>> images = np.array([[1.0, 0.0], [0.0, 1.0]], dtype="float32")
    >>> reconstructions = np.array([[0.5, 0.0], [0.0, 0.0]], dtype="float32")
    >>> round(float(loss(images, reconstructions)), 4)
    0.625

    Reference:
        - [Sabour, Frosst & Hinton, 2017](https://arxiv.org/abs/1710.09829)
    """

    def __init__(
        self,
        weight: float = 0.0005,
        reduction: str = "sum_over_batch_size",
        name: str = "reconstruction_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.weight = check_non_negative_number("weight", weight)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        check_same_shape("ReconstructionLoss", y_true=y_true, y_pred=y_pred)
        return self.weight * capsule_ops.reconstruction_loss(y_true, y_pred)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight": self.weight}
