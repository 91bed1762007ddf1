from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_capsules._validation import (
    check_data_format,
    check_padding,
    check_positive_int,
    normalize_pair,
)
from keras_capsules.ops import conv_output_size, efficient_squash


@keras.saving.register_keras_serializable(package="keras_capsules")
class DepthwisePrimaryCapsule(keras.layers.DepthwiseConv2D):
    """Primary capsules of Efficient-CapsNet: a depthwise convolution, squashed.

    Each input channel is convolved with its own `kernel_size` filters
    (`depth_multiplier` of them); the output features, taken in row,
    column, channel order, are cut into capsules of `capsule_dim`
    dimensions, each squashed with the efficient squash (eq. 5 of Mazzia et
    al., 2021). The layer is a `keras.layers.DepthwiseConv2D` (same weights
    and options; its `depthwise_*` arguments are named `kernel_*` here, as in
    the other capsule layers); only the output differs. In the paper's MNIST
    network a 9x9 depthwise convolution of
    the last 9x9x128 feature map gives 128 features at one position: 16
    capsules of 8 dimensions.

    Args:
        capsule_dim: Dimensions of each capsule, a positive integer. It
            must divide the number of output features.
        kernel_size: Size of the convolution window, an integer or a tuple
            of 2 integers.
        strides: Strides of the convolution. Defaults to `1`.
        padding: `"valid"` or `"same"`. Defaults to `"valid"`.
        depth_multiplier: Filters per input channel. Defaults to `1`.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        use_bias: Whether the convolution adds a bias. Defaults to `True`.
        kernel_initializer: Initializer for the depthwise kernel. Defaults
            to `"glorot_uniform"`.
        bias_initializer: Initializer for the bias. Defaults to `"zeros"`.
        kernel_regularizer: Optional regularizer for the kernel.
        bias_regularizer: Optional regularizer for the bias.
        kernel_constraint: Optional constraint for the kernel.
        bias_constraint: Optional constraint for the bias.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch, height, width, channels)` (channels last) or
        `(batch, channels, height, width)` (channels first).

    Output shape:
        3D tensor `(batch, H' * W' * channels * depth_multiplier /
        capsule_dim, capsule_dim)`.

    Example:

    >>> import numpy as np
    >>> layer = keras_capsules.layers.DepthwisePrimaryCapsule(8, kernel_size=9)
    >>> capsules = layer(np.zeros((2, 9, 9, 128), dtype="float32"))
    >>> tuple(capsules.shape)
    (2, 16, 8)

    Reference:
        - [Mazzia, Salvetti & Chiaberge, 2021. Efficient-CapsNet: capsule
          network with self-attention routing](https://arxiv.org/abs/2101.12491)
    """

    def __init__(
        self,
        capsule_dim: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = 1,
        padding: str = "valid",
        depth_multiplier: int = 1,
        data_format: str | None = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        # Checked here rather than by DepthwiseConv2D, whose messages do not
        # all name the argument.
        super().__init__(
            kernel_size=normalize_pair("kernel_size", kernel_size),
            strides=normalize_pair("strides", strides),
            padding=check_padding(padding),
            depth_multiplier=check_positive_int("depth_multiplier", depth_multiplier),
            data_format=check_data_format(data_format),
            use_bias=bool(use_bias),
            depthwise_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            depthwise_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            depthwise_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self.capsule_dim = check_positive_int("capsule_dim", capsule_dim)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def kernel_initializer(self) -> Any:
        return self.depthwise_initializer

    @property
    def kernel_regularizer(self) -> Any:
        return self.depthwise_regularizer

    @property
    def kernel_constraint(self) -> Any:
        return self.depthwise_constraint

    def _channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = input_shape[self._channel_axis()] if len(input_shape) == 4 else None
        if channels is None:
            raise ValueError(
                "`DepthwisePrimaryCapsule` expects a 4D input with a known "
                f"channel dimension. Received: input_shape={tuple(input_shape)}"
            )
        # DepthwiseConv2D checks the spatial size and the capsule split
        # (through compute_output_shape) before it makes any weight.
        super().build(input_shape)
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={self._channel_axis(): channels}
        )

    def _window_covers_input(self, input_shape: tuple[int | None, ...]) -> bool:
        spatial = (
            input_shape[1:3]
            if self.data_format == "channels_last"
            else input_shape[2:4]
        )
        return self.padding == "valid" and tuple(spatial) == self.kernel_size

    def call(self, inputs: Any) -> Any:
        num_capsules = self.compute_output_shape(inputs.shape)[1]
        if self._window_covers_input(inputs.shape):
            # One output position (the paper's 9x9 window on a 9x9 map): each
            # feature is a product summed over the window. XLA's CPU
            # depthwise convolution took 48 of a 91 ms JAX train step;
            # the sum, 0.4 (TensorFlow and PyTorch gain ~1 ms).
            if self.data_format == "channels_first":
                inputs = ops.transpose(inputs, (0, 2, 3, 1))
            products = ops.expand_dims(inputs, -1) * self.kernel
            features = ops.reshape(
                ops.sum(products, axis=(1, 2)),
                (-1, self.kernel.shape[2] * self.depth_multiplier),
            )
        else:
            features = ops.depthwise_conv(
                inputs,
                self.kernel,
                strides=self.strides,
                padding=self.padding,
                data_format=self.data_format,
            )
            if self.data_format == "channels_first":
                features = ops.transpose(features, (0, 2, 3, 1))
        if self.bias is not None:
            features = features + self.bias
        capsules = ops.reshape(features, (-1, num_capsules, self.capsule_dim))
        return efficient_squash(capsules)

    def compute_output_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> tuple[int | None, ...]:
        if self.data_format == "channels_last":
            spatial, channels = input_shape[1:3], input_shape[3]
        else:
            spatial, channels = input_shape[2:4], input_shape[1]
        if channels is None or None in spatial:
            raise ValueError(
                "`DepthwisePrimaryCapsule` needs the spatial size and the "
                f"channels of its input. Received: input_shape={tuple(input_shape)}"
            )
        known = [int(size) for size in spatial if size is not None]
        height, width = (
            conv_output_size(size, kernel, stride, self.padding)
            for size, kernel, stride in zip(known, self.kernel_size, self.strides)
        )
        if height == 0 or width == 0:
            raise ValueError(
                f"`DepthwisePrimaryCapsule` with kernel_size={self.kernel_size} "
                'and padding="valid" needs inputs at least that large. '
                f"Received: input_shape={tuple(input_shape)}"
            )
        features = height * width * int(channels) * self.depth_multiplier
        if features % self.capsule_dim:
            raise ValueError(
                f"`DepthwisePrimaryCapsule` makes {features} features from "
                f"input_shape={tuple(input_shape)}, which capsule_dim="
                f"{self.capsule_dim} does not divide."
            )
        return (input_shape[0], features // self.capsule_dim, self.capsule_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        # No dilation or activation here; the depthwise_* options keep the
        # kernel_* names this layer has always saved.
        for fixed in ("dilation_rate", "activation"):
            config.pop(fixed, None)
        for option in ("initializer", "regularizer", "constraint"):
            config[f"kernel_{option}"] = config.pop(f"depthwise_{option}")
        config["capsule_dim"] = self.capsule_dim
        return config
