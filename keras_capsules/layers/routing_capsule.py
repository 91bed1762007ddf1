from __future__ import annotations

from typing import Any

import keras

from keras_capsules import ops as capsule_ops
from keras_capsules._validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_capsules")
class RoutingCapsule(keras.layers.Layer):
    """A capsule layer connected by routing-by-agreement.

    Each input capsule `u_i` predicts every output capsule through its own
    transformation matrix, `u_hat[j|i] = W[i, j] u_i`. Routing-by-agreement
    (Procedure 1 of Sabour et al., 2017) then runs for
    `routing_iterations` iterations: coupling coefficients
    `c[i] = softmax(b[i])` over the output capsules weight the predictions,
    `v_j = squash(sum_i c[i, j] u_hat[j|i])`, and the logits `b[i, j]` grow
    by the agreement `u_hat[j|i] . v_j`. The logits start at zero for every
    example and are state, not weights; the only weight is `W`.

    Gradients flow through every routing iteration, as in the paper.

    Args:
        num_capsules: Number of output capsules, a positive integer (one per
            class in the paper's DigitCaps).
        capsule_dim: Dimensions of each output capsule, a positive integer.
        routing_iterations: Routing iterations, a positive integer; `1`
            gives uniform coupling with no agreement update. Defaults to `3`.
        stop_gradient_on_agreement: If `True`, the agreement updates of the
            routing logits are not back-propagated through: a cheaper
            backward pass that departs from the paper. Defaults to `False`.
        kernel_initializer: Initializer for the transformation matrices `W`.
            Defaults to `RandomNormal(stddev=0.01)`.
        kernel_regularizer: Optional regularizer for `W`.
        kernel_constraint: Optional constraint for `W`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        3D tensor `(batch, input_num_capsules, input_capsule_dim)`. Both
        capsule dimensions must be known when the layer is built.

    Output shape:
        3D tensor `(batch, num_capsules, capsule_dim)`.

    Example:

    >>> import numpy as np
    >>> layer = keras_capsules.layers.RoutingCapsule(10, 16, routing_iterations=3)
    >>> digit_capsules = layer(np.random.rand(4, 1152, 8).astype("float32"))
    >>> tuple(digit_capsules.shape)
    (4, 10, 16)
    >>> tuple(layer.kernel.shape)
    (1152, 10, 8, 16)

    Reference:
        - [Sabour, Frosst & Hinton, 2017](https://arxiv.org/abs/1710.09829)
    """

    def __init__(
        self,
        num_capsules: int,
        capsule_dim: int,
        routing_iterations: int = 3,
        stop_gradient_on_agreement: bool = False,
        kernel_initializer: Any = None,
        kernel_regularizer: Any = None,
        kernel_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_capsules = check_positive_int("num_capsules", num_capsules)
        self.capsule_dim = check_positive_int("capsule_dim", capsule_dim)
        self.routing_iterations = check_positive_int(
            "routing_iterations", routing_iterations
        )
        self.stop_gradient_on_agreement = bool(stop_gradient_on_agreement)
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomNormal(stddev=0.01)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 3:
            raise ValueError(
                "`RoutingCapsule` expects a 3D input (batch, "
                "input_num_capsules, input_capsule_dim). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        _, input_num_capsules, input_capsule_dim = input_shape
        if input_num_capsules is None or input_capsule_dim is None:
            raise ValueError(
                "`RoutingCapsule` needs the number and the dimension of its "
                "input capsules to be known, since each pair of capsules has "
                f"its own weights. Received: input_shape={tuple(input_shape)}"
            )
        self.input_spec = keras.layers.InputSpec(
            ndim=3, axes={1: input_num_capsules, 2: input_capsule_dim}
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(
                input_num_capsules,
                self.num_capsules,
                input_capsule_dim,
                self.capsule_dim,
            ),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )

    def call(self, inputs: Any) -> Any:
        kernel = keras.ops.cast(self.kernel, self.compute_dtype)
        # The same routing as `routing_by_agreement(capsule_predictions(...))`
        # without forming the prediction vectors: about 2x faster to train.
        return capsule_ops._route_inputs(
            inputs,
            kernel,
            self.routing_iterations,
            stop_gradient_on_agreement=self.stop_gradient_on_agreement,
        )

    def compute_output_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> tuple[int | None, ...]:
        return (input_shape[0], self.num_capsules, self.capsule_dim)

    def get_config(self) -> dict[str, Any]:
        config = {
            "num_capsules": self.num_capsules,
            "capsule_dim": self.capsule_dim,
            "routing_iterations": self.routing_iterations,
            "stop_gradient_on_agreement": self.stop_gradient_on_agreement,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
        }
        return {**super().get_config(), **config}
