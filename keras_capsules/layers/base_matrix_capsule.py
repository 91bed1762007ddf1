from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_capsules._validation import (
    check_positive_int,
    check_positive_number,
)
from keras_capsules.ops.matrix_capsules import pose_side


class BaseMatrixCapsule(keras.layers.Layer):
    """Base of the matrix-capsule layers routed by EM.

    A matrix capsule is a pose matrix, flattened to `pose_size = n * n`
    entries, and an activation. Each layer takes the pair `[poses,
    activations]` of a grid of input capsules, `(batch, height, width,
    input_types, pose_size)` and `(batch, height, width, input_types)`,
    computes every child's votes `V_ij = M_i W_ij` for its parents and routes
    them with EM (`keras_capsules.ops.em_routing`). This class owns what the
    layers share: the routing arguments, the learned `beta_u` and `beta_a`
    (one each per output capsule type, kept in float32 under mixed
    precision), the initializer, regularizer and constraint of the
    transformation matrices, the input checks, the output specs and the
    config. A subclass creates its `kernel` in `build` (after calling
    `super().build(input_shape)`), gives its output shapes, and supplies the
    routing by overriding `routing_op`.

    Args:
        capsule_types: Output capsule types, a positive integer.
        routing_iterations: EM iterations, a positive integer. Defaults to
            `3`.
        final_inverse_temperature: `lambda_final` of the inverse temperature
            schedule `lambda_t = lambda_final (1 - 0.95^t)`, a positive
            number. Defaults to `1.0`.
        epsilon: Floor added to the variances and amounts of data of the
            routing, a positive number. Defaults to `1e-6`.
        kernel_initializer: Initializer for the transformation matrices.
            Defaults to `TruncatedNormal(stddev=1.0)`, as in the IBM code
            (a routing layer's output poses are means of many votes, smaller
            than its inputs; larger matrices offset that shrinking).
        kernel_regularizer: Optional regularizer for the kernel.
        kernel_constraint: Optional constraint for the kernel.
        beta_initializer: Initializer for `beta_u` and `beta_a`. Defaults to
            `"zeros"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(
        self,
        capsule_types: int,
        routing_iterations: int = 3,
        final_inverse_temperature: float = 1.0,
        epsilon: float = 1e-6,
        kernel_initializer: Any = None,
        kernel_regularizer: Any = None,
        kernel_constraint: Any = None,
        beta_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.capsule_types = check_positive_int("capsule_types", capsule_types)
        self.routing_iterations = check_positive_int(
            "routing_iterations", routing_iterations
        )
        self.final_inverse_temperature = check_positive_number(
            "final_inverse_temperature", final_inverse_temperature
        )
        self.epsilon = check_positive_number("epsilon", epsilon)
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.TruncatedNormal(stddev=1.0)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.beta_initializer = keras.initializers.get(beta_initializer)

    def _split_shapes(self, input_shape: Any) -> tuple[tuple, tuple]:
        name = type(self).__name__
        shapes = None
        if isinstance(input_shape, (list, tuple)) and len(input_shape) == 2:
            if all(isinstance(s, (list, tuple)) for s in input_shape):
                shapes = (tuple(input_shape[0]), tuple(input_shape[1]))
        if (
            shapes is None
            or len(shapes[0]) != 5
            or len(shapes[1]) != 4
            or any(a is not None and b is not None and a != b for a, b in zip(*shapes))
        ):
            raise ValueError(
                f"`{name}` expects the pair [poses, activations], of shapes "
                "(batch, height, width, capsule_types, pose_size) and (batch, "
                f"height, width, capsule_types). Received: input_shape={input_shape}"
            )
        return shapes

    def build(self, input_shape: Any) -> None:
        poses_shape, _ = self._split_shapes(input_shape)
        name = type(self).__name__
        if any(d is None for d in poses_shape[1:]):
            raise ValueError(
                f"`{name}` needs the height, width, capsule types and pose size "
                "of its input to be known, since each has its own weights or "
                f"positions. Received: poses.shape={poses_shape}"
            )
        side = pose_side(poses_shape[-1])
        if side is None:
            raise ValueError(
                f"`{name}` expects flattened square pose matrices: the last axis "
                "of the poses must be a perfect square (16 for 4x4). "
                f"Received: poses.shape={poses_shape}"
            )
        self.input_capsule_types = int(poses_shape[3])
        self.pose_size = int(poses_shape[4])
        self.pose_side = side
        self.beta_u = self.add_weight(
            name="beta_u",
            shape=(self.capsule_types,),
            initializer=self.beta_initializer,
            autocast=False,
        )
        self.beta_a = self.add_weight(
            name="beta_a",
            shape=(self.capsule_types,),
            initializer=self.beta_initializer,
            autocast=False,
        )

    def add_kernel(self, shape: tuple[int, ...]) -> None:
        """Creates `self.kernel`, the transformation matrices, of `shape`."""
        self.kernel = self.add_weight(
            name="kernel",
            shape=shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )

    def routing_op(self, poses: Any, activations: Any, kernel: Any) -> tuple:
        """Votes and routes: the one hook of the family.

        Args:
            poses: Input poses `(batch, height, width, input_types,
                pose_size)`, in the compute dtype.
            activations: Input activations `(batch, height, width,
                input_types)`, in the compute dtype.
            kernel: The layer's kernel, cast to the compute dtype.

        Returns:
            The triple `(poses, activations, assignments)` of the output
            capsules and the assignment probabilities of the last M-step.
        """
        raise NotImplementedError(
            f"`{type(self).__name__}` must implement "
            "`routing_op(poses, activations, kernel)`."
        )

    def call(self, inputs: Any, return_assignments: bool = False) -> Any:
        poses, activations = inputs
        poses = ops.cast(poses, self.compute_dtype)
        activations = ops.cast(activations, self.compute_dtype)
        kernel = ops.cast(self.kernel, self.compute_dtype)
        outputs = self.routing_op(poses, activations, kernel)
        return tuple(outputs) if return_assignments else tuple(outputs[:2])

    def output_grid(self, poses_shape: tuple) -> tuple:
        """Spatial axes of the outputs for input poses of `poses_shape`."""
        raise NotImplementedError

    def assignments_shape(self, poses_shape: tuple) -> tuple:
        """Shape of the assignments returned with `return_assignments`."""
        raise NotImplementedError

    def compute_output_shape(self, input_shape: Any) -> tuple:
        poses_shape, _ = self._split_shapes(input_shape)
        grid = self.output_grid(poses_shape)
        batch = poses_shape[0]
        return (
            (batch, *grid, self.capsule_types, poses_shape[-1]),
            (batch, *grid, self.capsule_types),
        )

    def compute_output_spec(self, inputs: Any, return_assignments: bool = False) -> Any:
        input_shape = [tuple(x.shape) for x in inputs]
        shapes = self.compute_output_shape(input_shape)
        if return_assignments:
            shapes = (*shapes, self.assignments_shape(input_shape[0]))
        return tuple(keras.KerasTensor(s, dtype=self.compute_dtype) for s in shapes)

    def get_config(self) -> dict[str, Any]:
        config = {
            "capsule_types": self.capsule_types,
            "routing_iterations": self.routing_iterations,
            "final_inverse_temperature": self.final_inverse_temperature,
            "epsilon": self.epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
        }
        return {**super().get_config(), **config}
