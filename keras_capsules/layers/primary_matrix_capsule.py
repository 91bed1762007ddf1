from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_capsules._validation import check_positive_int, normalize_pair
from keras_capsules.ops import _patches
from keras_capsules.ops.matrix_capsules import pose_side


@keras.saving.register_keras_serializable(package="keras_capsules")
class PrimaryMatrixCapsule(keras.layers.Layer):
    """Primary matrix capsules: a convolution to poses and sigmoid activations.

    The first capsule layer of Hinton, Sabour & Frosst (2018): at every
    position of a feature map, a linear transformation (a `1x1`
    convolution in the paper) gives `capsule_types` pose matrices of
    `pose_size` entries each, and another the logits of their activations,
    `a = sigmoid(conv(x))`. Both convolutions share the kernel size and
    strides; their weights are `pose_kernel`, `pose_bias`,
    `activation_kernel` and `activation_bias`.

    Args:
        capsule_types: Capsule types, one capsule of each per position, a
            positive integer (`B = 32` in the paper).
        pose_size: Entries of a pose matrix, a perfect square: `16` is a
            4x4 matrix. Defaults to `16`.
        kernel_size: Size of the convolution window, an integer or a pair.
            Defaults to `1`, as in the paper.
        strides: Strides of the convolution, an integer or a pair. Defaults
            to `1`.
        kernel_initializer: Initializer for both kernels. Defaults to
            `"glorot_uniform"`.
        bias_initializer: Initializer for both biases. Defaults to
            `"zeros"`.
        kernel_regularizer: Optional regularizer for both kernels.
        bias_regularizer: Optional regularizer for both biases.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch, height, width, channels)`, channels last ("valid"
        padding).

    Output shape:
        The pair `(poses, activations)`: `(batch, H', W', capsule_types,
        pose_size)`, each pose a flattened matrix (row by row), and
        `(batch, H', W', capsule_types)` in `(0, 1)`.

    Example:

    >>> import numpy as np
    >>> layer = keras_capsules.layers.PrimaryMatrixCapsule(8)
    >>> poses, activations = layer(np.zeros((2, 14, 14, 32), "float32"))
    >>> tuple(poses.shape), tuple(activations.shape)
    ((2, 14, 14, 8, 16), (2, 14, 14, 8))

    Reference:
        - [Hinton, Sabour & Frosst, 2018. Matrix capsules with EM routing](
          https://openreview.net/forum?id=HJWLfGWRb)
    """

    def __init__(
        self,
        capsule_types: int,
        pose_size: int = 16,
        kernel_size: int | tuple[int, int] = 1,
        strides: int | tuple[int, int] = 1,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.capsule_types = check_positive_int("capsule_types", capsule_types)
        if pose_side(pose_size) is None:
            raise ValueError(
                "Received an invalid value for `pose_size`, expected a perfect "
                "square (the entries of a square pose matrix, 16 for 4x4). "
                f"Received: pose_size={pose_size!r}"
            )
        self.pose_size = int(pose_size)
        self.kernel_size = normalize_pair("kernel_size", kernel_size)
        self.strides = normalize_pair("strides", strides)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "`PrimaryMatrixCapsule` expects a 4D input (batch, height, width, "
                "channels) with a known number of channels. "
                f"Received: input_shape={input_shape}"
            )
        self.compute_output_shape(input_shape)  # Checks the spatial size.
        channels = input_shape[-1]
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})
        for part, filters in (
            ("pose", self.capsule_types * self.pose_size),
            ("activation", self.capsule_types),
        ):
            kernel = self.add_weight(
                name=f"{part}_kernel",
                shape=(*self.kernel_size, channels, filters),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
            )
            bias = self.add_weight(
                name=f"{part}_bias",
                shape=(filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
            setattr(self, f"{part}_kernel", kernel)
            setattr(self, f"{part}_bias", bias)

    def call(self, inputs: Any) -> tuple[Any, Any]:
        # One convolution for both parts, split afterwards.
        kernel = ops.concatenate([self.pose_kernel, self.activation_kernel], axis=-1)
        bias = ops.concatenate([self.pose_bias, self.activation_bias], axis=-1)
        features = ops.conv(inputs, kernel, strides=self.strides, padding="valid")
        features = features + bias
        # Static sizes where known keep shapes known inside traced graphs.
        height, width = (
            ops.shape(features)[axis]
            if features.shape[axis] is None
            else features.shape[axis]
            for axis in (1, 2)
        )
        split = self.capsule_types * self.pose_size
        poses = ops.reshape(
            features[..., :split],
            (-1, height, width, self.capsule_types, self.pose_size),
        )
        activations = ops.sigmoid(features[..., split:])
        return poses, activations

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple:
        input_shape = tuple(input_shape)
        grid = []
        for size, kernel, stride in zip(
            input_shape[1:3], self.kernel_size, self.strides
        ):
            if size is not None and size < kernel:
                raise ValueError(
                    f"`PrimaryMatrixCapsule` with kernel_size={self.kernel_size} "
                    "needs inputs of at least that spatial size. "
                    f"Received: input_shape={input_shape}"
                )
            grid.append(
                None if size is None else _patches.output_size(size, kernel, stride)
            )
        batch = input_shape[0]
        return (
            (batch, *grid, self.capsule_types, self.pose_size),
            (batch, *grid, self.capsule_types),
        )

    def get_config(self) -> dict[str, Any]:
        config = {
            "capsule_types": self.capsule_types,
            "pose_size": self.pose_size,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
        }
        return {**super().get_config(), **config}
