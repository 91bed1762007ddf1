from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_capsules._validation import check_positive_int, check_positive_ints
from keras_capsules.layers import (
    ConvInvertedAttentionCapsule,
    InvertedAttentionCapsule,
    LayerNormPrimaryCapsule,
)
from keras_capsules.models.capsule_classifier import CapsuleClassifier
from keras_capsules.models.training_recipe import TrainingRecipe

#: The paper's CIFAR-10 network (the authors' `resnet_backbone_CIFAR10.json`).
CIFAR10_CONFIG: dict[str, Any] = {
    "image_shape": (32, 32, 3),
    "num_classes": 10,
    "stem_filters": 64,
    "stage_filters": (64, 128),
    "stage_blocks": (3, 4),
    "stage_strides": (1, 2),
    "primary_capsule_types": 32,
    "conv_capsule_types": (32, 32),
    "conv_capsule_kernel_sizes": (3, 3),
    "conv_capsule_strides": (2, 1),
    "capsule_dim": 16,
    "matrix_pose": True,
    "routing_iterations": 2,
    "concurrent_routing": True,
}


@keras.saving.register_keras_serializable(package="keras_capsules")
class InvertedAttentionCapsNet(CapsuleClassifier):
    """The capsule network of Tsai et al. (2020), inverted dot-product attention.

    A ResNet backbone (a 3x3 convolution, batch norm and ReLU, then stages
    of basic residual blocks) gives features from which
    `LayerNormPrimaryCapsule` cuts, at every position, `primary_capsule_types`
    layer-normed poses of `capsule_dim` entries (a 1x1 convolution without
    bias). Convolutional capsule layers (`ConvInvertedAttentionCapsule`)
    and one fully connected layer of class capsules
    (`InvertedAttentionCapsule`, fed every capsule of the last grid) route
    by inverted dot-product attention; a linear read-out shared by the
    class capsules turns each class pose into that class's logit, trained
    with cross-entropy. Poses are 4x4 matrices by default, as in the
    authors' configurations.

    With `concurrent_routing=True` (the paper's, and the authors' default)
    the first pass runs the whole stack with uniform routing, and each of
    the next `routing_iterations - 1` passes updates every capsule layer
    from the previous pass's poses of the layers below and above it (each
    layer is made with `routing_iterations=1` and called with
    `parent_poses`). With `False`, each layer runs all its passes before
    the next layer (the authors' `--sequential_routing`).

    The defaults are a small network for MNIST on a CPU: a 32-filter stem,
    one block of 64 and one of 128 filters with stride 2 (7x7 features), 16
    primary capsule types, one 3x3 convolutional capsule layer of 16 types
    (5x5), 10 class capsules of 16 entries, 2 routing iterations.
    `InvertedAttentionCapsNet(**CIFAR10_CONFIG)` (this module) is the
    paper's CIFAR-10 network. Batch normalization uses the authors'
    (PyTorch's) momentum and epsilon; the backbone's convolutions use
    "same" padding (the authors pad 1 on every side; with stride 2 Keras
    pads only bottom and right, same output size). The authors' dropout on
    the poses (rate 0 in their runs) is left out, and so is the bias of
    their read-out, which adds the same number to every logit (no change to
    the softmax, a zero gradient): the CIFAR-10 network has 1,828,816
    trainable weights, the authors' count less that one. Images are
    channels last.

    Args:
        image_shape: Shape of one image, `(height, width, channels)`.
            Defaults to `(28, 28, 1)`.
        num_classes: Number of classes, one capsule each. Defaults to `10`.
        stem_filters: Filters of the first convolution. Defaults to `32`.
        stage_filters: Filters of each backbone stage. Defaults to
            `(64, 128)`.
        stage_blocks: Basic blocks in each stage, positive integers.
            Defaults to `(1, 1)`.
        stage_strides: Stride of each stage's first block. Defaults to
            `(2, 2)`.
        primary_capsule_types: Primary capsule types per position. Defaults
            to `16`.
        conv_capsule_types: Capsule types of each convolutional capsule
            layer (may be empty). Defaults to `(16,)`.
        conv_capsule_kernel_sizes: Kernel size of each of them. Defaults to
            `(3,)`.
        conv_capsule_strides: Stride of each of them. Defaults to `(1,)`.
        capsule_dim: Pose size of every capsule. Defaults to `16` (4x4).
        matrix_pose: Whether poses are square matrices. Defaults to `True`.
        routing_iterations: Routing passes, the first one uniform. Defaults
            to `2`.
        concurrent_routing: Whether to route all capsule layers together,
            pass by pass (see above). Defaults to `True`.
        **kwargs: Base model keyword arguments, such as `name` and `dtype`;
            the dtype policy reaches every sublayer.

    Call arguments:
        inputs: Images `(batch, height, width, channels)`.
        training: Python boolean: batch normalization uses batch
            statistics when `True`.
        return_coupling: Whether to return the class capsule layer's
            routing coefficients too. Defaults to `False`.

    Returns:
        The logits `(batch, num_classes)`; with `return_coupling=True`, the
        pair `(logits, coupling)`, the coupling of shape `(batch,
        num_classes, children)` summing to 1 over the classes.

    `compile()` with no arguments uses Adam (see `recipe`: not the paper's
    SGD recipe, which is for 350 CIFAR epochs on a GPU) and the
    cross-entropy of the softmax of the logits.

    Example:

    >>> model = keras_capsules.models.InvertedAttentionCapsNet()
    >>> tuple(model(np.zeros((2, 28, 28, 1), "float32")).shape)
    (2, 10)

    Reference:
        - [Tsai, Srivastava, Goh & Salakhutdinov, 2020. Capsules with
          Inverted Dot-Product Attention Routing](https://arxiv.org/abs/2002.04764)
    """

    recipe = TrainingRecipe(
        learning_rate=1e-3,
        decay_per_epoch=0.95,
        min_learning_rate=1e-5,
        batch_size=64,
        epochs=30,
        source="this package's MNIST choice, not the paper's: the authors train "
        "CIFAR with SGD at 0.1, momentum 0.9, weight decay 5e-4, x0.1 at epochs "
        "150 and 250 of 350, batch 128, cross-entropy",
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (28, 28, 1),
        num_classes: int = 10,
        stem_filters: int = 32,
        stage_filters: tuple[int, ...] = (64, 128),
        stage_blocks: tuple[int, ...] = (1, 1),
        stage_strides: tuple[int, ...] = (2, 2),
        primary_capsule_types: int = 16,
        conv_capsule_types: tuple[int, ...] = (16,),
        conv_capsule_kernel_sizes: tuple[int, ...] = (3,),
        conv_capsule_strides: tuple[int, ...] = (1,),
        capsule_dim: int = 16,
        matrix_pose: bool = True,
        routing_iterations: int = 2,
        concurrent_routing: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
        self.stem_filters = check_positive_int("stem_filters", stem_filters)
        self.stage_filters = check_positive_ints("stage_filters", stage_filters)
        stages = len(self.stage_filters)
        self.stage_blocks = check_positive_ints("stage_blocks", stage_blocks, stages)
        self.stage_strides = check_positive_ints("stage_strides", stage_strides, stages)
        self.primary_capsule_types = check_positive_int(
            "primary_capsule_types", primary_capsule_types
        )
        self.conv_capsule_types = check_positive_ints(
            "conv_capsule_types", conv_capsule_types
        )
        layers = len(self.conv_capsule_types)
        self.conv_capsule_kernel_sizes = check_positive_ints(
            "conv_capsule_kernel_sizes", conv_capsule_kernel_sizes, layers
        )
        self.conv_capsule_strides = check_positive_ints(
            "conv_capsule_strides", conv_capsule_strides, layers
        )
        self.capsule_dim = check_positive_int("capsule_dim", capsule_dim)
        self.matrix_pose = bool(matrix_pose)
        self.routing_iterations = check_positive_int(
            "routing_iterations", routing_iterations
        )
        self.concurrent_routing = bool(concurrent_routing)
        self._check_image_size()

        dtype = self.dtype_policy
        self.backbone = self._make_backbone()
        self.primary_capsule = LayerNormPrimaryCapsule(
            self.primary_capsule_types,
            self.capsule_dim,
            data_format="channels_last",
            dtype=dtype,
            name="primary_capsule",
        )
        routing = {
            "matrix_pose": self.matrix_pose,
            "routing_iterations": 1 if self.concurrent_routing else routing_iterations,
            "dtype": dtype,
        }
        self.conv_capsules = [
            ConvInvertedAttentionCapsule(
                types,
                self.capsule_dim,
                kernel_size,
                strides=strides,
                name=f"conv_capsule_{k}",
                **routing,
            )
            for k, (types, kernel_size, strides) in enumerate(
                zip(
                    self.conv_capsule_types,
                    self.conv_capsule_kernel_sizes,
                    self.conv_capsule_strides,
                ),
                start=1,
            )
        ]
        self.class_capsule = InvertedAttentionCapsule(
            self.num_classes, self.capsule_dim, name="class_capsule", **routing
        )
        # One read-out for every class capsule, as the authors' `final_fc`,
        # without its bias: the same number added to every logit changes no
        # softmax, so its gradient is 0.
        self.readout = keras.layers.Dense(
            1, use_bias=False, dtype=dtype, name="readout"
        )
        self.build((None, *self.image_shape))

    # ------------------------------------------------------------ layers

    def _check_image_size(self) -> None:
        # The backbone pads "same"; its kernel sizes do not change the grid.
        backbone = [(1, stride, "same") for stride in self.stage_strides]
        capsules = [
            (kernel, stride, "valid")
            for kernel, stride in zip(
                self.conv_capsule_kernel_sizes, self.conv_capsule_strides
            )
        ]
        self._grid_after(
            [*backbone, *capsules],
            f"the backbone (stage_strides={self.stage_strides}) and the "
            "convolutional capsule layers (conv_capsule_kernel_sizes="
            f"{self.conv_capsule_kernel_sizes}, conv_capsule_strides="
            f"{self.conv_capsule_strides})",
        )

    def _make_backbone(self) -> keras.Model:
        dtype = self.dtype_policy

        def conv(filters: int, size: int, strides: int, name: str) -> Any:
            return keras.layers.Conv2D(
                filters,
                size,
                strides=strides,
                padding="same",
                use_bias=False,
                data_format="channels_last",
                dtype=dtype,
                name=name,
            )

        def batch_norm(name: str) -> Any:
            # PyTorch's BatchNorm2d: running averages keep 0.9 of the old.
            return keras.layers.BatchNormalization(
                momentum=0.9, epsilon=1e-5, dtype=dtype, name=name
            )

        def relu(name: str) -> Any:
            return keras.layers.ReLU(dtype=dtype, name=name)

        images = keras.Input(self.image_shape, name="images")
        x = conv(self.stem_filters, 3, 1, "stem_conv")(images)
        x = relu("stem_relu")(batch_norm("stem_batch_norm")(x))
        channels = self.stem_filters
        for s, (filters, blocks, stride) in enumerate(
            zip(self.stage_filters, self.stage_blocks, self.stage_strides), start=1
        ):
            for b in range(1, blocks + 1):
                name = f"stage_{s}_block_{b}"
                strides = stride if b == 1 else 1
                y = conv(filters, 3, strides, f"{name}_conv_1")(x)
                y = relu(f"{name}_relu_1")(batch_norm(f"{name}_batch_norm_1")(y))
                y = conv(filters, 3, 1, f"{name}_conv_2")(y)
                y = batch_norm(f"{name}_batch_norm_2")(y)
                shortcut = x
                if strides != 1 or channels != filters:
                    shortcut = conv(filters, 1, strides, f"{name}_shortcut")(x)
                    shortcut = batch_norm(f"{name}_shortcut_batch_norm")(shortcut)
                x = keras.layers.Add(dtype=dtype, name=f"{name}_add")([y, shortcut])
                x = relu(f"{name}_relu_2")(x)
                channels = filters
        backbone = keras.Model(images, x, name="backbone")
        # A functional model takes no `dtype`; its policy decides how it
        # casts its inputs, so it gets the model's (see EfficientCapsNet).
        backbone.dtype_policy = dtype
        return backbone

    def build_encoder(self, images_shape: tuple) -> tuple:
        shape = self.backbone.compute_output_shape(images_shape)
        self.primary_capsule.build(shape)
        shape = self.primary_capsule.compute_output_shape(shape)
        for layer in self.conv_capsules:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        height, width, types = shape[1:4]
        # Known sizes: the image shape is fixed and checked in `__init__`.
        shape = (
            shape[0],
            int(height or 0) * int(width or 0) * int(types or 0),
            shape[4],
        )
        self.class_capsule.build(shape)
        shape = self.class_capsule.compute_output_shape(shape)
        self.readout.build(shape)
        return shape

    # ------------------------------------------------------------- hooks

    def encode(
        self, images: Any, return_coupling: bool = False, training: bool | None = None
    ) -> Any:
        """Class capsules of `images`, `(batch, num_classes, capsule_dim)`.

        With `return_coupling=True`, also the class capsule layer's routing
        coefficients of the last pass, `(batch, num_classes, children)`.
        """
        features = self.backbone(self._images(images), training=training)
        primary = self.primary_capsule(features)
        layers = [*self.conv_capsules, self.class_capsule]
        # Pass 1 runs the stack with uniform routing. Concurrent routing then
        # updates every layer from the previous pass's poses below and
        # above it; sequential routing has done all its passes in pass 1.
        passes = self.routing_iterations if self.concurrent_routing else 1
        states: list[Any] = [primary]
        coupling = None
        for p in range(passes):
            previous, states = states, [primary]
            for k, layer in enumerate(layers):
                if p == 0:
                    inputs, parents = states[k], None
                else:
                    inputs, parents = previous[k], previous[k + 1]
                wanted = return_coupling and p == passes - 1 and k == len(layers) - 1
                outputs = self._call_layer(layer, inputs, parents, wanted)
                if wanted:
                    outputs, coupling = outputs
                states.append(outputs)
        if return_coupling:
            return states[-1], coupling
        return states[-1]

    def _call_layer(
        self,
        layer: Any,
        inputs: Any,
        parent_poses: Any = None,
        return_coupling: bool = False,
    ) -> Any:
        if layer is self.class_capsule and len(inputs.shape) == 5:
            children = inputs.shape[1] * inputs.shape[2] * inputs.shape[3]
            inputs = ops.reshape(inputs, (-1, children, inputs.shape[4]))
        return layer(inputs, parent_poses=parent_poses, return_coupling=return_coupling)

    def class_scores(self, capsules: Any) -> Any:
        """The logits of the class capsules, `(batch, num_classes)`."""
        return ops.squeeze(self.readout(capsules), axis=-1)

    def default_class_loss(self) -> keras.losses.Loss:
        return keras.losses.CategoricalCrossentropy(from_logits=True)

    def get_config(self) -> dict[str, Any]:
        config = {
            "stem_filters": self.stem_filters,
            "stage_filters": self.stage_filters,
            "stage_blocks": self.stage_blocks,
            "stage_strides": self.stage_strides,
            "primary_capsule_types": self.primary_capsule_types,
            "conv_capsule_types": self.conv_capsule_types,
            "conv_capsule_kernel_sizes": self.conv_capsule_kernel_sizes,
            "conv_capsule_strides": self.conv_capsule_strides,
            "capsule_dim": self.capsule_dim,
            "matrix_pose": self.matrix_pose,
            "routing_iterations": self.routing_iterations,
            "concurrent_routing": self.concurrent_routing,
        }
        return {**super().get_config(), **config}
