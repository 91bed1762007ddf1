from __future__ import annotations

from typing import Any

import keras

from keras_capsules import ops as capsule_ops


@keras.saving.register_keras_serializable(package="keras_capsules")
class Length(keras.layers.Layer):
    """Lengths of capsule vectors: the probability that each entity is present.

    The length is computed so that its gradient stays finite for the zero
    vector (see `keras_capsules.ops.capsule_length`); float16 and bfloat16
    capsules are measured in float32.

    Args:
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        Tensor `(batch, num_capsules, capsule_dim)`, or any rank of at least
        3 with the capsule dimensions last. A 2D input is rejected: it would
        be one capsule per example, or more often lengths or flattened
        capsules passed by mistake.

    Output shape:
        The input shape without its last axis: `(batch, num_capsules)`.

    Example:

    >>> import numpy as np
    >>> capsules = np.array([[[3.0, 4.0], [0.6, 0.8]]], dtype="float32")
    >>> keras.ops.convert_to_numpy(keras_capsules.layers.Length()(capsules)).tolist()
    [[5.0, 1.0]]
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) < 3:
            raise ValueError(
                "`Length` expects capsules of shape (batch, num_capsules, "
                "capsule_dim), with the capsule dimensions last. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=3)

    def call(self, inputs: Any) -> Any:
        return capsule_ops.capsule_length(inputs, axis=-1)

    def compute_output_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1])
