from __future__ import annotations

from typing import Any

import keras

from keras_capsules._validation import check_positive_int, normalize_pair
from keras_capsules.layers.base_inverted_attention_capsule import (
    BaseInvertedAttentionCapsule,
)
from keras_capsules.ops import conv_inverted_attention_routing


@keras.saving.register_keras_serializable(package="keras_capsules")
class ConvInvertedAttentionCapsule(BaseInvertedAttentionCapsule):
    """A convolutional capsule layer routed by inverted dot-product attention.

    The input is a grid of capsules, `input_capsule_types` at each
    position. The output capsules at position `(y, x)`, `capsule_types` of
    them, are the parents of the children in their receptive field: the
    `kernel_size` window from `(y * stride_h, x * stride_w)` ("valid"
    padding, as in the authors' code). Each child votes through the
    weights of its type and its offset in the window, shared across
    positions, and is routed over the parents at `(y, x)` by inverted
    dot-product attention (see `InvertedAttentionCapsule`); a child in
    several windows is routed in each of them independently, as the
    authors' `CapsuleCONV` does. The math is
    `keras_capsules.ops.conv_inverted_attention_routing`.

    Args:
        capsule_types: Output capsule types, one capsule of each per
            output position, a positive integer.
        capsule_dim: Pose size of each output capsule, a positive integer;
            with `matrix_pose=True`, equal to the input pose size, `n * n`.
        kernel_size: Size of the receptive field, an integer or a pair.
        strides: Strides of the receptive fields, an integer or a pair.
            Defaults to `1`.
        routing_iterations: Routing passes, the first one uniform; a
            positive integer. Defaults to `2`.
        matrix_pose: Whether poses are square matrices. Defaults to
            `False`.
        epsilon: The layer norm's variance floor. Defaults to `1e-5`.
        kernel_initializer: Initializer for the kernel, or `None` for the
            authors' normal with standard deviation
            `sqrt(capsule_types / (fan * kernel_h * kernel_w *
            input_capsule_types))` (`fan` the input pose size, or `n` for
            matrix poses). Defaults to `None`.
        kernel_regularizer: Optional regularizer for the kernel.
        kernel_constraint: Optional constraint for the kernel.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: The input capsules' poses.
        parent_poses: Optional poses of the output capsules from an earlier
            pass, shaped like the output, for concurrent routing. Defaults
            to `None`.
        return_coupling: If `True`, also return the routing coefficients of
            the last pass, `(batch, out_h, out_w, kernel_h, kernel_w,
            input_capsule_types, capsule_types)`, summing to 1 over the
            last axis. Defaults to `False`.

    Input shape:
        5D tensor `(batch, height, width, input_capsule_types,
        input_capsule_dim)`, every size but the batch known.

    Output shape:
        5D tensor `(batch, out_h, out_w, capsule_types, capsule_dim)`, with
        `out_h = (height - kernel_h) // stride_h + 1` (likewise `out_w`);
        with `return_coupling=True`, the pair `(poses, coupling)`.

    Example:

    >>> import numpy as np
    >>> layer = keras_capsules.layers.ConvInvertedAttentionCapsule(
    ...     8, 16, kernel_size=3, strides=2, matrix_pose=True)
    >>> poses = layer(np.random.rand(2, 7, 7, 4, 16).astype("float32"))
    >>> tuple(poses.shape), tuple(layer.kernel.shape)
    ((2, 3, 3, 8, 16), (3, 3, 4, 8, 4, 4))

    Reference:
        - [Tsai, Srivastava, Goh & Salakhutdinov, 2020. Capsules with
          Inverted Dot-Product Attention Routing](https://arxiv.org/abs/2002.04764)
    """

    def __init__(
        self,
        capsule_types: int,
        capsule_dim: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = 1,
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
        self.capsule_types = check_positive_int("capsule_types", capsule_types)
        self.kernel_size = normalize_pair("kernel_size", kernel_size)
        self.strides = normalize_pair("strides", strides)
        self.input_spec = keras.layers.InputSpec(ndim=5)

    def _kernel_shape(self, input_shape: tuple) -> tuple[int, ...]:
        name = type(self).__name__
        if len(input_shape) != 5:
            raise ValueError(
                f"`{name}` expects a 5D input (batch, height, width, "
                "input_capsule_types, input_capsule_dim). "
                f"Received: input_shape={input_shape}"
            )
        _, height, width, input_types, input_dim = input_shape
        if height is None or width is None or input_types is None:
            raise ValueError(
                f"`{name}` needs the height, width and capsule types of its "
                f"input to be known. Received: input_shape={input_shape}"
            )
        self.compute_output_shape(input_shape)  # checks the kernel fits
        pair = self._pair_shape(input_shape, input_dim)
        self.input_spec = keras.layers.InputSpec(
            ndim=5, axes={1: height, 2: width, 3: input_types, 4: input_dim}
        )
        return (*self.kernel_size, int(input_types), self.capsule_types, *pair)

    def _route(
        self, inputs: Any, kernel: Any, parent_poses: Any, return_coupling: bool
    ) -> Any:
        return conv_inverted_attention_routing(
            inputs,
            kernel,
            strides=self.strides,
            parent_poses=parent_poses,
            return_coupling=return_coupling,
            **self._routing_kwargs(),
        )

    def compute_output_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> tuple[int | None, ...]:
        output: list[int | None] = []
        for size, kernel, stride in zip(
            input_shape[1:3], self.kernel_size, self.strides
        ):
            if size is not None and size < kernel:
                raise ValueError(
                    f"`{type(self).__name__}` with kernel_size={self.kernel_size} "
                    "needs an input grid at least that large. "
                    f"Received: input_shape={tuple(input_shape)}"
                )
            output.append(None if size is None else (size - kernel) // stride + 1)
        return (input_shape[0], *output, self.capsule_types, self.capsule_dim)

    def compute_output_spec(
        self, inputs: Any, parent_poses: Any = None, return_coupling: bool = False
    ) -> Any:
        shape = self.compute_output_shape(inputs.shape)
        poses = keras.KerasTensor(shape, dtype=self.compute_dtype)
        if not return_coupling:
            return poses
        coupling_shape = (
            *shape[:3],
            *self.kernel_size,
            inputs.shape[3],
            self.capsule_types,
        )
        return poses, keras.KerasTensor(coupling_shape, dtype=self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        config = {
            "capsule_types": self.capsule_types,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
        }
        return {**super().get_config(), **config}
