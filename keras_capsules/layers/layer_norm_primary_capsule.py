from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_capsules._validation import (
    check_choice,
    check_positive_int,
    check_positive_number,
    normalize_pair,
)


@keras.saving.register_keras_serializable(package="keras_capsules")
class LayerNormPrimaryCapsule(keras.layers.Conv2D):
    """Primary capsules of Tsai et al. (2020): a convolution cut into poses, layer-normed.

    A `keras.layers.Conv2D` with `capsule_types * capsule_dim` filters
    (its weights are exactly that layer's), whose output channels at each
    position are grouped into `capsule_types` poses of `capsule_dim`
    entries (channel `t * capsule_dim + k` is entry `k` of type `t`), each
    pose layer-normalised with a learned `gamma` and `beta` shared by all
    of them, as the authors' code does (a 1x1 convolution without bias to
    32 capsules of 16 entries, then `torch.nn.LayerNorm(16)`). The output
    keeps the grid, for `ConvInvertedAttentionCapsule`.

    Args:
        capsule_types: Capsule types per position, a positive integer (32
            in the paper).
        capsule_dim: Pose size of each capsule, a positive integer (16 in
            the paper, a 4x4 matrix).
        kernel_size: Size of the convolution window, an integer or a pair.
            Defaults to `1`, the authors'.
        strides: Strides of the convolution. Defaults to `1`.
        padding: `"valid"` or `"same"`. Defaults to `"valid"`.
        data_format: `"channels_last"` or `"channels_first"` for the input
            images; the capsule grid is always channels last. Defaults to
            `keras.config.image_data_format()`.
        use_bias: Whether the convolution adds a bias. Defaults to `False`,
            the authors'.
        epsilon: The layer norm's variance floor, a positive number.
            Defaults to `1e-5`.
        **kwargs: The other arguments of `keras.layers.Conv2D`
            (initializers, regularizers, constraints, `dilation_rate`) and
            base layer keyword arguments such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch, height, width, channels)` (channels last) or
        `(batch, channels, height, width)` (channels first).

    Output shape:
        5D tensor `(batch, out_h, out_w, capsule_types, capsule_dim)`.

    Example:

    >>> import numpy as np
    >>> layer = keras_capsules.layers.LayerNormPrimaryCapsule(32, 16)
    >>> poses = layer(np.random.rand(2, 16, 16, 128).astype("float32"))
    >>> tuple(poses.shape)
    (2, 16, 16, 32, 16)

    Reference:
        - [Tsai, Srivastava, Goh & Salakhutdinov, 2020. Capsules with
          Inverted Dot-Product Attention Routing](https://arxiv.org/abs/2002.04764)
    """

    def __init__(
        self,
        capsule_types: int,
        capsule_dim: int,
        kernel_size: int | tuple[int, int] = 1,
        strides: int | tuple[int, int] = 1,
        padding: str = "valid",
        data_format: str | None = None,
        use_bias: bool = False,
        epsilon: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        capsule_types = check_positive_int("capsule_types", capsule_types)
        capsule_dim = check_positive_int("capsule_dim", capsule_dim)
        kwargs.pop("filters", None)
        # Checked here so that every error names the argument and its value.
        kernel_size = normalize_pair("kernel_size", kernel_size)
        strides = normalize_pair("strides", strides)
        padding = check_choice("padding", padding, ("valid", "same"))
        if data_format is not None:
            check_choice(
                "data_format", data_format, ("channels_last", "channels_first")
            )
        super().__init__(
            filters=capsule_types * capsule_dim,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            use_bias=use_bias,
            **kwargs,
        )
        self.capsule_types = capsule_types
        self.capsule_dim = capsule_dim
        self.epsilon = check_positive_number("epsilon", epsilon)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 4:
            raise ValueError(
                "`LayerNormPrimaryCapsule` expects a 4D input (batch, height, "
                f"width, channels). Received: input_shape={tuple(input_shape)}"
            )
        # A too-small image fails here (Keras's message names the shapes), and
        # not inside the backend's convolution.
        self.compute_output_shape(input_shape)
        super().build(input_shape)
        self.gamma = self.add_weight(
            name="gamma", shape=(self.capsule_dim,), initializer="ones"
        )
        self.beta = self.add_weight(
            name="beta", shape=(self.capsule_dim,), initializer="zeros"
        )

    def call(self, inputs: Any) -> Any:
        features = super().call(inputs)
        if self.data_format == "channels_first":
            features = ops.transpose(features, (0, 2, 3, 1))
        height, width = features.shape[1], features.shape[2]
        poses = ops.reshape(
            features, (-1, height, width, self.capsule_types, self.capsule_dim)
        )
        if self.capsule_dim == 1:
            return poses
        return ops.layer_normalization(
            poses, gamma=self.gamma, beta=self.beta, axis=-1, epsilon=self.epsilon
        )

    def compute_output_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> tuple[int | None, ...]:
        shape = super().compute_output_shape(input_shape)
        if self.data_format == "channels_first":
            shape = (shape[0], shape[2], shape[3], shape[1])
        return (shape[0], shape[1], shape[2], self.capsule_types, self.capsule_dim)

    # `Conv2D` saves its kernel and bias only; the layer norm's weights are
    # saved and loaded with them the way every Keras layer does it.
    def save_own_variables(self, store: Any) -> None:
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store: Any) -> None:
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["filters"]
        config.update(
            {
                "capsule_types": self.capsule_types,
                "capsule_dim": self.capsule_dim,
                "epsilon": self.epsilon,
            }
        )
        return config
