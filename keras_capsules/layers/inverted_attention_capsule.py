from __future__ import annotations

from typing import Any

import keras

from keras_capsules._validation import check_positive_int
from keras_capsules.layers.base_inverted_attention_capsule import (
    BaseInvertedAttentionCapsule,
)
from keras_capsules.ops import inverted_attention_routing


@keras.saving.register_keras_serializable(package="keras_capsules")
class InvertedAttentionCapsule(BaseInvertedAttentionCapsule):
    """A fully connected capsule layer routed by inverted dot-product attention.

    Every input capsule `i` votes for every output capsule `j` through its
    own weights, `v[i, j] = W[i, j]^T u_i` (or, with `matrix_pose=True`,
    the child's `n x n` pose times an `n x n` matrix `W[i, j]`). The first
    routing pass sends each child to every parent equally; each later pass
    weighs the votes by a softmax over the parents of their agreement with
    the parents' poses, `p_j . v[i, j] / sqrt(capsule_dim)`. Each parent's
    pose is the weighted sum of its votes, layer-normalised with learned
    `gamma` and `beta` after every pass: no squash, no activations. The
    math is `keras_capsules.ops.inverted_attention_routing`, whose docstring
    compares the paper with the authors' code.

    Args:
        num_capsules: Number of output capsules, a positive integer.
        capsule_dim: Pose size of each output capsule, a positive integer;
            with `matrix_pose=True`, equal to the input pose size, `n * n`.
        routing_iterations: Routing passes, the first one uniform; a
            positive integer. Defaults to `2`.
        matrix_pose: Whether poses are square matrices. Defaults to
            `False`.
        epsilon: The layer norm's variance floor. Defaults to `1e-5`.
        kernel_initializer: Initializer for the kernel, or `None` for the
            authors' normal with standard deviation
            `sqrt(num_capsules / (fan * input_num_capsules))` (`fan` the
            input pose size, or `n` for matrix poses). Defaults to `None`.
        kernel_regularizer: Optional regularizer for the kernel.
        kernel_constraint: Optional constraint for the kernel.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: The input capsules' poses.
        parent_poses: Optional poses of the output capsules from an earlier
            pass, `(batch, num_capsules, capsule_dim)`; the first pass then
            agrees with them instead of routing uniformly (the paper's
            concurrent routing, one pass per call). Defaults to `None`.
        return_coupling: If `True`, also return the routing coefficients of
            the last pass, `(batch, num_capsules, input_num_capsules)`,
            summing to 1 over the output capsules. Defaults to `False`.

    Input shape:
        3D tensor `(batch, input_num_capsules, input_capsule_dim)`, both
        sizes known when the layer is built.

    Output shape:
        3D tensor `(batch, num_capsules, capsule_dim)`; with
        `return_coupling=True`, the pair `(poses, coupling)`.

    Example:

    >>> import numpy as np
    >>> layer = keras_capsules.layers.InvertedAttentionCapsule(
    ...     10, 16, matrix_pose=True)
    >>> poses = layer(np.random.rand(4, 32, 16).astype("float32"))
    >>> tuple(poses.shape), tuple(layer.kernel.shape)
    ((4, 10, 16), (32, 10, 4, 4))

    Reference:
        - [Tsai, Srivastava, Goh & Salakhutdinov, 2020. Capsules with
          Inverted Dot-Product Attention Routing](https://arxiv.org/abs/2002.04764)
    """

    def __init__(
        self,
        num_capsules: int,
        capsule_dim: int,
        routing_iterations: int = 2,
        matrix_pose: bool = False,
        epsilon: float = 1e-5,
        kernel_initializer: Any = None,
        kernel_regularizer: Any = None,
        kernel_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            capsule_dim,
            routing_iterations=routing_iterations,
            matrix_pose=matrix_pose,
            epsilon=epsilon,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            kernel_constraint=kernel_constraint,
            **kwargs,
        )
        self.num_capsules = check_positive_int("num_capsules", num_capsules)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def _kernel_shape(self, input_shape: tuple) -> tuple[int, ...]:
        name = type(self).__name__
        if len(input_shape) != 3:
            raise ValueError(
                f"`{name}` expects a 3D input (batch, input_num_capsules, "
                f"input_capsule_dim). Received: input_shape={input_shape}"
            )
        _, input_num_capsules, input_capsule_dim = input_shape
        if input_num_capsules is None:
            raise ValueError(
                f"`{name}` needs the number of its input capsules to be known, "
                "since each pair of capsules has its own weights. "
                f"Received: input_shape={input_shape}"
            )
        pair = self._pair_shape(input_shape, input_capsule_dim)
        self.input_spec = keras.layers.InputSpec(
            ndim=3, axes={1: input_num_capsules, 2: input_capsule_dim}
        )
        return (int(input_num_capsules), self.num_capsules, *pair)

    def _route(
        self, inputs: Any, kernel: Any, parent_poses: Any, return_coupling: bool
    ) -> Any:
        return inverted_attention_routing(
            inputs,
            kernel,
            parent_poses=parent_poses,
            return_coupling=return_coupling,
            **self._routing_kwargs(),
        )

    def compute_output_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> tuple[int | None, ...]:
        return (input_shape[0], self.num_capsules, self.capsule_dim)

    def compute_output_spec(
        self, inputs: Any, parent_poses: Any = None, return_coupling: bool = False
    ) -> Any:
        poses = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if not return_coupling:
            return poses
        coupling_shape = (inputs.shape[0], self.num_capsules, inputs.shape[1])
        return poses, keras.KerasTensor(coupling_shape, dtype=self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_capsules": self.num_capsules}
