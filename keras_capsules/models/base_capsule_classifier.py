from __future__ import annotations

import inspect
import warnings
from typing import Any

import keras
from keras import ops

from keras_capsules._validation import (
    check_positive_int,
    check_positive_ints,
    shapes_compatible,
)
from keras_capsules.layers import Length, Mask

# Old argument names, kept working with a warning; saved configs map silently.
RENAMED_ARGUMENTS = {
    "input_shape": "image_shape",
    "decoder": "use_decoder",
    "primary_capsules": "primary_capsule_types",
}


def resolve_renamed_arguments(
    model: Any, kwargs: dict[str, Any], **given: Any
) -> dict[str, Any]:
    """The values of `given` new-name arguments, old keywords taken into account.

    Pops the old names of `given`'s arguments from `kwargs`, warns, and
    returns every argument of `given` under its new name. An old name with
    its new name passed too (not as its default object: identity, since an
    array passed as `image_shape` makes `==` ambiguous) raises.
    """
    defaults = inspect.signature(type(model).__init__).parameters
    arguments: dict[str, Any] = {}
    for old, new in RENAMED_ARGUMENTS.items():
        if new in given and old in kwargs:
            arguments[old] = kwargs.pop(old)
            if given[new] is not defaults[new].default:
                arguments[new] = given[new]
    rename_arguments(type(model).__name__, arguments, warn=True)
    return {**given, **arguments}


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
                stacklevel=4,
            )
        kwargs[new] = kwargs.pop(old)


class BaseCapsuleClassifier(keras.Model):
    """Base of the capsule classifiers: class capsules, lengths, a decoder.

    A subclass builds its encoder, from images to one capsule per class,
    and overrides two hooks: `build_encoder(images_shape)`, which builds
    the encoder's layers and returns the class capsules' shape, and
    `encode(images, return_coupling=False)`. This class owns the rest,
    shared by every capsule classifier: the capsule lengths as class
    scores (`Length`), the masked reconstruction decoder (`Mask`, then
    ReLU `Dense` layers to a sigmoid image), the checks of images and
    labels, the outputs and the config.

    Which capsule the decoder sees depends on the inputs: when labels are
    given (`fit`, and `evaluate` or validation on `(images, labels)`) it is
    the capsule of the true class, as in Sabour et al. (2017) and
    CapsNet-Keras; with images alone (`predict(images)`) it is the longest
    capsule, the predicted class. `training` does not change the choice.

    Every sublayer computes under the model's dtype policy, as in a
    functional model built under that policy; subclasses pass
    `dtype=self.dtype_policy` to each layer they make.

    Args:
        image_shape: Shape of one image, `(height, width, channels)`.
        num_classes: Number of classes, one capsule each.
        capsule_dim: Dimensions of a class capsule.
        use_decoder: Whether to add the reconstruction decoder.
        decoder_units: Units of the decoder's hidden ReLU layers.
        **kwargs: Base model keyword arguments, such as `name` and `dtype`.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        capsule_dim: int,
        use_decoder: bool,
        decoder_units: tuple[int, ...],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image_shape = check_positive_ints("image_shape", image_shape, length=3)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.capsule_dim = check_positive_int("capsule_dim", capsule_dim)
        self.use_decoder = bool(use_decoder)
        self.decoder_units = check_positive_ints("decoder_units", decoder_units)

    def _make_heads(self) -> None:
        """Makes the lengths, mask and decoder; subclasses call it last."""
        dtype = self.dtype_policy
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

    def _make_decoder(self) -> keras.Sequential:
        height, width, channels = self.image_shape
        dtype = self.dtype_policy
        hidden = [
            keras.layers.Dense(
                units, activation="relu", dtype=dtype, name=f"decoder_dense_{i}"
            )
            for i, units in enumerate(self.decoder_units, start=1)
        ]
        decoder = keras.Sequential(
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
        # `Sequential` takes no `dtype`, and with the default float32 policy
        # it would cast its inputs to float32: float64 capsules would lose
        # their precision before the float64 `Dense` layers.
        decoder.dtype_policy = dtype
        return decoder

    def build_encoder(self, images_shape: tuple) -> tuple:
        """Builds the encoder for `images_shape`; returns the capsules' shape."""
        raise NotImplementedError(
            f"`{type(self).__name__}` must implement `build_encoder(images_shape)`."
        )

    def encode(
        self, images: Any, return_coupling: bool = False, training: bool | None = None
    ) -> Any:
        """Class capsules of `images`, `(batch, num_classes, capsule_dim)`.

        With `return_coupling=True`, also the coupling coefficients of the
        routing into the class capsules, from the same pass. `training` is
        passed on to layers that behave differently in training.
        """
        raise NotImplementedError(
            f"`{type(self).__name__}` must implement `encode(images)`."
        )

    def build(self, input_shape: Any) -> None:
        images_shape, labels_shape = self._split_shapes(input_shape)
        self._check_images_shape(images_shape)
        if labels_shape is not None:
            self._check_labels_shape(labels_shape)
        batch = images_shape[0]
        class_shape = self.build_encoder((batch, *self.image_shape))
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
        if not shapes_compatible(shape, (None, *self.image_shape)):
            raise ValueError(
                f"`{type(self).__name__}` was made for images of shape "
                f"{self.image_shape} (batch, height, width, channels) and got a "
                f"different shape. Received: images.shape={shape}"
            )

    def _check_labels_shape(self, shape: tuple) -> None:
        if not shapes_compatible(shape, (None, self.num_classes)):
            raise ValueError(
                f"`{type(self).__name__}` expects one-hot labels of shape (batch, "
                f"{self.num_classes}). Received: labels.shape={shape}"
            )

    def _split_inputs(self, inputs: Any) -> tuple[Any, Any]:
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(
                    f"`{type(self).__name__}` expects `images` or "
                    f"`(images, labels)`. Received {len(inputs)} inputs."
                )
            images, labels = inputs
            self._check_labels_shape(tuple(labels.shape))
        else:
            images, labels = inputs, None
        self._check_images_shape(tuple(images.shape))
        return images, labels

    def _images(self, images: Any) -> Any:
        images = ops.convert_to_tensor(images, dtype=self.compute_dtype)
        self._check_images_shape(tuple(images.shape))
        return images

    def decode(self, capsules: Any, labels: Any = None) -> Any:
        """Reconstructs images from class capsules.

        Only the capsule chosen by the one-hot `labels`, or the longest
        capsule if `labels` is `None`, reaches the decoder.
        """
        if self.decoder is None:
            raise ValueError(
                f"This `{type(self).__name__}` has no decoder to reconstruct "
                "images: it was made with use_decoder=False."
            )
        capsules = ops.convert_to_tensor(capsules, dtype=self.compute_dtype)
        masked = self.mask(capsules if labels is None else [capsules, labels])
        return self.decoder(masked)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        images, labels = self._split_inputs(inputs)
        capsules = self.encode(images, training=training)
        lengths = self.length(capsules)
        if self.decoder is None:
            return lengths
        masked = self.mask(capsules if labels is None else [capsules, labels])
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
            "capsule_dim": self.capsule_dim,
            "use_decoder": self.use_decoder,
            "decoder_units": self.decoder_units,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        # Models saved before the renames load without a warning.
        config = dict(config)
        rename_arguments(cls.__name__, config, warn=False)
        return cls(**config)
