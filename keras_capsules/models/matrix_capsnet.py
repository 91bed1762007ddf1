from __future__ import annotations

from typing import Any

import keras

from keras_capsules._validation import (
    check_positive_int,
    check_positive_ints,
    check_positive_number,
)
from keras_capsules.callbacks import SpreadMarginSchedule
from keras_capsules.layers import (
    ClassMatrixCapsule,
    ConvMatrixCapsule,
    PrimaryMatrixCapsule,
)
from keras_capsules.losses import SpreadLoss
from keras_capsules.models.capsule_classifier import CapsuleClassifier
from keras_capsules.models.training_recipe import TrainingRecipe


@keras.saving.register_keras_serializable(package="keras_capsules")
class MatrixCapsNet(CapsuleClassifier):
    """The smallNORB network of Hinton, Sabour & Frosst (2018), EM routing.

    A ReLU convolution (A channels, 5x5, stride 2), primary matrix capsules
    (`PrimaryMatrixCapsule`, B types, 1x1), two convolutional capsule layers
    (`ConvMatrixCapsule`, C and D types, 3x3, strides 2 and 1) and class
    capsules with coordinate addition (`ClassMatrixCapsule`), every capsule
    a 4x4 pose matrix and an activation, routed by EM (2 iterations by
    default; the paper's 3 do not learn yet, see `keras_capsules.ops.em_routing`). The
    output is the class activations, in `(0, 1)`: train them with
    `keras_capsules.losses.SpreadLoss` and
    `keras_capsules.callbacks.SpreadMarginSchedule`. Every padding is
    "valid", so 32x32 images give 14x14, 6x6 and 4x4 capsule grids as in
    the paper's figure 1 (the IBM code pads the first convolution "same":
    16x16, 7x7, 5x5; the weights are the same). Images are channels last;
    there is no decoder. The model is built when it is constructed.

    With the defaults, A = B = C = D = 32 and 5 classes, it has 316,394
    trainable weights: the convolution 832 (5*5*1*32 + 32), the primary
    capsules 17,952 (poses 32*512 + 512, activations 32*32 + 32), each
    convolutional capsule layer 147,520 (3*3*32*32 transformation matrices
    of 4x4 = 147,456, plus `beta_u` and `beta_a` for each of its 32 output
    types) and the class capsules 2,570 (32*5 matrices = 2,560, plus 5
    `beta_u` and 5 `beta_a`). The paper gives "about 310K"; its smaller
    model (A=64, B=8, C=D=16) has 67,154 weights here for the paper's
    "about 68K", so both figures are rounded (one down, one up) rather than
    a different architecture. The betas, 138 weights in all, are one pair
    per output type as in the IBM code; the paper does not say.

    The EM cost grows with `-log sigma`, so votes that agree closely (small
    poses, or a uniform image background) give activations near 1. With
    `final_inverse_temperature=1.0` (the IBM code's `final_lambda=0.01`, up
    to its factor of 100) the class activations of a fresh model saturate:
    on 16 MNIST digits padded to 32x32 they are 0.957-1.000 (mean 0.994)
    with the defaults, and the spread loss, which needs a margin between
    them, barely moves them. The default is therefore `0.1`, which starts
    them at 0.56-0.70 (mean 0.61); the paper's small model on 28x28 digits
    starts at 0.51-0.81 instead of 0.60-1.00.

    Args:
        image_shape: Shape of one image, `(height, width, channels)`.
            Defaults to `(32, 32, 1)`, smallNORB's crops.
        num_classes: Number of classes, one class capsule each. Defaults
            to `5`.
        conv_filters: Channels A of the ReLU convolution. Defaults to `32`.
        conv_kernel_size: Its kernel size. Defaults to `5`.
        conv_strides: Its strides. Defaults to `2`.
        primary_capsule_types: Primary capsule types B. Defaults to `32`.
        conv_capsule_types: Types of each convolutional capsule layer, one
            layer per entry. Defaults to `(32, 32)`, C and D.
        conv_capsule_kernel_sizes: Kernel size of each of those layers.
            Defaults to `(3, 3)`.
        conv_capsule_strides: Strides of each of those layers. Defaults to
            `(2, 1)`.
        pose_size: Entries of every pose matrix, a perfect square. Defaults
            to `16` (4x4).
        routing_iterations: EM iterations of every routing layer. Defaults
            to `2` (one E-step), as yl-1993's implementation: on 3,000 MNIST
            images the small model reached 66 % test accuracy with 2 and
            17 % with the paper's 3, whose second E-step fits parents to
            single children.
        final_inverse_temperature: `lambda_final` of every routing layer's
            inverse temperature schedule. Defaults to `0.1`.
        use_coordinate_addition: Whether the class capsules use coordinate
            addition. Defaults to `True`.
        **kwargs: Base model keyword arguments, such as `name` and `dtype`.
            The dtype policy reaches every sublayer; the routing statistics
            stay in float32 under mixed precision.

    Call arguments:
        inputs: Images `(batch, height, width, channels)`.
        training: Python boolean, passed to the sublayers.
        return_coupling: Whether to return the EM assignments of the class
            capsule layer's last iteration too. Defaults to `False`.

    Returns:
        Class activations `(batch, num_classes)`, the class scores; with
        `return_coupling=True`, the pair `(activations, assignments)`.

    `compile()` with no arguments uses the spread loss and Adam of the
    model's `recipe`, and `fit` then grows the spread loss's margin from
    0.2 to 0.9 over the epochs (`SpreadMarginSchedule`).

    Example:

    >>> import numpy as np
    >>> model = keras_capsules.models.MatrixCapsNet()
    >>> model.count_params()
    316394
    >>> small = keras_capsules.models.MatrixCapsNet(
    ...     conv_filters=4, primary_capsule_types=4, conv_capsule_types=(4, 4))
    >>> tuple(small(np.zeros((2, 32, 32, 1), "float32")).shape)
    (2, 5)

    Reference:
        - [Hinton, Sabour & Frosst, 2018. Matrix capsules with EM routing](
          https://openreview.net/forum?id=HJWLfGWRb)
    """

    recipe = TrainingRecipe(
        learning_rate=3e-3,
        batch_size=24,
        epochs=10,
        source="Hinton et al. (2018) with the spread-loss margin grown from 0.2 "
        "to 0.9; Adam 3e-3 and batch 24 measured on short MNIST runs",
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (32, 32, 1),
        num_classes: int = 5,
        conv_filters: int = 32,
        conv_kernel_size: int = 5,
        conv_strides: int = 2,
        primary_capsule_types: int = 32,
        conv_capsule_types: tuple[int, ...] = (32, 32),
        conv_capsule_kernel_sizes: tuple[int, ...] = (3, 3),
        conv_capsule_strides: tuple[int, ...] = (2, 1),
        pose_size: int = 16,
        routing_iterations: int = 2,
        final_inverse_temperature: float = 0.1,
        use_coordinate_addition: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
        self.conv_filters = check_positive_int("conv_filters", conv_filters)
        self.conv_kernel_size = check_positive_int("conv_kernel_size", conv_kernel_size)
        self.conv_strides = check_positive_int("conv_strides", conv_strides)
        self.primary_capsule_types = check_positive_int(
            "primary_capsule_types", primary_capsule_types
        )
        self.conv_capsule_types = check_positive_ints(
            "conv_capsule_types", conv_capsule_types
        )
        layers = len(self.conv_capsule_types)
        self.conv_capsule_kernel_sizes = check_positive_ints(
            "conv_capsule_kernel_sizes", conv_capsule_kernel_sizes, length=layers
        )
        self.conv_capsule_strides = check_positive_ints(
            "conv_capsule_strides", conv_capsule_strides, length=layers
        )
        self.routing_iterations = check_positive_int(
            "routing_iterations", routing_iterations
        )
        self.final_inverse_temperature = check_positive_number(
            "final_inverse_temperature", final_inverse_temperature
        )
        self.use_coordinate_addition = bool(use_coordinate_addition)
        self._check_image_size()

        dtype = self.dtype_policy
        routing = dict(
            routing_iterations=self.routing_iterations,
            final_inverse_temperature=self.final_inverse_temperature,
            dtype=dtype,
        )
        self.conv = keras.layers.Conv2D(
            self.conv_filters,
            self.conv_kernel_size,
            strides=self.conv_strides,
            activation="relu",
            data_format="channels_last",
            dtype=dtype,
            name="conv",
        )
        self.primary_capsule = PrimaryMatrixCapsule(
            self.primary_capsule_types,
            pose_size=pose_size,
            dtype=dtype,
            name="primary_capsule",
        )
        self.pose_size = self.primary_capsule.pose_size
        self.conv_capsules = [
            ConvMatrixCapsule(
                types,
                kernel_size=size,
                strides=stride,
                name=f"conv_capsule_{k}",
                **routing,
            )
            for k, (types, size, stride) in enumerate(
                zip(
                    self.conv_capsule_types,
                    self.conv_capsule_kernel_sizes,
                    self.conv_capsule_strides,
                ),
                start=1,
            )
        ]
        self.class_capsule = ClassMatrixCapsule(
            self.num_classes,
            use_coordinate_addition=self.use_coordinate_addition,
            name="class_capsule",
            **routing,
        )
        self.build((None, *self.image_shape))

    def _check_image_size(self) -> None:
        kernels = (self.conv_kernel_size, 1, *self.conv_capsule_kernel_sizes)
        strides = (self.conv_strides, 1, *self.conv_capsule_strides)
        self._grid_after(
            [(kernel, stride, "valid") for kernel, stride in zip(kernels, strides)],
            f"conv_kernel_size={self.conv_kernel_size}, "
            f"conv_strides={self.conv_strides}, "
            f"conv_capsule_kernel_sizes={self.conv_capsule_kernel_sizes} and "
            f"conv_capsule_strides={self.conv_capsule_strides}",
        )

    def build_encoder(self, images_shape: tuple) -> Any:
        self.conv.build(images_shape)
        shape = self.conv.compute_output_shape(images_shape)
        self.primary_capsule.build(shape)
        shapes = self.primary_capsule.compute_output_shape(shape)
        for layer in (*self.conv_capsules, self.class_capsule):
            layer.build(list(shapes))
            shapes = layer.compute_output_shape(list(shapes))
        return shapes

    def encode(
        self, images: Any, return_coupling: bool = False, training: bool | None = None
    ) -> Any:
        """The class capsules of `images`: poses `(batch, num_classes,
        pose_size)` and activations `(batch, num_classes)`.

        With `return_coupling=True`, also the assignments of the class
        capsule layer's last EM iteration, from the same pass.
        """
        capsules = self.primary_capsule(self.conv(self._images(images)))
        for layer in self.conv_capsules:
            capsules = layer(capsules)
        if not return_coupling:
            return self.class_capsule(capsules)
        poses, activations, assignments = self.class_capsule(
            capsules, return_assignments=True
        )
        return (poses, activations), assignments

    def class_capsules(self, images: Any) -> tuple[Any, Any]:
        """The class capsules' poses and activations (see `encode`)."""
        return self.encode(images)

    def class_scores(self, capsules: Any) -> Any:
        """The class capsules' activations, `(batch, num_classes)`."""
        _, activations = capsules
        return activations

    def default_class_loss(self) -> keras.losses.Loss:
        return SpreadLoss()

    def recipe_callbacks(self) -> list[keras.callbacks.Callback]:
        return [*super().recipe_callbacks(), SpreadMarginSchedule()]

    def get_config(self) -> dict[str, Any]:
        config = {
            "conv_filters": self.conv_filters,
            "conv_kernel_size": self.conv_kernel_size,
            "conv_strides": self.conv_strides,
            "primary_capsule_types": self.primary_capsule_types,
            "conv_capsule_types": self.conv_capsule_types,
            "conv_capsule_kernel_sizes": self.conv_capsule_kernel_sizes,
            "conv_capsule_strides": self.conv_capsule_strides,
            "pose_size": self.pose_size,
            "routing_iterations": self.routing_iterations,
            "final_inverse_temperature": self.final_inverse_temperature,
            "use_coordinate_addition": self.use_coordinate_addition,
        }
        return {**super().get_config(), **config}
