from __future__ import annotations

from typing import Any

import keras

from keras_capsules import ops as capsule_ops
from keras_capsules._validation import shapes_compatible


@keras.saving.register_keras_serializable(package="keras_capsules")
class Mask(keras.layers.Layer):
    """Keeps one capsule per example, zeroes the rest, and flattens.

    This is how the CapsNet decoder sees only the capsule of one class:
    during training the capsule of the true label, at inference the longest
    capsule.

    Call arguments:
        inputs: Either the capsules alone, `(batch, num_capsules,
            capsule_dim)`, in which case the longest capsule of each example
            is kept; or a list `[capsules, labels]` with one-hot `labels` of
            shape `(batch, num_capsules)`, in which case the labelled capsule
            is kept.

    Args:
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Output shape:
        2D tensor `(batch, num_capsules * capsule_dim)`, ready for a `Dense`
        decoder.

    Example:

    >>> import numpy as np
    >>> capsules = np.array([[[1.0, 1.0], [0.1, 0.0]]], dtype="float32")
    >>> mask = keras_capsules.layers.Mask()
    >>> keras.ops.convert_to_numpy(mask(capsules)).tolist()
    [[1.0, 1.0, 0.0, 0.0]]
    >>> labels = np.array([[0.0, 1.0]], dtype="float32")
    >>> keras.ops.convert_to_numpy(mask([capsules, labels])).tolist()
    [[0.0, 0.0, 0.10000000149011612, 0.0]]
    """

    def _split_shapes(
        self, input_shape: Any
    ) -> tuple[tuple[int | None, ...], tuple[int | None, ...] | None]:
        if (
            isinstance(input_shape, (list, tuple))
            and input_shape
            and isinstance(input_shape[0], (list, tuple))
        ):
            if len(input_shape) != 2:
                raise ValueError(
                    "`Mask` expects its input to be `capsules` or "
                    f"`[capsules, labels]`. Received {len(input_shape)} "
                    f"inputs with shapes {[tuple(s) for s in input_shape]}"
                )
            return tuple(input_shape[0]), tuple(input_shape[1])
        return tuple(input_shape), None

    def build(self, input_shape: Any) -> None:
        self._check_shapes(input_shape)

    def _check_shapes(self, input_shape: Any) -> None:
        capsules_shape, labels_shape = self._split_shapes(input_shape)
        if len(capsules_shape) != 3:
            raise ValueError(
                "`Mask` expects capsules of shape (batch, num_capsules, "
                f"capsule_dim). Received: capsules.shape={capsules_shape}"
            )
        if labels_shape is None:
            return
        expected = (capsules_shape[0], capsules_shape[1])
        if not shapes_compatible(labels_shape, expected):
            raise ValueError(
                "`Mask` expects one-hot labels of shape (batch, num_capsules) "
                f"= {expected} for capsules of shape {capsules_shape}. "
                f"Received: labels.shape={labels_shape}"
            )

    def call(self, inputs: Any) -> Any:
        # Checked on every call, not only in build: the same layer may be
        # called with and without labels.
        self._check_shapes(keras.tree.map_structure(lambda x: tuple(x.shape), inputs))
        if isinstance(inputs, (list, tuple)):
            capsules, labels = inputs
            return capsule_ops.mask_capsules(capsules, labels)
        return capsule_ops.mask_capsules(inputs)

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        capsules_shape, _ = self._split_shapes(input_shape)
        batch, num_capsules, capsule_dim = capsules_shape
        if num_capsules is None or capsule_dim is None:
            return (batch, None)
        return (batch, num_capsules * capsule_dim)
