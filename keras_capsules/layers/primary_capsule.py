from __future__ import annotations

import warnings
from typing import Any

import keras
from keras import ops

from keras_capsules import ops as capsule_ops
from keras_capsules._validation import (
    check_choice,
    check_data_format,
    check_padding,
    check_positive_int,
    normalize_pair,
)
from keras_capsules.ops.convolution import (
    CONV_IMPLEMENTATIONS,
    conv_output_size,
    resolve_conv_implementation,
)


@keras.saving.register_keras_serializable(package="keras_capsules")
class PrimaryCapsule(keras.layers.Conv2D):
    """Convolutional capsules: a 2D convolution reshaped to vectors and squashed.

    The convolution has `capsule_types * capsule_dim` filters. Every spatial
    position of its output holds one capsule of each of `capsule_types`
    types, of `capsule_dim` dimensions, so an output map of `H' x W'` gives
    `H' * W' * capsule_types` capsules, each squashed (eq. 1 of the paper).
    The layer is a `keras.layers.Conv2D` of `capsule_types * capsule_dim`
    filters (its `filters`), with the same weights, initializers,
    regularizers, constraints and LoRA support; only the output differs.

    Args:
        capsule_types: Capsule types, one capsule of each per spatial
            position, a positive integer (32 in the paper). Was called
            `num_capsules`, a keyword that still works with a deprecation
            warning (in the other layers `num_capsules` counts all output
            capsules).
        capsule_dim: Dimensions of each capsule, a positive integer (8 in
            the paper).
        kernel_size: Size of the convolution window, an integer or a tuple
            of 2 integers.
        strides: Strides of the convolution, an integer or a tuple of 2
            integers. Defaults to `1`.
        padding: `"valid"` or `"same"`. Defaults to `"valid"`.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        use_bias: Whether the convolution adds a bias. Defaults to `True`.
        kernel_initializer: Initializer for the convolution kernel. Defaults
            to `"glorot_uniform"`.
        bias_initializer: Initializer for the bias. Defaults to `"zeros"`.
        kernel_regularizer: Optional regularizer for the kernel.
        bias_regularizer: Optional regularizer for the bias.
        kernel_constraint: Optional constraint for the kernel.
        bias_constraint: Optional constraint for the bias.
        conv_implementation: How the convolution is computed, with the same
            result and weights either way: `"direct"` (the backend's strided
            convolution), `"space_to_depth"` (a stride-1 convolution of
            rearranged inputs, `keras_capsules.ops.space_to_depth_conv`,
            which trains about 10x faster with XLA on CPU: JAX, TensorFlow
            with `jit_compile=True`, and slightly slower elsewhere), or
            `"auto"`, the measured-fastest for the backend in use
            (`keras_capsules.ops.convolution.FASTEST_CONV_IMPLEMENTATION`).
            Defaults to `"auto"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch, height, width, channels)` (channels last) or
        `(batch, channels, height, width)` (channels first).

    Output shape:
        3D tensor `(batch, H' * W' * capsule_types, capsule_dim)`, with
        capsules ordered by row, column, then capsule type.

    Example:

    >>> import numpy as np
    >>> layer = keras_capsules.layers.PrimaryCapsule(32, 8, kernel_size=9, strides=2)
    >>> capsules = layer(np.zeros((2, 20, 20, 256), dtype="float32"))
    >>> tuple(capsules.shape)
    (2, 1152, 8)

    Reference:
        - [Sabour, Frosst & Hinton, 2017](https://arxiv.org/abs/1710.09829)
    """

    def __init__(
        self,
        capsule_types: int | None = None,
        capsule_dim: int | None = None,
        kernel_size: int | tuple[int, int] | None = None,
        strides: int | tuple[int, int] = 1,
        padding: str = "valid",
        data_format: str | None = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        conv_implementation: str = "auto",
        **kwargs: Any,
    ) -> None:
        if "num_capsules" in kwargs:
            if capsule_types is not None:
                raise ValueError(
                    "Pass `capsule_types` only: `num_capsules` is its old name. "
                    f"Received: capsule_types={capsule_types!r}, "
                    f"num_capsules={kwargs['num_capsules']!r}"
                )
            warnings.warn(
                "`PrimaryCapsule(num_capsules=...)` is deprecated: the argument "
                "is now `capsule_types` (capsule types per position).",
                FutureWarning,
                stacklevel=2,
            )
            capsule_types = kwargs.pop("num_capsules")
        capsule_types = check_positive_int("capsule_types", capsule_types)
        capsule_dim = check_positive_int("capsule_dim", capsule_dim)
        # Checked here rather than by Conv2D, whose messages do not all name
        # the argument and which also accepts explicit padding lists.
        super().__init__(
            filters=capsule_types * capsule_dim,
            kernel_size=normalize_pair("kernel_size", kernel_size),
            strides=normalize_pair("strides", strides),
            padding=check_padding(padding),
            data_format=check_data_format(data_format),
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self.capsule_types = capsule_types
        self.capsule_dim = capsule_dim
        self.conv_implementation = check_choice(
            "conv_implementation", conv_implementation, CONV_IMPLEMENTATIONS
        )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 4:
            raise ValueError(
                "`PrimaryCapsule` expects a 4D input (batch, height, width, "
                f"channels). Received: input_shape={tuple(input_shape)}"
            )
        channel_axis = -1 if self.data_format == "channels_last" else 1
        if input_shape[channel_axis] is None:
            raise ValueError(
                "`PrimaryCapsule` needs the channel dimension of its input to "
                f"be known. Received: input_shape={tuple(input_shape)}"
            )
        super().build(input_shape)
        # Conv2D asks only for at least 4 dimensions.
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={channel_axis: input_shape[channel_axis]}
        )

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        """The convolution of channels-last `inputs`, as `conv_implementation` says."""
        if resolve_conv_implementation(self.conv_implementation) == "space_to_depth":
            convolution = capsule_ops.space_to_depth_conv
        else:
            convolution = ops.conv
        return convolution(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
        )

    def call(self, inputs: Any) -> Any:
        if self.data_format == "channels_first":
            # Computed channels last: TensorFlow's CPU convolution refuses
            # NCHW (Keras 3.15 no longer routes it through XLA), and the
            # capsules are cut from channels-last features anyway.
            inputs = ops.transpose(inputs, (0, 2, 3, 1))
        features = self.convolution_op(inputs, self.kernel)
        if self.use_bias:
            features = ops.add(features, self.bias)
        # A static capsule count keeps shapes known inside traced graphs
        # (tf.function), where the batch size is not.
        num_capsules = self._num_capsules(tuple(inputs.shape[1:3]), inputs.shape)
        if num_capsules is None:
            capsules = ops.reshape(
                features, (ops.shape(features)[0], -1, self.capsule_dim)
            )
        else:
            capsules = ops.reshape(features, (-1, num_capsules, self.capsule_dim))
        return capsule_ops.squash(capsules)

    def compute_output_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> tuple[int | None, ...]:
        if self.data_format == "channels_last":
            spatial = input_shape[1:3]
        else:
            spatial = input_shape[2:4]
        num_capsules = self._num_capsules(spatial, input_shape)
        return (input_shape[0], num_capsules, self.capsule_dim)

    def _num_capsules(
        self, spatial: tuple[int | None, ...], input_shape: tuple[int | None, ...]
    ) -> int | None:
        height, width = (
            conv_output_size(size, kernel, stride, self.padding)
            for size, kernel, stride in zip(spatial, self.kernel_size, self.strides)
        )
        if height == 0 or width == 0:
            raise ValueError(
                f"`PrimaryCapsule` with kernel_size={self.kernel_size} and "
                f'padding="valid" needs inputs of at least that spatial size. '
                f"Received: input_shape={tuple(input_shape)}"
            )
        if height is None or width is None:
            return None
        return height * width * self.capsule_types

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        # What Conv2D has and this layer fixes: the filters follow from the
        # capsules, and there is no dilation, grouping or activation.
        for fixed in ("filters", "dilation_rate", "groups", "activation"):
            config.pop(fixed, None)
        config.update(
            capsule_types=self.capsule_types,
            capsule_dim=self.capsule_dim,
            conv_implementation=self.conv_implementation,
        )
        return config

    @property
    def num_capsules(self) -> int:
        """Deprecated: the number of capsule types, now `capsule_types`."""
        return self.capsule_types

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PrimaryCapsule:
        # Models saved before the rename load without a warning.
        config = dict(config)
        if "num_capsules" in config and "capsule_types" not in config:
            config["capsule_types"] = config.pop("num_capsules")
        return cls(**config)
