from __future__ import annotations

from typing import Any

import keras

from keras_capsules._validation import (
    check_choice,
    check_positive_int,
)
from keras_capsules.layers import PrimaryCapsule, RoutingCapsule
from keras_capsules.models.base_capsule_classifier import (
    BaseCapsuleClassifier,
    resolve_renamed_arguments,
)
from keras_capsules.models.training_recipe import TrainingRecipe
from keras_capsules.ops.convolution import CONV_IMPLEMENTATIONS


@keras.saving.register_keras_serializable(package="keras_capsules")
class CapsNet(BaseCapsuleClassifier):
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
            no gradient flows through the routing's agreement updates (the
            weighted sums still back-propagate), which departs from the
            paper. Defaults to `False`.
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
        inputs: Images `(batch, height, width, channels)`. (The pair
            `(images, labels)` of v0.1, with one-hot labels, still gives
            `(lengths, reconstructions)`, with a deprecation warning.)
        training: Python boolean, passed to the sublayers.
        return_coupling: Whether to return the coupling coefficients of
            the last routing iteration too. Defaults to `False`.

    Returns:
        The class capsule lengths `(batch, num_classes)`, the class
        scores; with `return_coupling=True`, the pair `(lengths,
        coupling)`, the coupling of shape `(batch, num_classes,
        num_primary_capsules)`. `decode(encode(images), labels)`
        reconstructs images.

    Example:

    >>> import numpy as np
    >>> import keras_capsules
    >>> model = keras_capsules.models.CapsNet()
    >>> model.count_params()
    8215568
    >>> small = keras_capsules.models.CapsNet(
    ...     image_shape=(20, 20, 3), num_classes=4, conv_filters=8,
    ...     primary_capsule_types=4, capsule_dim=6, decoder_units=(16,))
    >>> images = np.zeros((2, 20, 20, 3), "float32")
    >>> tuple(small(images).shape)
    (2, 4)
    >>> tuple(small.decode(small.encode(images), labels=[0, 3]).shape)
    (2, 20, 20, 3)

    Training on images `x` and integer labels `y` with the paper's recipe
    (Adam 1e-3 decayed by 0.9 per epoch, margin loss plus 0.0005 times the
    sum of squared errors of the true class's reconstruction):

    ```python
    model.compile()
    model.fit(x, y, batch_size=100, epochs=10)
    ```

    Reference:
        - [Sabour, Frosst & Hinton, 2017. Dynamic Routing Between Capsules](
          https://arxiv.org/abs/1710.09829)
    """

    recipe = TrainingRecipe(
        learning_rate=1e-3,
        decay_per_epoch=0.9,
        batch_size=100,
        epochs=10,
        reconstruction_weight=0.0005,
        source="Sabour et al. (2017) and CapsNet-Keras: Adam 1e-3 decayed by 0.9 "
        "per epoch, batch 100, margin loss plus 0.0005 x the sum of squared "
        "pixel errors",
    )

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
        renamed = resolve_renamed_arguments(
            self,
            kwargs,
            image_shape=image_shape,
            use_decoder=use_decoder,
            primary_capsule_types=primary_capsule_types,
        )
        image_shape = renamed["image_shape"]
        use_decoder = renamed["use_decoder"]
        primary_capsule_types = renamed["primary_capsule_types"]
        super().__init__(
            image_shape=image_shape,
            num_classes=num_classes,
            capsule_dim=capsule_dim,
            use_decoder=use_decoder,
            decoder_units=decoder_units,
            **kwargs,
        )
        self.routing_iterations = check_positive_int(
            "routing_iterations", routing_iterations
        )
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
        self._check_image_size()

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
        self._make_heads()

    def _check_image_size(self) -> None:
        self._grid_after(
            [
                (self.conv_kernel_size, 1, "valid"),
                (self.primary_kernel_size, self.primary_strides, "valid"),
            ],
            f"conv_kernel_size={self.conv_kernel_size} and "
            f"primary_kernel_size={self.primary_kernel_size}",
        )

    def build_encoder(self, images_shape: tuple) -> tuple:
        self.conv.build(images_shape)
        conv_shape = self.conv.compute_output_shape(images_shape)
        self.primary_capsule.build(conv_shape)
        primary_shape = self.primary_capsule.compute_output_shape(conv_shape)
        self.class_capsule.build(primary_shape)
        return self.class_capsule.compute_output_shape(primary_shape)

    def encode(
        self, images: Any, return_coupling: bool = False, training: bool | None = None
    ) -> Any:
        """Class capsules of `images`, `(batch, num_classes, capsule_dim)`.

        With `return_coupling=True`, also returns the coupling coefficients
        of the last routing iteration, `(batch, num_classes,
        num_primary_capsules)`, from the same routing pass.
        """
        primary = self.primary_capsule(self.conv(self._images(images)))
        return self.class_capsule(primary, return_coupling=return_coupling)

    def get_config(self) -> dict[str, Any]:
        config = {
            "routing_iterations": self.routing_iterations,
            "stop_gradient_on_agreement": self.stop_gradient_on_agreement,
            "conv_filters": self.conv_filters,
            "conv_kernel_size": self.conv_kernel_size,
            "primary_capsule_types": self.primary_capsule_types,
            "primary_capsule_dim": self.primary_capsule_dim,
            "primary_kernel_size": self.primary_kernel_size,
            "primary_strides": self.primary_strides,
            "primary_conv_implementation": self.primary_conv_implementation,
        }
        return {**super().get_config(), **config}
