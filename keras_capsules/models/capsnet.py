from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_capsules import ops as capsule_ops
from keras_capsules._validation import check_choice, check_positive_int
from keras_capsules.layers import Length, Mask, PrimaryCapsule, RoutingCapsule
from keras_capsules.layers.primary_capsule import CONV_IMPLEMENTATIONS


def _check_input_shape(input_shape: Any) -> tuple[int, int, int]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape
    ):
        raise ValueError(
            "Received an invalid value for `input_shape`, expected the shape "
            "of one image as 3 positive integers (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _check_units(decoder_units: Any) -> tuple[int, ...]:
    try:
        units = tuple(decoder_units)
    except TypeError:
        units = (None,)
    if not all(
        isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in units
    ):
        raise ValueError(
            "Received an invalid value for `decoder_units`, expected a "
            "sequence of positive integers. "
            f"Received: decoder_units={decoder_units!r}"
        )
    return tuple(int(u) for u in units)


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
    `input_shape=(28, 28, 1)` and 10 classes it has 8,215,568 weights.
    The model is built when it is constructed, since `input_shape` fixes
    every weight's shape. Images are channels last.

    Args:
        input_shape: Shape of one image, `(height, width, channels)`, at
            least 17x17 with the default kernels. Defaults to
            `(28, 28, 1)`.
        num_classes: Number of classes, one capsule each. Defaults to `10`.
        routing_iterations: Routing iterations between the primary and the
            class capsules. Defaults to `3`.
        decoder: Whether to add the reconstruction decoder. Defaults to
            `True`.
        stop_gradient_on_agreement: Passed to `RoutingCapsule`: if `True`,
            the routing agreement updates are not back-propagated through,
            which departs from the paper. Defaults to `False`.
        conv_filters: Filters of the first convolution. Defaults to `256`.
        conv_kernel_size: Kernel size of the first convolution. Defaults
            to `9`.
        primary_capsules: Primary capsule types per position. Defaults to
            `32`.
        primary_capsule_dim: Dimensions of a primary capsule. Defaults to
            `8`.
        primary_kernel_size: Kernel size of the primary capsules'
            convolution. Defaults to `9`.
        primary_strides: Strides of that convolution. Defaults to `2`.
        primary_conv_implementation: `"direct"` or `"space_to_depth"`, how
            `PrimaryCapsule` computes that convolution (same result and
            weights; `"space_to_depth"` trains about 10x faster with XLA on
            CPU). Defaults to `"direct"`.
        capsule_dim: Dimensions of a class capsule. Defaults to `16`.
        decoder_units: Units of the decoder's hidden ReLU layers. Defaults
            to `(512, 1024)`.
        **kwargs: Base model keyword arguments, such as `name` and `dtype`.

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
    ...     input_shape=(20, 20, 3), num_classes=4, conv_filters=8,
    ...     primary_capsules=4, capsule_dim=6, decoder_units=(16,))
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
        input_shape: tuple[int, int, int] = (28, 28, 1),
        num_classes: int = 10,
        routing_iterations: int = 3,
        decoder: bool = True,
        stop_gradient_on_agreement: bool = False,
        conv_filters: int = 256,
        conv_kernel_size: int = 9,
        primary_capsules: int = 32,
        primary_capsule_dim: int = 8,
        primary_kernel_size: int = 9,
        primary_strides: int = 2,
        primary_conv_implementation: str = "direct",
        capsule_dim: int = 16,
        decoder_units: tuple[int, ...] = (512, 1024),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Named `image_shape`, not `input_shape`: on Keras models that name
        # means the shape with the batch axis.
        self.image_shape = _check_input_shape(input_shape)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.routing_iterations = check_positive_int(
            "routing_iterations", routing_iterations
        )
        self.stop_gradient_on_agreement = bool(stop_gradient_on_agreement)
        self.conv_filters = check_positive_int("conv_filters", conv_filters)
        self.conv_kernel_size = check_positive_int("conv_kernel_size", conv_kernel_size)
        self.primary_capsules = check_positive_int("primary_capsules", primary_capsules)
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
        self.decoder_units = _check_units(decoder_units)
        self._check_image_size()

        self.conv = keras.layers.Conv2D(
            self.conv_filters,
            self.conv_kernel_size,
            activation="relu",
            data_format="channels_last",
            name="conv",
        )
        self.primary_capsule = PrimaryCapsule(
            self.primary_capsules,
            self.primary_capsule_dim,
            kernel_size=self.primary_kernel_size,
            strides=self.primary_strides,
            data_format="channels_last",
            conv_implementation=self.primary_conv_implementation,
            name="primary_capsule",
        )
        self.class_capsule = RoutingCapsule(
            self.num_classes,
            self.capsule_dim,
            routing_iterations=self.routing_iterations,
            stop_gradient_on_agreement=self.stop_gradient_on_agreement,
            name="class_capsule",
        )
        self.length = Length(name="length")
        self.mask = Mask(name="mask")
        self.decoder = self._make_decoder() if decoder else None
        # Read by `compile`, so that losses and metrics can be given by
        # output name and are logged as `lengths_*` / `reconstructions_*`.
        self.output_names = (
            ["lengths", "reconstructions"] if self.decoder is not None else ["lengths"]
        )
        self.build((None, *self.image_shape))

    def _check_image_size(self) -> None:
        height, width, _ = self.image_shape
        smallest = self.conv_kernel_size + self.primary_kernel_size - 1
        if height < smallest or width < smallest:
            raise ValueError(
                "Received an invalid value for `input_shape`: with "
                f"conv_kernel_size={self.conv_kernel_size} and "
                f"primary_kernel_size={self.primary_kernel_size} images must "
                f"be at least {smallest}x{smallest}. "
                f"Received: input_shape={self.image_shape}"
            )

    def _make_decoder(self) -> keras.Sequential:
        height, width, channels = self.image_shape
        hidden = [
            keras.layers.Dense(units, activation="relu", name=f"decoder_dense_{i}")
            for i, units in enumerate(self.decoder_units, start=1)
        ]
        return keras.Sequential(
            [
                *hidden,
                keras.layers.Dense(
                    height * width * channels,
                    activation="sigmoid",
                    name="decoder_image",
                ),
                keras.layers.Reshape(self.image_shape, name="decoder_reshape"),
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
        if len(shape) != 2 or shape[1] not in (None, self.num_classes):
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
        num_primary_capsules)`.
        """
        images = ops.convert_to_tensor(images, dtype=self.compute_dtype)
        self._check_images_shape(tuple(images.shape))
        primary = self.primary_capsule(self.conv(images))
        if not return_coupling:
            return self.class_capsule(primary)
        # The coupling is internal to `RoutingCapsule`, so the same routing
        # is rerun here with the layer's own weights to expose it.
        kernel = ops.cast(self.class_capsule.kernel, self.compute_dtype)
        return capsule_ops.routing_by_agreement(
            capsule_ops.capsule_predictions(primary, kernel),
            self.routing_iterations,
            stop_gradient_on_agreement=self.stop_gradient_on_agreement,
            return_coupling=True,
        )

    def decode(self, capsules: Any, labels: Any = None) -> Any:
        """Reconstructs images from class capsules.

        Only the capsule chosen by the one-hot `labels`, or the longest
        capsule if `labels` is `None`, reaches the decoder.
        """
        if self.decoder is None:
            raise ValueError(
                "This `CapsNet` has no decoder to reconstruct images: it was "
                "made with decoder=False."
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
            "input_shape": self.image_shape,
            "num_classes": self.num_classes,
            "routing_iterations": self.routing_iterations,
            "decoder": self.decoder is not None,
            "stop_gradient_on_agreement": self.stop_gradient_on_agreement,
            "conv_filters": self.conv_filters,
            "conv_kernel_size": self.conv_kernel_size,
            "primary_capsules": self.primary_capsules,
            "primary_capsule_dim": self.primary_capsule_dim,
            "primary_kernel_size": self.primary_kernel_size,
            "primary_strides": self.primary_strides,
            "primary_conv_implementation": self.primary_conv_implementation,
            "capsule_dim": self.capsule_dim,
            "decoder_units": self.decoder_units,
        }
        return {**super().get_config(), **config}
