from __future__ import annotations

from typing import Any

import keras

from keras_capsules._validation import check_positive_int, check_positive_ints
from keras_capsules.layers import DepthwisePrimaryCapsule, SelfAttentionRoutingCapsule
from keras_capsules.models.base_capsule_classifier import (
    BaseCapsuleClassifier,
    resolve_renamed_arguments,
)
from keras_capsules.models.training_recipe import TrainingRecipe


@keras.saving.register_keras_serializable(package="keras_capsules")
class EfficientCapsNet(BaseCapsuleClassifier):
    """Efficient-CapsNet of Mazzia, Salvetti & Chiaberge (2021), with a decoder.

    The encoder is a stack of ReLU convolutions, each followed by batch
    normalization, then `DepthwisePrimaryCapsule` (a depthwise convolution
    cut into capsules and squashed with the efficient squash) and
    `SelfAttentionRoutingCapsule` with one capsule per class: a single
    routing pass, no iterations. As in `CapsNet`, the length of each class
    capsule is the score of that class (train with `MarginLoss`), and the
    optional decoder reconstructs the image from the masked class capsules
    (the true class's capsule in training); see `BaseCapsuleClassifier`.

    The defaults are the paper's MNIST network: convolutions 32@5x5,
    64@3x3, 64@3x3 and 128@3x3 with stride 2 (He-normal initialized, as in
    the authors' code), a 9x9 depthwise convolution giving 16 primary
    capsules of 8 dimensions, 10 class capsules of 16 dimensions, and a
    512-1024 decoder. Without the decoder it has 161,824 trainable weights,
    the paper's count (plus 576 non-trainable batch-normalization
    statistics); the decoder adds 1,411,344. The model is built when it is
    constructed. Images are channels last.

    Args:
        image_shape: Shape of one image, `(height, width, channels)`.
            Defaults to `(28, 28, 1)`.
        num_classes: Number of classes, one capsule each. Defaults to `10`.
        use_decoder: Whether to add the reconstruction decoder. Defaults to
            `True`.
        conv_filters: Filters of each convolution. Defaults to
            `(32, 64, 64, 128)`.
        conv_kernel_sizes: Kernel size of each convolution. Defaults to
            `(5, 3, 3, 3)`.
        conv_strides: Strides of each convolution. Defaults to
            `(1, 1, 1, 2)`.
        primary_capsule_dim: Dimensions of a primary capsule. Defaults to
            `8`.
        primary_kernel_size: Kernel size of the depthwise convolution, or
            `None` for the size of the last feature map (one position, as
            in the paper, where it is 9). Defaults to `None`.
        capsule_dim: Dimensions of a class capsule. Defaults to `16`.
        decoder_units: Units of the decoder's hidden ReLU layers. Defaults
            to `(512, 1024)`.
        **kwargs: Base model keyword arguments, such as `name` and `dtype`;
            the dtype policy reaches every sublayer.

    Call arguments:
        inputs: Images `(batch, height, width, channels)`. (The pair
            `(images, labels)` of v0.1 still gives `(lengths,
            reconstructions)`, with a deprecation warning.)
        training: Python boolean: batch normalization uses batch
            statistics when `True`.
        return_coupling: Whether to return the self-attention coupling
            coefficients too. Defaults to `False`.

    Returns:
        The class capsule lengths `(batch, num_classes)`; with
        `return_coupling=True`, the pair `(lengths, coupling)`, the
        coupling of shape `(batch, num_classes, num_primary_capsules)`.

    `compile()` with no arguments uses the authors' recipe: Adam at 5e-4,
    decayed by 0.97 per epoch down to 5e-5, the margin loss plus 0.0005
    times the sum of squared errors of the true class's reconstruction.
    The preset `"efficient_capsnet_mnist"` holds weights trained on MNIST
    (`keras_capsules.models.list_presets()`).

    Example:

    >>> model = keras_capsules.models.EfficientCapsNet(use_decoder=False)
    >>> sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    161824

    Reference:
        - [Mazzia, Salvetti & Chiaberge, 2021. Efficient-CapsNet: capsule
          network with self-attention routing](https://arxiv.org/abs/2101.12491)
    """

    recipe = TrainingRecipe(
        learning_rate=5e-4,
        decay_per_epoch=0.97,
        min_learning_rate=5e-5,
        batch_size=16,
        epochs=150,
        reconstruction_weight=0.0005,
        source="the authors' code (EscVM/Efficient-CapsNet): Adam 5e-4 decayed "
        "by 0.97 per epoch down to 5e-5, batch 16, 150 epochs, margin loss "
        "plus 0.0005 x the sum of squared pixel errors",
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (28, 28, 1),
        num_classes: int = 10,
        use_decoder: bool = True,
        conv_filters: tuple[int, ...] = (32, 64, 64, 128),
        conv_kernel_sizes: tuple[int, ...] = (5, 3, 3, 3),
        conv_strides: tuple[int, ...] = (1, 1, 1, 2),
        primary_capsule_dim: int = 8,
        primary_kernel_size: int | None = None,
        capsule_dim: int = 16,
        decoder_units: tuple[int, ...] = (512, 1024),
        **kwargs: Any,
    ) -> None:
        renamed = resolve_renamed_arguments(
            self, kwargs, image_shape=image_shape, use_decoder=use_decoder
        )
        image_shape, use_decoder = renamed["image_shape"], renamed["use_decoder"]
        super().__init__(
            image_shape=image_shape,
            num_classes=num_classes,
            capsule_dim=capsule_dim,
            use_decoder=use_decoder,
            decoder_units=decoder_units,
            **kwargs,
        )
        self.conv_filters = check_positive_ints("conv_filters", conv_filters)
        count = len(self.conv_filters)
        self.conv_kernel_sizes = check_positive_ints(
            "conv_kernel_sizes", conv_kernel_sizes, length=count
        )
        self.conv_strides = check_positive_ints(
            "conv_strides", conv_strides, length=count
        )
        self.primary_capsule_dim = check_positive_int(
            "primary_capsule_dim", primary_capsule_dim
        )
        self.primary_kernel_size = (
            None
            if primary_kernel_size is None
            else check_positive_int("primary_kernel_size", primary_kernel_size)
        )
        height, width = self._feature_map_size()
        dtype = self.dtype_policy
        self.convs = [
            keras.layers.Conv2D(
                filters,
                kernel_size,
                strides=strides,
                activation="relu",
                kernel_initializer="he_normal",
                data_format="channels_last",
                dtype=dtype,
                name=f"conv_{i}",
            )
            for i, (filters, kernel_size, strides) in enumerate(
                zip(self.conv_filters, self.conv_kernel_sizes, self.conv_strides),
                start=1,
            )
        ]
        self.batch_norms = [
            keras.layers.BatchNormalization(dtype=dtype, name=f"batch_norm_{i}")
            for i in range(1, count + 1)
        ]
        self.primary_capsule = DepthwisePrimaryCapsule(
            self.primary_capsule_dim,
            kernel_size=self.primary_kernel_size or (height, width),
            data_format="channels_last",
            dtype=dtype,
            name="primary_capsule",
        )
        self.class_capsule = SelfAttentionRoutingCapsule(
            self.num_classes, self.capsule_dim, dtype=dtype, name="class_capsule"
        )
        self._make_heads()

    def _feature_map_size(self) -> tuple[int, int]:
        windows = [
            (kernel_size, strides, "valid")
            for kernel_size, strides in zip(self.conv_kernel_sizes, self.conv_strides)
        ]
        arguments = (
            f"conv_kernel_sizes={self.conv_kernel_sizes}, "
            f"conv_strides={self.conv_strides} and "
            f"primary_kernel_size={self.primary_kernel_size}"
        )
        if self.primary_kernel_size is not None:
            self._grid_after(
                [*windows, (self.primary_kernel_size, 1, "valid")], arguments
            )
        return self._grid_after(windows, arguments)

    def build_encoder(self, images_shape: tuple) -> tuple:
        shape = images_shape
        for conv, batch_norm in zip(self.convs, self.batch_norms):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            batch_norm.build(shape)
        self.primary_capsule.build(shape)
        shape = self.primary_capsule.compute_output_shape(shape)
        self.class_capsule.build(shape)
        return self.class_capsule.compute_output_shape(shape)

    def encode(
        self, images: Any, return_coupling: bool = False, training: bool | None = None
    ) -> Any:
        """Class capsules of `images`, `(batch, num_classes, capsule_dim)`.

        With `return_coupling=True`, also returns the self-attention
        coupling coefficients, `(batch, num_classes, num_primary_capsules)`.
        """
        features = self._images(images)
        for conv, batch_norm in zip(self.convs, self.batch_norms):
            features = batch_norm(conv(features), training=training)
        primary = self.primary_capsule(features)
        return self.class_capsule(primary, return_coupling=return_coupling)

    def get_config(self) -> dict[str, Any]:
        config = {
            "conv_filters": self.conv_filters,
            "conv_kernel_sizes": self.conv_kernel_sizes,
            "conv_strides": self.conv_strides,
            "primary_capsule_dim": self.primary_capsule_dim,
            "primary_kernel_size": self.primary_kernel_size,
        }
        return {**super().get_config(), **config}
