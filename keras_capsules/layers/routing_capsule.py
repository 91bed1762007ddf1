from __future__ import annotations

from typing import Any

import keras

from keras_capsules._validation import check_positive_int
from keras_capsules.layers.base_routing_capsule import BaseRoutingCapsule
from keras_capsules.ops import dynamic_routing


@keras.saving.register_keras_serializable(package="keras_capsules")
class RoutingCapsule(BaseRoutingCapsule):
    """A capsule layer connected by routing-by-agreement.

    Each input capsule `u_i` predicts every output capsule through its own
    transformation matrix, `u_hat[j|i] = W[i, j] u_i`. Routing-by-agreement
    (Procedure 1 of Sabour et al., 2017) then runs for
    `routing_iterations` iterations: coupling coefficients
    `c[i] = softmax(b[i])` over the output capsules weight the predictions,
    `v_j = squash(sum_i c[i, j] u_hat[j|i])`, and the logits `b[i, j]` grow
    by the agreement `u_hat[j|i] . v_j`. The logits start at zero for every
    example and are state, not weights; the only weight is `W`. The math is
    `keras_capsules.ops.dynamic_routing`.

    Gradients flow through every routing iteration, as in the paper.

    Args:
        num_capsules: Number of output capsules, a positive integer (one per
            class in the paper's DigitCaps).
        capsule_dim: Dimensions of each output capsule, a positive integer.
        routing_iterations: Routing iterations, a positive integer; `1`
            gives uniform coupling with no agreement update. Defaults to `3`.
        stop_gradient_on_agreement: If `True`, no gradient reaches the
            inputs or `W` through the agreement updates of the routing
            logits (the weighted sums are still back-propagated): a cheaper
            backward pass that departs from the paper. Defaults to `False`.
        kernel_initializer: Initializer for the transformation matrices `W`.
            Defaults to `RandomNormal(stddev=0.01)`.
        kernel_regularizer: Optional regularizer for `W`.
        kernel_constraint: Optional constraint for `W`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: The input capsules.
        return_coupling: If `True`, also return the coupling coefficients of
            the last routing iteration, `(batch, num_capsules,
            input_num_capsules)`, summing to 1 over the output capsules.
            Defaults to `False`.

    Input shape:
        3D tensor `(batch, input_num_capsules, input_capsule_dim)`. Both
        capsule dimensions must be known when the layer is built.

    Output shape:
        3D tensor `(batch, num_capsules, capsule_dim)`; with
        `return_coupling=True`, the pair `(capsules, coupling)`.

    Example:

    >>> import numpy as np
    >>> layer = keras_capsules.layers.RoutingCapsule(10, 16, routing_iterations=3)
    >>> digit_capsules = layer(np.random.rand(4, 1152, 8).astype("float32"))
    >>> tuple(digit_capsules.shape)
    (4, 10, 16)
    >>> tuple(layer.kernel.shape)
    (1152, 10, 8, 16)
    >>> capsules, coupling = layer(np.random.rand(4, 1152, 8), return_coupling=True)
    >>> tuple(coupling.shape)
    (4, 10, 1152)

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
        super().__init__(
            num_capsules,
            capsule_dim,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            kernel_constraint=kernel_constraint,
            **kwargs,
        )
        self.routing_iterations = check_positive_int(
            "routing_iterations", routing_iterations
        )
        self.stop_gradient_on_agreement = bool(stop_gradient_on_agreement)

    def routing_op(self, inputs: Any, kernel: Any) -> tuple[Any, Any]:
        return dynamic_routing(
            inputs,
            kernel,
            self.routing_iterations,
            stop_gradient_on_agreement=self.stop_gradient_on_agreement,
            return_coupling=True,
        )

    def get_config(self) -> dict[str, Any]:
        config = {
            "routing_iterations": self.routing_iterations,
            "stop_gradient_on_agreement": self.stop_gradient_on_agreement,
        }
        return {**super().get_config(), **config}
