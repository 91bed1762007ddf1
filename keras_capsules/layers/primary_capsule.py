from __future__ import annotations

import warnings
from typing import Any

import keras
from keras import ops

from keras_capsules import ops as capsule_ops
from keras_capsules._validation import (
    check_choice,
    check_positive_int,
    normalize_pair,
)
from keras_capsules.ops.convolution import (
    CONV_IMPLEMENTATIONS,
    resolve_conv_implementation,
)


@keras.saving.register_keras_serializable(package="keras_capsules")
class PrimaryCapsule(keras.layers.Layer):
    """Convolutional capsules: a 2D convolution reshaped to vectors and squashed.

    The convolution has `capsule_types * capsule_dim` filters. Every spatial
    position of its output holds one capsule of each of `capsule_types`
    types, of `capsule_dim` dimensions, so an output map of `H' x W'` gives
    `H' * W' * capsule_types` capsules, each squashed (eq. 1 of the paper).
    The weights are exactly those of a `keras.layers.Conv2D` with the same
    filters, kernel size and bias, so a `Conv2D`'s weights can be set on it.

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
        super().__init__(**kwargs)
        self.capsule_types = check_positive_int("capsule_types", capsule_types)
        self.capsule_dim = check_positive_int("capsule_dim", capsule_dim)
        self.kernel_size = normalize_pair("kernel_size", kernel_size)
        self.strides = normalize_pair("strides", strides)
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise ValueError(
                "Received an invalid value for `padding`, expected "
                f'"valid" or "same". Received: padding={padding!r}'
            )
        self.padding = padding.lower()
        if data_format is None:
            data_format = keras.config.image_data_format()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                "Received an invalid value for `data_format`, expected "
                '"channels_last" or "channels_first". '
                f"Received: data_format={data_format!r}"
            )
        self.data_format = data_format
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.conv_implementation = check_choice(
            "conv_implementation", conv_implementation, CONV_IMPLEMENTATIONS
        )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def filters(self) -> int:
        return self.capsule_types * self.capsule_dim

    def _channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 4:
            raise ValueError(
                "`PrimaryCapsule` expects a 4D input (batch, height, width, "
                f"channels). Received: input_shape={tuple(input_shape)}"
            )
        input_channels = input_shape[self._channel_axis()]
        if input_channels is None:
            raise ValueError(
                "`PrimaryCapsule` needs the channel dimension of its input to "
                f"be known. Received: input_shape={tuple(input_shape)}"
            )
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={self._channel_axis(): input_channels}
        )
        # Shape check up front, so a too-small image fails here and not
        # inside the backend's convolution.
        self.compute_output_shape(input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, input_channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None

    def call(self, inputs: Any) -> Any:
        convolution = (
            capsule_ops.space_to_depth_conv
            if resolve_conv_implementation(self.conv_implementation) == "space_to_depth"
            else ops.conv
        )
        if self.data_format == "channels_first":
            # Computed channels last: TensorFlow's CPU convolution refuses
            # NCHW (Keras 3.15 no longer routes it through XLA), and the
            # capsules are cut from channels-last features anyway.
            inputs = ops.transpose(inputs, (0, 2, 3, 1))
        features = convolution(
            inputs,
            self.kernel,
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
        )
        if self.use_bias:
            features = features + ops.reshape(self.bias, (1, 1, 1, -1))
        # A static capsule count keeps shapes known inside traced graphs
        # (tf.function), where the batch size is not.
        height, width = features.shape[1], features.shape[2]
        if height is None or width is None:
            capsules = ops.reshape(
                features, (ops.shape(features)[0], -1, self.capsule_dim)
            )
        else:
            num_capsules = height * width * self.capsule_types
            capsules = ops.reshape(features, (-1, num_capsules, self.capsule_dim))
        return capsule_ops.squash(capsules)

    def _output_spatial_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> tuple[int | None, int | None]:
        if self.data_format == "channels_last":
            spatial = input_shape[1:3]
        else:
            spatial = input_shape[2:4]
        output: list[int | None] = []
        for size, kernel, stride in zip(spatial, self.kernel_size, self.strides):
            if size is None:
                output.append(None)
            elif self.padding == "same":
                output.append((size + stride - 1) // stride)
            else:
                output.append((size - kernel) // stride + 1 if size >= kernel else 0)
        if any(size == 0 for size in output):
            raise ValueError(
                f"`PrimaryCapsule` with kernel_size={self.kernel_size} and "
                f'padding="valid" needs inputs of at least that spatial size. '
                f"Received: input_shape={tuple(input_shape)}"
            )
        return output[0], output[1]

    def compute_output_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> tuple[int | None, ...]:
        height, width = self._output_spatial_shape(input_shape)
        if height is None or width is None:
            num_output_capsules = None
        else:
            num_output_capsules = height * width * self.capsule_types
        return (input_shape[0], num_output_capsules, self.capsule_dim)

    def get_config(self) -> dict[str, Any]:
        config = {
            "capsule_types": self.capsule_types,
            "capsule_dim": self.capsule_dim,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "conv_implementation": self.conv_implementation,
        }
        return {**super().get_config(), **config}

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
