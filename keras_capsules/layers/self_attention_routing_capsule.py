from __future__ import annotations

from typing import Any

import keras

from keras_capsules.layers.base_routing_capsule import BaseRoutingCapsule
from keras_capsules.ops import self_attention_routing


@keras.saving.register_keras_serializable(package="keras_capsules")
class SelfAttentionRoutingCapsule(BaseRoutingCapsule):
    """A capsule layer connected by self-attention routing (Efficient-CapsNet).

    Each input capsule `u_i` predicts every output capsule through its own
    transformation matrix, `u[j, i] = W[i, j]^T u_i`, as in `RoutingCapsule`.
    Instead of iterating, one pass of self-attention weighs the
    predictions: the agreement of each prediction with the sum of all
    predictions for the same output capsule, scaled by
    `1 / sqrt(capsule_dim)`, gives coupling coefficients by a softmax over
    the output capsules; the output capsules are the efficient squash
    (eq. 5 of the paper) of the predictions weighted by the coupling plus
    learned log priors `b[j, i]`. The math is
    `keras_capsules.ops.self_attention_routing`.

    Args:
        num_capsules: Number of output capsules, a positive integer.
        capsule_dim: Dimensions of each output capsule, a positive integer.
        kernel_initializer: Initializer for the transformation matrices.
            Defaults to `"he_normal"`, as in the authors' code.
        bias_initializer: Initializer for the log priors. Defaults to
            `"zeros"`.
        kernel_regularizer: Optional regularizer for the kernel.
        bias_regularizer: Optional regularizer for the log priors.
        kernel_constraint: Optional constraint for the kernel.
        bias_constraint: Optional constraint for the log priors.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: The input capsules.
        return_coupling: If `True`, also return the coupling coefficients,
            `(batch, num_capsules, input_num_capsules)`, summing to 1 over
            the output capsules. Defaults to `False`.

    Input shape:
        3D tensor `(batch, input_num_capsules, input_capsule_dim)`, both
        capsule dimensions known when the layer is built.

    Output shape:
        3D tensor `(batch, num_capsules, capsule_dim)`; with
        `return_coupling=True`, the pair `(capsules, coupling)`.

    Example:

    >>> import numpy as np
    >>> layer = keras_capsules.layers.SelfAttentionRoutingCapsule(10, 16)
    >>> capsules = layer(np.random.rand(4, 16, 8).astype("float32"))
    >>> tuple(capsules.shape)
    (4, 10, 16)
    >>> tuple(layer.kernel.shape), tuple(layer.bias.shape)
    ((16, 10, 8, 16), (10, 16))

    Reference:
        - [Mazzia, Salvetti & Chiaberge, 2021. Efficient-CapsNet: capsule
          network with self-attention routing](https://arxiv.org/abs/2101.12491)
    """

    def __init__(
        self,
        num_capsules: int,
        capsule_dim: int,
        kernel_initializer: Any = "he_normal",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
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
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        super().build(input_shape)
        self.bias = self.add_weight(
            name="bias",
            shape=(self.num_capsules, self.input_num_capsules),
            initializer=self.bias_initializer,
            regularizer=self.bias_regularizer,
            constraint=self.bias_constraint,
        )

    def routing_op(self, inputs: Any, kernel: Any) -> tuple[Any, Any]:
        log_priors = keras.ops.cast(self.bias, self.compute_dtype)
        return self_attention_routing(inputs, kernel, log_priors, return_coupling=True)

    def get_config(self) -> dict[str, Any]:
        config = {
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        }
        return {**super().get_config(), **config}
