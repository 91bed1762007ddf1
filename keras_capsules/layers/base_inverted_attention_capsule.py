from __future__ import annotations

import math
from typing import Any

import keras

from keras_capsules._validation import check_positive_int, check_positive_number
from keras_capsules.ops.matrix_capsules import pose_side


class BaseInvertedAttentionCapsule(keras.layers.Layer):
    """Base of the capsule layers routed by inverted dot-product attention.

    Children vote for parents through per-pair weights, the parents compete
    for each child by a softmax of the votes' agreement with their poses,
    and each parent's pose is the layer-normalised weighted sum of its
    votes (Tsai et al., 2020; `keras_capsules.ops.inverted_attention_routing`).
    Poses carry no activation and are never squashed. This class owns what
    the fully connected and the convolutional layer share: the kernel (its
    shape given by the subclass), the layer norm's `gamma` and `beta` of
    shape `(capsule_dim,)`, the routing arguments and the config. A
    subclass implements `_kernel_shape(input_shape)` (which also checks the
    input shape), `_route(...)`, `compute_output_shape` and
    `compute_output_spec`.

    Args:
        capsule_dim: Pose size of each output capsule, a positive integer;
            with `matrix_pose=True` it must equal the input capsules' pose
            size, a square (16 for 4x4 poses).
        routing_iterations: Routing passes, the first one uniform; a
            positive integer. Defaults to `2` (the paper's best CIFAR run).
        matrix_pose: Whether poses are square matrices and votes their
            products with `n x n` weight matrices. Defaults to `False`.
        epsilon: The layer norm's variance floor, a positive number.
            Defaults to `1e-5` (the authors' `torch.nn.LayerNorm`).
        kernel_initializer: Initializer for the kernel, or `None` for the
            authors' normal distribution with standard deviation
            `sqrt(parents / (fan * children))`, where `fan` is the input
            pose size (`n` for matrix poses) and `children` counts the
            children of a parent. Defaults to `None`.
        kernel_regularizer: Optional regularizer for the kernel.
        kernel_constraint: Optional constraint for the kernel.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(
        self,
        capsule_dim: int,
        routing_iterations: int = 2,
        matrix_pose: bool = False,
        epsilon: float = 1e-5,
        kernel_initializer: Any = None,
        kernel_regularizer: Any = None,
        kernel_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.capsule_dim = check_positive_int("capsule_dim", capsule_dim)
        self.routing_iterations = check_positive_int(
            "routing_iterations", routing_iterations
        )
        if not isinstance(matrix_pose, bool):
            raise ValueError(
                "Received an invalid value for `matrix_pose`, expected a boolean. "
                f"Received: matrix_pose={matrix_pose!r}"
            )
        self.matrix_pose = matrix_pose
        if matrix_pose and pose_side(self.capsule_dim) is None:
            raise ValueError(
                "Received an invalid value for `capsule_dim`: with "
                "matrix_pose=True a pose is a square matrix, so its size must "
                f"be n * n (16 for 4x4). Received: capsule_dim={capsule_dim!r}"
            )
        self.epsilon = check_positive_number("epsilon", epsilon)
        self.kernel_initializer = (
            None
            if kernel_initializer is None
            else keras.initializers.get(kernel_initializer)
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)

    def _kernel_shape(self, input_shape: tuple) -> tuple[int, ...]:
        """The kernel's shape for `input_shape`, which it checks."""
        raise NotImplementedError(
            f"`{type(self).__name__}` must implement `_kernel_shape(input_shape)`."
        )

    def _pair_shape(self, input_shape: tuple, input_dim: Any) -> tuple[int, ...]:
        """The weights of one (child, parent) pair, `input_dim` checked."""
        name = type(self).__name__
        if input_dim is None:
            raise ValueError(
                f"`{name}` needs the pose size of its input capsules to be "
                f"known. Received: input_shape={tuple(input_shape)}"
            )
        if not self.matrix_pose:
            return (int(input_dim), self.capsule_dim)
        if int(input_dim) != self.capsule_dim:
            raise ValueError(
                f"`{name}` with matrix_pose=True keeps the pose size: its input "
                f"capsules must have capsule_dim={self.capsule_dim} entries. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        side = int(pose_side(self.capsule_dim) or 0)  # checked in __init__
        return (side, side)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        shape = self._kernel_shape(tuple(input_shape))
        initializer = self.kernel_initializer
        if initializer is None:
            # The authors' scale: sqrt(parents / (fan * children of a parent)).
            children = math.prod(shape[:-3])
            parents, fan = shape[-3], shape[-2]
            initializer = keras.initializers.RandomNormal(
                stddev=math.sqrt(parents / (fan * children))
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=shape,
            initializer=initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.gamma = self.add_weight(
            name="gamma", shape=(self.capsule_dim,), initializer="ones"
        )
        self.beta = self.add_weight(
            name="beta", shape=(self.capsule_dim,), initializer="zeros"
        )

    def _route(
        self, inputs: Any, kernel: Any, parent_poses: Any, return_coupling: bool
    ) -> Any:
        raise NotImplementedError(
            f"`{type(self).__name__}` must implement `_route(...)`."
        )

    def call(
        self, inputs: Any, parent_poses: Any = None, return_coupling: bool = False
    ) -> Any:
        kernel = keras.ops.cast(self.kernel, self.compute_dtype)
        if parent_poses is not None:
            parent_poses = keras.ops.cast(parent_poses, self.compute_dtype)
        return self._route(inputs, kernel, parent_poses, return_coupling)

    def _routing_kwargs(self) -> dict[str, Any]:
        return {
            "routing_iterations": self.routing_iterations,
            "matrix_pose": self.matrix_pose,
            "scale": self.gamma,
            "offset": self.beta,
            "epsilon": self.epsilon,
        }

    def get_config(self) -> dict[str, Any]:
        config = {
            "capsule_dim": self.capsule_dim,
            "routing_iterations": self.routing_iterations,
            "matrix_pose": self.matrix_pose,
            "epsilon": self.epsilon,
            "kernel_initializer": (
                None
                if self.kernel_initializer is None
                else keras.initializers.serialize(self.kernel_initializer)
            ),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
        }
        return {**super().get_config(), **config}
