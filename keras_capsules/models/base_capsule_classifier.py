from __future__ import annotations

import inspect
import warnings
from typing import Any

import keras
from keras import ops

from keras_capsules._validation import check_positive_int, check_positive_ints
from keras_capsules.layers import Length, Mask
from keras_capsules.losses import MarginLoss
from keras_capsules.models.capsule_classifier import CapsuleClassifier

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


class BaseCapsuleClassifier(CapsuleClassifier):
    """Base of the vector-capsule classifiers: lengths as scores, a decoder.

    A subclass builds its encoder, from images to one capsule per class,
    and overrides two hooks: `build_encoder(images_shape)`, which builds
    the encoder's layers and returns the class capsules' shape, and
    `encode(images, return_coupling=False, training=None)`. This class owns
    what every vector-capsule classifier shares: the capsule lengths as
    class scores (`Length`), trained with `MarginLoss`, and the optional
    masked reconstruction decoder (`Mask`, then ReLU `Dense` layers to a
    sigmoid image); `CapsuleClassifier` owns the rest (calls, checks,
    losses, `compile()` defaults, presets).

    In training (`fit(images, labels)`) the decoder reconstructs the
    capsule of the true class, as in Sabour et al. (2017) and CapsNet-Keras;
    `decode(capsules)` without labels reconstructs the longest capsule, the
    predicted class.

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
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
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

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        images_shape = (None, self.num_classes, self.capsule_dim)
        self.length.build(images_shape)
        self.mask.build(images_shape)
        if self.decoder is not None:
            self.decoder.build((None, self.num_classes * self.capsule_dim))

    def class_scores(self, capsules: Any) -> Any:
        """The lengths of the class capsules, `(batch, num_classes)`."""
        return self.length(capsules)

    def default_class_loss(self) -> keras.losses.Loss:
        return MarginLoss()

    def decode(self, capsules: Any, labels: Any = None) -> Any:
        """Reconstructs images from class capsules.

        Only the capsule chosen by `labels` (class indices, one-hot or
        multi-hot rows), or the longest capsule if `labels` is `None`,
        reaches the decoder.
        """
        if self.decoder is None:
            raise ValueError(
                f"This `{type(self).__name__}` has no decoder to reconstruct "
                "images: it was made with use_decoder=False."
            )
        capsules = ops.convert_to_tensor(capsules, dtype=self.compute_dtype)
        if labels is None:
            return self.decoder(self.mask(capsules))
        return self.decoder(self.mask([capsules, self.class_targets(labels)]))

    def get_config(self) -> dict[str, Any]:
        config = {
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
