from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_capsules._validation import check_positive_int
from keras_capsules.layers.base_matrix_capsule import BaseMatrixCapsule
from keras_capsules.ops import coordinate_addition, em_routing


@keras.saving.register_keras_serializable(package="keras_capsules")
class ClassMatrixCapsule(BaseMatrixCapsule):
    """Class capsules: one matrix capsule per class, routed by EM from a grid.

    The last layer of Hinton, Sabour & Frosst (2018). Every input capsule,
    at every position, votes for every class capsule. The transformation
    matrices are shared between the positions of a capsule type, so the
    kernel has shape `(input_types, num_classes, n, n)`; with coordinate
    addition, the scaled `(row, column)` of each input position, `((y +
    0.5) / H, (x + 0.5) / W)`, is added to the first two entries of the
    right-hand column of its votes (`keras_capsules.ops.coordinate_addition`),
    so that the shared matrices can still tell positions apart. EM routing
    (`keras_capsules.ops.em_routing`) then runs over all `H * W *
    input_types` votes of each class. The class activations are the scores,
    in `(0, 1)`, to train with `keras_capsules.losses.SpreadLoss`.

    Args:
        num_classes: Number of classes, one capsule each.
        use_coordinate_addition: Whether to add the scaled coordinates to
            the votes (needs poses of at least 2x2). Defaults to `True`.
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
            per class). Defaults to `"zeros"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: The pair `[poses, activations]` of the input capsules.
        return_assignments: If `True`, also return the assignment
            probabilities of the last M-step, `(batch, height, width,
            input_types, num_classes)`. Defaults to `False`.

    Input shape:
        `[poses, activations]`: `(batch, height, width, input_types,
        pose_size)` and `(batch, height, width, input_types)`, with every
        size but the batch known and `pose_size` a perfect square.

    Output shape:
        The pair `(poses, activations)`: `(batch, num_classes, pose_size)`
        and `(batch, num_classes)`.

    Example:

    >>> import numpy as np
    >>> layer = keras_capsules.layers.ClassMatrixCapsule(5)
    >>> poses = np.random.rand(2, 4, 4, 8, 16).astype("float32")
    >>> activations = np.random.rand(2, 4, 4, 8).astype("float32")
    >>> class_poses, class_activations = layer([poses, activations])
    >>> tuple(class_poses.shape), tuple(class_activations.shape)
    ((2, 5, 16), (2, 5))
    >>> tuple(layer.kernel.shape)
    (8, 5, 4, 4)

    Reference:
        - [Hinton, Sabour & Frosst, 2018. Matrix capsules with EM routing](
          https://openreview.net/forum?id=HJWLfGWRb)
    """

    def __init__(
        self,
        num_classes: int,
        use_coordinate_addition: bool = True,
        routing_iterations: int = 3,
        final_inverse_temperature: float = 1.0,
        epsilon: float = 1e-6,
        kernel_initializer: Any = None,
        kernel_regularizer: Any = None,
        kernel_constraint: Any = None,
        beta_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        if "capsule_types" in kwargs:
            raise ValueError(
                "`ClassMatrixCapsule` takes `num_classes`, not `capsule_types`. "
                f"Received: capsule_types={kwargs['capsule_types']!r}"
            )
        super().__init__(
            check_positive_int("num_classes", num_classes),
            routing_iterations=routing_iterations,
            final_inverse_temperature=final_inverse_temperature,
            epsilon=epsilon,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            kernel_constraint=kernel_constraint,
            beta_initializer=beta_initializer,
            **kwargs,
        )
        self.num_classes = self.capsule_types
        self.use_coordinate_addition = bool(use_coordinate_addition)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        if self.use_coordinate_addition and self.pose_side < 2:
            raise ValueError(
                "`ClassMatrixCapsule` with use_coordinate_addition=True needs "
                "pose matrices of at least 2x2 to add the coordinates to. "
                f"Received: poses.shape={self._split_shapes(input_shape)[0]}"
            )
        side = self.pose_side
        self.add_kernel((self.input_capsule_types, self.num_classes, side, side))

    def routing_op(self, poses: Any, activations: Any, kernel: Any) -> tuple:
        side = self.pose_side
        height, width, types = poses.shape[1:4]
        matrices = ops.reshape(poses, (-1, height, width, types, side, side))
        votes = ops.einsum("byxipq,ijqr->byxijpr", matrices, kernel)
        votes = ops.reshape(
            votes, (-1, height, width, types, self.num_classes, self.pose_size)
        )
        if self.use_coordinate_addition:
            votes = coordinate_addition(votes)
        children = height * width * types
        class_poses, class_activations, assignments = em_routing(
            ops.reshape(votes, (-1, children, self.num_classes, self.pose_size)),
            ops.reshape(activations, (-1, children)),
            self.beta_u,
            self.beta_a,
            routing_iterations=self.routing_iterations,
            final_inverse_temperature=self.final_inverse_temperature,
            epsilon=self.epsilon,
            return_assignments=True,
        )
        assignments = ops.reshape(
            assignments, (-1, height, width, types, self.num_classes)
        )
        return class_poses, class_activations, assignments

    def output_grid(self, poses_shape: tuple) -> tuple:
        return ()

    def assignments_shape(self, poses_shape: tuple) -> tuple:
        return (*poses_shape[:4], self.num_classes)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["num_classes"] = config.pop("capsule_types")
        config["use_coordinate_addition"] = self.use_coordinate_addition
        return config
