from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_capsules._validation import normalize_pair
from keras_capsules.layers.base_matrix_capsule import BaseMatrixCapsule
from keras_capsules.ops import _patches
from keras_capsules.ops.routing.em import conv_em_routing_by_parent


@keras.saving.register_keras_serializable(package="keras_capsules")
class ConvMatrixCapsule(BaseMatrixCapsule):
    """A convolutional matrix-capsule layer routed by EM.

    Every output position `(y, x)` holds one capsule of each of
    `capsule_types` types. Its children are the input capsules, of every
    type, in its `K x K` receptive field (starting at `(y * stride, x *
    stride)`, "valid" padding). A child of type `i` at kernel position
    `(u, v)` votes for the parent of type `j` through its own transformation
    matrix, `V = M_child W[u, v, i, j]`, so the kernel has shape
    `(K, K, input_types, capsule_types, n, n)` for `n x n` poses.

    EM routing (`keras_capsules.ops.conv_em_routing`) fits each parent to
    its receptive field's votes; a child that lies in several receptive
    fields is shared between all of them: its assignment probabilities sum
    to 1 over every parent it feeds, at every position (as the paper's
    `R_ij` does, and as the IBM implementation does; pitfall 3 of Gritzman,
    2019), and start uniform over those parents.

    Args:
        capsule_types: Output capsule types per position, a positive
            integer (`C = D = 32` in the paper).
        kernel_size: Size of the receptive field, an integer or a pair.
            Defaults to `3`.
        strides: Strides, an integer or a pair. Defaults to `1`.
        routing_iterations: EM iterations. Defaults to `3`.
        final_inverse_temperature: `lambda_final` of the inverse temperature
            schedule. Defaults to `1.0`.
        epsilon: Floor added to the routing's variances and amounts of
            data. Defaults to `1e-6`.
        kernel_initializer: Initializer for the transformation matrices.
            Defaults to `TruncatedNormal(stddev=1.0)`.
        kernel_regularizer: Optional regularizer for the kernel.
        kernel_constraint: Optional constraint for the kernel.
        beta_initializer: Initializer for `beta_u` and `beta_a` (one each
            per output type). Defaults to `"zeros"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: The pair `[poses, activations]` of the input capsules.
        return_assignments: If `True`, also return the assignment
            probabilities of the last M-step, `(batch, H', W', K, K,
            input_types, capsule_types)`. Defaults to `False`.

    Input shape:
        `[poses, activations]`: `(batch, height, width, input_types,
        pose_size)` and `(batch, height, width, input_types)`, with every
        size but the batch known and `pose_size` a perfect square.

    Output shape:
        The pair `(poses, activations)`: `(batch, H', W', capsule_types,
        pose_size)` and `(batch, H', W', capsule_types)`, with `H' =
        (height - K) // stride + 1` and likewise `W'`.

    Example:

    >>> import numpy as np
    >>> layer = keras_capsules.layers.ConvMatrixCapsule(4, kernel_size=3, strides=2)
    >>> poses = np.random.rand(2, 7, 7, 3, 16).astype("float32")
    >>> activations = np.random.rand(2, 7, 7, 3).astype("float32")
    >>> out_poses, out_activations = layer([poses, activations])
    >>> tuple(out_poses.shape), tuple(out_activations.shape)
    ((2, 3, 3, 4, 16), (2, 3, 3, 4))
    >>> tuple(layer.kernel.shape)
    (3, 3, 3, 4, 4, 4)

    Reference:
        - [Hinton, Sabour & Frosst, 2018. Matrix capsules with EM routing](
          https://openreview.net/forum?id=HJWLfGWRb)
    """

    def __init__(
        self,
        capsule_types: int,
        kernel_size: int | tuple[int, int] = 3,
        strides: int | tuple[int, int] = 1,
        routing_iterations: int = 3,
        final_inverse_temperature: float = 1.0,
        epsilon: float = 1e-6,
        kernel_initializer: Any = None,
        kernel_regularizer: Any = None,
        kernel_constraint: Any = None,
        beta_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            capsule_types,
            routing_iterations=routing_iterations,
            final_inverse_temperature=final_inverse_temperature,
            epsilon=epsilon,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            kernel_constraint=kernel_constraint,
            beta_initializer=beta_initializer,
            **kwargs,
        )
        self.kernel_size = normalize_pair("kernel_size", kernel_size)
        self.strides = normalize_pair("strides", strides)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        poses_shape, _ = self._split_shapes(input_shape)
        self.output_grid(poses_shape)  # Checks the spatial size.
        side = self.pose_side
        self.add_kernel(
            (
                *self.kernel_size,
                self.input_capsule_types,
                self.capsule_types,
                side,
                side,
            )
        )

    def routing_op(self, poses: Any, activations: Any, kernel: Any) -> tuple:
        side = self.pose_side
        kernel_h, kernel_w = self.kernel_size
        fields = _patches.extract(poses, self.kernel_size, self.strides)
        out_h, out_w = fields.shape[1], fields.shape[2]
        fields = ops.reshape(
            fields,
            (
                -1,
                out_h,
                out_w,
                kernel_h,
                kernel_w,
                self.input_capsule_types,
                side,
                side,
            ),
        )
        # Laid out by parent, as the routing wants them: see
        # `conv_em_routing_by_parent`.
        votes = ops.einsum("byxuvipq,uvijqr->byxjuvipr", fields, kernel)
        votes = ops.reshape(
            votes,
            (
                -1,
                out_h,
                out_w,
                self.capsule_types,
                kernel_h * kernel_w * self.input_capsule_types,
                self.pose_size,
            ),
        )
        return conv_em_routing_by_parent(
            votes,
            _patches.extract(activations, self.kernel_size, self.strides),
            self.beta_u,
            self.beta_a,
            self.kernel_size,
            self.strides,
            self.routing_iterations,
            self.final_inverse_temperature,
            self.epsilon,
            return_assignments=True,
        )

    def output_grid(self, poses_shape: tuple) -> tuple:
        grid = []
        for size, kernel, stride in zip(
            poses_shape[1:3], self.kernel_size, self.strides
        ):
            if size is not None and size < kernel:
                raise ValueError(
                    f"`ConvMatrixCapsule` with kernel_size={self.kernel_size} needs "
                    "inputs of at least that many positions. "
                    f"Received: poses.shape={tuple(poses_shape)}"
                )
            grid.append(
                None if size is None else _patches.output_size(size, kernel, stride)
            )
        return tuple(grid)

    def assignments_shape(self, poses_shape: tuple) -> tuple:
        return (
            poses_shape[0],
            *self.output_grid(poses_shape),
            *self.kernel_size,
            poses_shape[3],
            self.capsule_types,
        )

    def get_config(self) -> dict[str, Any]:
        config = {"kernel_size": self.kernel_size, "strides": self.strides}
        return {**super().get_config(), **config}
