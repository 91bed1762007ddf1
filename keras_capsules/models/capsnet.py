from __future__ import annotations

import warnings
from typing import Any

import keras
from keras import ops

from keras_capsules._validation import (
    check_choice,
    check_positive_int,
    check_positive_ints,
    shapes_compatible,
)
from keras_capsules.layers import Length, Mask, PrimaryCapsule, RoutingCapsule
from keras_capsules.ops.convolution import CONV_IMPLEMENTATIONS

# Old argument names, kept working with a warning; saved configs map silently.
RENAMED_ARGUMENTS = {
    "input_shape": "image_shape",
    "decoder": "use_decoder",
    "primary_capsules": "primary_capsule_types",
}


def rename_arguments(cls_name: str, kwargs: dict[str, Any], warn: bool) -> None:
    """Moves old keyword arguments of a model to their new names, in place."""
    for old, new in RENAMED_ARGUMENTS.items():
        if old not in kwargs:
            continue
        if new in kwargs:
            raise ValueError(
                f"Pass `{new}` only: `{old}` is its old name. Received both: "
                f"{new}={kwargs[new]!r}, {old}={kwargs[old]!r}"
            )
        if warn:
            warnings.warn(
                f"`{cls_name}({old}=...)` is deprecated: the argument is now `{new}`.",
                FutureWarning,
                stacklevel=3,
            )
        kwargs[new] = kwargs.pop(old)


@keras.saving.register_keras_serializable(package="keras_capsules")
class CapsNet(keras.Model):
    """The CapsNet of Sabour, Frosst & Hinton (2017), with its decoder.

    The encoder is a ReLU convolution, a `PrimaryCapsule` layer and a
    `RoutingCapsule` layer with one capsule per class; the length of each
    class capsule (`Length`) is the score of that class, trained with
    `MarginLoss`. The decoder, a reconstruction regulariser trained with
    `ReconstructionLoss`, sees the class capsules with all but one zeroed
    (`Mask`) and maps them through ReLU `Dense` layers to a sigmoid image.

    Which capsule the decoder sees depends on the inputs: when labels are
    given (`fit`, and `evaluate` or validation on `(images, labels)`) it is
    the capsule of the true class, as in the paper and CapsNet-Keras; with
    images alone (`predict(images)`) it is the longest capsule, the
    predicted class. `training` does not change the choice.

    The defaults are the paper's MNIST model: Conv 256@9x9, 32 primary
    capsule types of 8D from a 9x9 convolution of stride 2, 16D class
    capsules with 3 routing iterations, and a 512-1024 decoder; for
    `image_shape=(28, 28, 1)` and 10 classes it has 8,215,568 weights.
    The model is built when it is constructed, since `image_shape` fixes
    every weight's shape. Images are channels last.

    Args:
        image_shape: Shape of one image, `(height, width, channels)`, at
            least 17x17 with the default kernels. Defaults to
            `(28, 28, 1)`.
        num_classes: Number of classes, one capsule each. Defaults to `10`.
        routing_iterations: Routing iterations between the primary and the
            class capsules. Defaults to `3`.
        use_decoder: Whether to add the reconstruction decoder. Defaults to
            `True`.
        stop_gradient_on_agreement: Passed to `RoutingCapsule`: if `True`,
            the routing agreement updates are not back-propagated through,
            which departs from the paper. Defaults to `False`.
        conv_filters: Filters of the first convolution. Defaults to `256`.
        conv_kernel_size: Kernel size of the first convolution. Defaults
            to `9`.
        primary_capsule_types: Primary capsule types, one capsule of each
            per position. Defaults to `32`.
        primary_capsule_dim: Dimensions of a primary capsule. Defaults to
            `8`.
        primary_kernel_size: Kernel size of the primary capsules'
            convolution. Defaults to `9`.
        primary_strides: Strides of that convolution. Defaults to `2`.
        primary_conv_implementation: `"auto"`, `"direct"` or
            `"space_to_depth"`: how `PrimaryCapsule` computes that
            convolution (same result and weights; see its
            `conv_implementation`). `"auto"` is the fastest measured on the
            backend in use. Defaults to `"auto"`.
        capsule_dim: Dimensions of a class capsule. Defaults to `16`.
        decoder_units: Units of the decoder's hidden ReLU layers. Defaults
            to `(512, 1024)`.
        **kwargs: Base model keyword arguments, such as `name` and `dtype`.
            The dtype policy reaches every sublayer:
            `CapsNet(dtype="mixed_bfloat16")` computes in bfloat16 and keeps
            its weights in float32.

    The old names `input_shape`, `decoder` and `primary_capsules` still
    work, with a deprecation warning.

    Call arguments:
        inputs: Images `(batch, height, width, channels)`, or a pair
            `(images, labels)` with one-hot `labels` of shape
            `(batch, num_classes)`.
        training: Python boolean, passed to the sublayers; it does not
            change which capsule the decoder sees.

    Returns:
        With the decoder, the pair `(lengths, reconstructions)`: class
        capsule lengths `(batch, num_classes)` and images of the input
        shape; without it, the lengths alone.

    Example:

    >>> import numpy as np
    >>> import keras_capsules
    >>> model = keras_capsules.models.CapsNet()
    >>> model.count_params()
    8215568
    >>> small = keras_capsules.models.CapsNet(
    ...     image_shape=(20, 20, 3), num_classes=4, conv_filters=8,
    ...     primary_capsule_types=4, capsule_dim=6, decoder_units=(16,))
    >>> lengths, reconstructions = small(np.zeros((2, 20, 20, 3), "float32"))
    >>> tuple(lengths.shape), tuple(reconstructions.shape)
    ((2, 4), (2, 20, 20, 3))

    Training on images `x` and one-hot labels `y`:

    ```python
    model.compile(
        optimizer="adam",
        loss=[keras_capsules.losses.MarginLoss(),
              keras_capsules.losses.ReconstructionLoss()],
    )
    model.fit((x, y), (y, x), batch_size=100, epochs=10)
    ```

    Reference:
        - [Sabour, Frosst & Hinton, 2017. Dynamic Routing Between Capsules](
          https://arxiv.org/abs/1710.09829)
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (28, 28, 1),
        num_classes: int = 10,
        routing_iterations: int = 3,
        use_decoder: bool = True,
        stop_gradient_on_agreement: bool = False,
        conv_filters: int = 256,
        conv_kernel_size: int = 9,
        primary_capsule_types: int = 32,
        primary_capsule_dim: int = 8,
        primary_kernel_size: int = 9,
        primary_strides: int = 2,
        primary_conv_implementation: str = "auto",
        capsule_dim: int = 16,
        decoder_units: tuple[int, ...] = (512, 1024),
        **kwargs: Any,
    ) -> None:
        arguments = {k: kwargs.pop(k) for k in RENAMED_ARGUMENTS if k in kwargs}
        if arguments:
            rename_arguments(type(self).__name__, arguments, warn=True)
            image_shape = arguments.get("image_shape", image_shape)
            use_decoder = arguments.get("use_decoder", use_decoder)
            primary_capsule_types = arguments.get(
                "primary_capsule_types", primary_capsule_types
            )
        super().__init__(**kwargs)
        self.image_shape = check_positive_ints("image_shape", image_shape, length=3)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.routing_iterations = check_positive_int(
            "routing_iterations", routing_iterations
        )
        self.use_decoder = bool(use_decoder)
        self.stop_gradient_on_agreement = bool(stop_gradient_on_agreement)
        self.conv_filters = check_positive_int("conv_filters", conv_filters)
        self.conv_kernel_size = check_positive_int("conv_kernel_size", conv_kernel_size)
        self.primary_capsule_types = check_positive_int(
            "primary_capsule_types", primary_capsule_types
        )
        self.primary_capsule_dim = check_positive_int(
            "primary_capsule_dim", primary_capsule_dim
        )
        self.primary_kernel_size = check_positive_int(
            "primary_kernel_size", primary_kernel_size
        )
        self.primary_strides = check_positive_int("primary_strides", primary_strides)
        self.primary_conv_implementation = check_choice(
            "primary_conv_implementation",
            primary_conv_implementation,
            CONV_IMPLEMENTATIONS,
        )
        self.capsule_dim = check_positive_int("capsule_dim", capsule_dim)
        self.decoder_units = check_positive_ints("decoder_units", decoder_units)
        self._check_image_size()

        # Every sublayer computes under the model's dtype policy, as in a
        # functional model built under that policy.
        dtype = self.dtype_policy
        self.conv = keras.layers.Conv2D(
            self.conv_filters,
            self.conv_kernel_size,
            activation="relu",
            data_format="channels_last",
            dtype=dtype,
            name="conv",
        )
        self.primary_capsule = PrimaryCapsule(
            self.primary_capsule_types,
            self.primary_capsule_dim,
            kernel_size=self.primary_kernel_size,
            strides=self.primary_strides,
            data_format="channels_last",
            conv_implementation=self.primary_conv_implementation,
            dtype=dtype,
            name="primary_capsule",
        )
        self.class_capsule = RoutingCapsule(
            self.num_classes,
            self.capsule_dim,
            routing_iterations=self.routing_iterations,
            stop_gradient_on_agreement=self.stop_gradient_on_agreement,
            dtype=dtype,
            name="class_capsule",
        )
        self.length = Length(dtype=dtype, name="length")
        self.mask = Mask(dtype=dtype, name="mask")
        # The attribute names are the paths of the weights in saved models.
        self.decoder = self._make_decoder() if self.use_decoder else None
        # Read by `compile`, so that losses and metrics can be given by
        # output name and are logged as `lengths_*` / `reconstructions_*`.
        self.output_names = (
            ["lengths", "reconstructions"] if self.use_decoder else ["lengths"]
        )
        self.build((None, *self.image_shape))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        # Models saved before the renames load without a warning.
        config = dict(config)
        rename_arguments(cls.__name__, config, warn=False)
        return cls(**config)

    def _check_image_size(self) -> None:
        height, width, _ = self.image_shape
        smallest = self.conv_kernel_size + self.primary_kernel_size - 1
        if height < smallest or width < smallest:
            raise ValueError(
                "Received an invalid value for `image_shape`: with "
                f"conv_kernel_size={self.conv_kernel_size} and "
                f"primary_kernel_size={self.primary_kernel_size} images must "
                f"be at least {smallest}x{smallest}. "
                f"Received: image_shape={self.image_shape}"
            )

    def _make_decoder(self) -> keras.Sequential:
        height, width, channels = self.image_shape
        dtype = self.dtype_policy
        hidden = [
            keras.layers.Dense(
                units, activation="relu", dtype=dtype, name=f"decoder_dense_{i}"
            )
            for i, units in enumerate(self.decoder_units, start=1)
        ]
        return keras.Sequential(
            [
                *hidden,
                keras.layers.Dense(
                    height * width * channels,
                    activation="sigmoid",
                    dtype=dtype,
                    name="decoder_image",
                ),
                keras.layers.Reshape(
                    self.image_shape, dtype=dtype, name="decoder_reshape"
                ),
            ],
            name="decoder",
        )

    def build(self, input_shape: Any) -> None:
        images_shape, labels_shape = self._split_shapes(input_shape)
        self._check_images_shape(images_shape)
        if labels_shape is not None:
            self._check_labels_shape(labels_shape)
        batch = images_shape[0]
        self.conv.build((batch, *self.image_shape))
        conv_shape = self.conv.compute_output_shape((batch, *self.image_shape))
        self.primary_capsule.build(conv_shape)
        primary_shape = self.primary_capsule.compute_output_shape(conv_shape)
        self.class_capsule.build(primary_shape)
        class_shape = self.class_capsule.compute_output_shape(primary_shape)
        self.length.build(class_shape)
        self.mask.build(class_shape)
        if self.decoder is not None:
            self.decoder.build((batch, self.num_classes * self.capsule_dim))

    @staticmethod
    def _split_shapes(input_shape: Any) -> tuple[tuple, tuple | None]:
        if (
            isinstance(input_shape, (list, tuple))
            and len(input_shape) == 2
            and isinstance(input_shape[0], (list, tuple))
        ):
            return tuple(input_shape[0]), tuple(input_shape[1])
        return tuple(input_shape), None

    def _check_images_shape(self, shape: tuple) -> None:
        if len(shape) != 4 or any(
            got is not None and got != want
            for got, want in zip(shape[1:], self.image_shape, strict=True)
        ):
            raise ValueError(
                f"`CapsNet` was made for images of shape {self.image_shape} "
                "(batch, height, width, channels) and got a different shape. "
                f"Received: images.shape={shape}"
            )

    def _check_labels_shape(self, shape: tuple) -> None:
        if not shapes_compatible(shape, (None, self.num_classes)):
            raise ValueError(
                f"`CapsNet` expects one-hot labels of shape (batch, "
                f"{self.num_classes}). Received: labels.shape={shape}"
            )

    def _split_inputs(self, inputs: Any) -> tuple[Any, Any]:
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(
                    "`CapsNet` expects `images` or `(images, labels)`. "
                    f"Received {len(inputs)} inputs."
                )
            images, labels = inputs
            self._check_labels_shape(tuple(labels.shape))
        else:
            images, labels = inputs, None
        self._check_images_shape(tuple(images.shape))
        return images, labels

    def encode(self, images: Any, return_coupling: bool = False) -> Any:
        """Class capsules of `images`, `(batch, num_classes, capsule_dim)`.

        With `return_coupling=True`, also returns the coupling coefficients
        of the last routing iteration, `(batch, num_classes,
        num_primary_capsules)`, from the same routing pass.
        """
        images = ops.convert_to_tensor(images, dtype=self.compute_dtype)
        self._check_images_shape(tuple(images.shape))
        primary = self.primary_capsule(self.conv(images))
        return self.class_capsule(primary, return_coupling=return_coupling)

    def decode(self, capsules: Any, labels: Any = None) -> Any:
        """Reconstructs images from class capsules.

        Only the capsule chosen by the one-hot `labels`, or the longest
        capsule if `labels` is `None`, reaches the decoder.
        """
        if self.decoder is None:
            raise ValueError(
                "This `CapsNet` has no decoder to reconstruct images: it was "
                "made with use_decoder=False."
            )
        capsules = ops.convert_to_tensor(capsules, dtype=self.compute_dtype)
        masked = self.mask(capsules if labels is None else [capsules, labels])
        return self.decoder(masked)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        images, labels = self._split_inputs(inputs)
        capsules = self.class_capsule(self.primary_capsule(self.conv(images)))
        lengths = self.length(capsules)
        if self.decoder is None:
            return lengths
        if labels is not None:
            masked = self.mask([capsules, labels])
        else:
            masked = self.mask(capsules)
        return lengths, self.decoder(masked)

    def compute_output_shape(self, input_shape: Any) -> Any:
        images_shape, _ = self._split_shapes(input_shape)
        lengths_shape = (images_shape[0], self.num_classes)
        if self.decoder is None:
            return lengths_shape
        return lengths_shape, (images_shape[0], *self.image_shape)

    def get_config(self) -> dict[str, Any]:
        config = {
            "image_shape": self.image_shape,
            "num_classes": self.num_classes,
            "routing_iterations": self.routing_iterations,
            "use_decoder": self.use_decoder,
            "stop_gradient_on_agreement": self.stop_gradient_on_agreement,
            "conv_filters": self.conv_filters,
            "conv_kernel_size": self.conv_kernel_size,
            "primary_capsule_types": self.primary_capsule_types,
            "primary_capsule_dim": self.primary_capsule_dim,
            "primary_kernel_size": self.primary_kernel_size,
            "primary_strides": self.primary_strides,
            "primary_conv_implementation": self.primary_conv_implementation,
            "capsule_dim": self.capsule_dim,
            "decoder_units": self.decoder_units,
        }
        return {**super().get_config(), **config}
