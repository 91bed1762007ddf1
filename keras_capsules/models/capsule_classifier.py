from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import keras
from keras import ops

from keras_capsules._validation import (
    check_positive_int,
    check_positive_ints,
    shapes_compatible,
)
from keras_capsules.losses import ReconstructionLoss
from keras_capsules.models import presets
from keras_capsules.models.training_recipe import TrainingRecipe
from keras_capsules.ops.convolution import conv_output_size


class _LastCall:
    """What the model's last call computed beside its output.

    `compute_loss` needs the class capsules to reconstruct the true class,
    while Keras hands it only the call's output, the class scores. The
    trainers of all three backends compute the loss right after the call,
    in the same step (and the same trace), so the capsules of that call are
    kept here, paired with the output they belong to. A plain object, so
    that Keras's attribute tracking leaves the tensors alone.
    """

    __slots__ = ("scores", "capsules")

    def __init__(self) -> None:
        self.scores: Any = None
        self.capsules: Any = None


class CapsuleClassifier(keras.Model):
    """Base of every capsule model: images in, one score per class out.

    A capsule model is used like any Keras classifier:

    ```python
    model = keras_capsules.models.EfficientCapsNet()
    model.compile()                      # the paper's optimizer, losses, metrics
    model.fit(images, labels, epochs=2)  # integer, one-hot or multi-hot labels
    scores = model.predict(images)       # (batch, num_classes)
    model.evaluate(images, labels)       # loss and accuracy
    ```

    The class scores are what the paper classifies with: the lengths of
    the class capsules (`CapsNet`, `EfficientCapsNet`) or their
    activations (`MatrixCapsNet`). `model(images, return_coupling=True)`
    also returns the coupling coefficients of the routing into the class
    capsules (EM's assignments for matrix capsules) from the same pass.

    Training computes the paper's losses in `compute_loss`: the compiled
    class loss on the scores, with labels turned into one-hot (or kept
    multi-hot) targets first, plus, for models with a decoder, the
    reconstruction of the *true* class's capsule weighted by
    `reconstruction_weight`. A bare `compile()` takes everything from the
    model's `recipe` (a `TrainingRecipe`), and `fit` then adds the recipe's
    per-epoch schedules as callbacks.

    A subclass builds its layers in `__init__` (every one with
    `dtype=self.dtype_policy`), then calls `self.build(...)`, and overrides
    the hooks: `build_encoder(images_shape)`, `encode(images,
    return_coupling=False, training=None)`, `class_scores(capsules)` and
    `default_class_loss()`; a model with a decoder also sets `decoder` and
    overrides `decode`. Presets: `from_preset` and `save_to_preset`.

    Args:
        image_shape: Shape of one image, `(height, width, channels)`.
        num_classes: Number of classes, at least 2.
        **kwargs: Base model keyword arguments, such as `name` and `dtype`.
    """

    #: The paper's training recipe; each model sets its own.
    recipe: ClassVar[TrainingRecipe]

    def __init__(
        self, image_shape: tuple[int, int, int], num_classes: int, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.image_shape = check_positive_ints("image_shape", image_shape, length=3)
        self.num_classes = check_positive_int("num_classes", num_classes)
        if self.num_classes < 2:
            raise ValueError(
                "Received an invalid value for `num_classes`, expected at least "
                "2 classes (one class capsule each; with one class every score "
                f"would be its own target). Received: num_classes={num_classes}"
            )
        self.decoder: keras.Model | None = None
        self.reconstruction_weight = 0.0
        self._last_call = _LastCall()
        self._recipe_compiled = False
        self._auto_metrics = False

    # ---------------------------------------------------------------- hooks

    def build_encoder(self, images_shape: tuple) -> Any:
        """Builds the encoder for `images_shape`; returns the capsules' shape."""
        raise NotImplementedError(
            f"`{type(self).__name__}` must implement `build_encoder(images_shape)`."
        )

    def encode(
        self, images: Any, return_coupling: bool = False, training: bool | None = None
    ) -> Any:
        """The class capsules of `images` (and the coupling, if asked)."""
        raise NotImplementedError(
            f"`{type(self).__name__}` must implement `encode(images)`."
        )

    def class_scores(self, capsules: Any) -> Any:
        """The class scores `(batch, num_classes)` of the class capsules."""
        raise NotImplementedError(
            f"`{type(self).__name__}` must implement `class_scores(capsules)`."
        )

    def default_class_loss(self) -> keras.losses.Loss:
        """The loss on the class scores that a bare `compile()` uses."""
        raise NotImplementedError(
            f"`{type(self).__name__}` must implement `default_class_loss()`."
        )

    def recipe_callbacks(self) -> list[keras.callbacks.Callback]:
        """The recipe's per-epoch schedules, added by `fit` after `compile()`."""
        return [keras.callbacks.LearningRateScheduler(self.recipe.learning_rate_at)]

    def decode(self, capsules: Any, labels: Any = None) -> Any:
        """Reconstructs images from class capsules (models with a decoder)."""
        raise ValueError(
            f"This `{type(self).__name__}` has no decoder to reconstruct images."
        )

    # ------------------------------------------------------------- checks

    def _grid_after(
        self, windows: Sequence[tuple[int, int, str]], arguments: str
    ) -> tuple[int, int]:
        """The grid that convolutions leave of an `image_shape` image.

        `windows` are the `(kernel_size, stride, padding)` of the encoder's
        convolutions in order; `arguments` names the constructor arguments
        that set them, for the `ValueError` raised when one leaves no
        position.
        """
        height, width, _ = self.image_shape
        for kernel_size, stride, padding in windows:
            height = conv_output_size(height, kernel_size, stride, padding)
            width = conv_output_size(width, kernel_size, stride, padding)
            if height == 0 or width == 0:
                smallest = 1
                for kernel, step, pad in reversed(windows):
                    smallest = (smallest - 1) * step + (kernel if pad == "valid" else 1)
                raise ValueError(
                    "Received an invalid value for `image_shape`: it is too "
                    f"small for {arguments}, which need images of at least "
                    f"{smallest}x{smallest}. Received: image_shape={self.image_shape}"
                )
        return height, width

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

    def _images(self, images: Any) -> Any:
        images = ops.convert_to_tensor(images, dtype=self.compute_dtype)
        self._check_images_shape(tuple(images.shape))
        return images

    def class_targets(self, labels: Any) -> Any:
        """One-hot (or multi-hot) float targets of `labels`.

        Integer class indices, of shape `(batch,)` or `(batch, 1)`, become
        one-hot rows; one-hot or multi-hot rows `(batch, num_classes)` are
        kept.
        """
        labels = ops.convert_to_tensor(labels)
        try:
            shape = tuple(labels.shape)
        except ValueError:
            # A shape of unknown rank: TensorFlow's relaxed retracing, after
            # labels of another shape. Integers are class indices there too.
            if "int" in keras.backend.standardize_dtype(labels.dtype):
                shape = (None,)
            else:
                labels = ops.reshape(labels, (-1, self.num_classes))
                shape = (None, self.num_classes)
        if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
            indices = ops.cast(ops.reshape(labels, (-1,)), "int32")
            return ops.one_hot(indices, self.num_classes, dtype=self.compute_dtype)
        if len(shape) == 2 and shape[1] == self.num_classes:
            return ops.cast(labels, self.compute_dtype)
        raise ValueError(
            f"`{type(self).__name__}` takes labels as class indices of shape "
            f"(batch,) or (batch, 1), or one-hot / multi-hot rows of shape "
            f"(batch, {self.num_classes}). Received: labels.shape={shape}"
        )

    # -------------------------------------------------------------- build

    def build(self, input_shape: Any) -> None:
        images_shape, labels_shape = _split_shapes(input_shape)
        self._check_images_shape(images_shape)
        if labels_shape is not None:
            self._check_labels_shape(labels_shape)
        self.build_encoder((images_shape[0], *self.image_shape))

    # --------------------------------------------------------------- call

    def call(
        self,
        inputs: Any,
        training: bool | None = None,
        return_coupling: bool = False,
    ) -> Any:
        if isinstance(inputs, (list, tuple)):
            return self._call_with_labels(inputs, training, return_coupling)
        encoded = self.encode(
            self._images(inputs), return_coupling=return_coupling, training=training
        )
        capsules, coupling = encoded if return_coupling else (encoded, None)
        scores = self.class_scores(capsules)
        self._last_call.scores, self._last_call.capsules = scores, capsules
        return (scores, coupling) if return_coupling else scores

    def _call_with_labels(
        self, inputs: Any, training: bool | None, return_coupling: bool
    ) -> Any:
        """The v0.1 call: `(images, labels)` to `(scores, reconstructions)`."""
        if len(inputs) != 2:
            raise ValueError(
                f"`{type(self).__name__}` expects `images` or "
                f"`(images, labels)`. Received {len(inputs)} inputs."
            )
        images, labels = inputs
        self._check_labels_shape(tuple(labels.shape))
        warnings.warn(
            f"Calling `{type(self).__name__}` on `(images, labels)` is deprecated: "
            "call it on images for the class scores, fit it with "
            "`fit(images, labels)` (the decoder sees the true class there), and "
            "reconstruct with `decode(encode(images), labels)`.",
            FutureWarning,
            stacklevel=2,
        )
        encoded = self.encode(
            self._images(images), return_coupling=return_coupling, training=training
        )
        capsules, coupling = encoded if return_coupling else (encoded, None)
        scores = self.class_scores(capsules)
        outputs = (
            scores if self.decoder is None else (scores, self.decode(capsules, labels))
        )
        return (outputs, coupling) if return_coupling else outputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        images_shape, labels_shape = _split_shapes(input_shape)
        scores_shape = (images_shape[0], self.num_classes)
        if labels_shape is None or self.decoder is None:
            return scores_shape
        return scores_shape, (images_shape[0], *self.image_shape)

    # ----------------------------------------------------------- training

    def compile(
        self,
        optimizer: Any = "auto",
        loss: Any = "auto",
        metrics: Any = "auto",
        reconstruction_weight: float | str = "auto",
        **kwargs: Any,
    ) -> None:
        """Configures the model for training, by default with its recipe.

        Args:
            optimizer: An optimizer, or `"auto"` for Adam at the recipe's
                learning rate (and weight decay), whose per-epoch decay
                `fit` then applies. Defaults to `"auto"`.
            loss: The loss on the class scores, or `"auto"` for the paper's
                (`default_class_loss()`). Labels reach it as one-hot or
                multi-hot targets. Defaults to `"auto"`.
            metrics: Metrics on the class scores, or `"auto"` for
                `["accuracy"]`. Defaults to `"auto"`.
            reconstruction_weight: Weight of the decoder's sum of squared
                pixel errors, or `"auto"` for the recipe's; ignored
                without a decoder. Defaults to `"auto"`.
            **kwargs: Other arguments of `keras.Model.compile`.
        """
        self._recipe_compiled = optimizer == "auto"
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(
                self.recipe.learning_rate, weight_decay=self.recipe.weight_decay
            )
        if loss == "auto":
            loss = self.default_class_loss()
        self._auto_metrics = metrics == "auto"
        if metrics == "auto":
            metrics = ["accuracy"]
        if reconstruction_weight == "auto":
            reconstruction_weight = self.recipe.reconstruction_weight
        self.reconstruction_weight = float(reconstruction_weight)
        # Two losses (or a dict of them) are the v0.1 convention, one per
        # output of the `(images, labels)` call: Keras names those outputs
        # (`lengths_loss`, `reconstructions_loss`) by `output_names`.
        pairs = isinstance(loss, (list, tuple, dict)) and len(loss) == 2
        if pairs and self.decoder is not None:
            self.output_names = ["lengths", "reconstructions"]
        elif hasattr(self, "output_names"):
            del self.output_names
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_compile_config(self) -> dict[str, Any]:
        config = super().get_compile_config()
        if not config:
            return config
        return {
            **config,
            "reconstruction_weight": self.reconstruction_weight,
            "recipe_schedules": self._recipe_compiled,
            "default_metrics": self._auto_metrics,
        }

    def compile_from_config(self, config: dict[str, Any]) -> None:
        config = dict(config)
        weight = config.pop("reconstruction_weight", 0.0)
        recipe_schedules = config.pop("recipe_schedules", False)
        default_metrics = config.pop("default_metrics", False)
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config, reconstruction_weight=weight)
        self._recipe_compiled = bool(recipe_schedules)
        self._auto_metrics = bool(default_metrics)
        if self.built:
            # The optimizer's variables must exist for its saved state to load.
            self.optimizer.build(self.trainable_variables)

    def fit(self, *args: Any, callbacks: Any = None, **kwargs: Any) -> Any:
        """`keras.Model.fit`, with the recipe's schedules after `compile()`.

        After a bare `compile()` (an `"auto"` optimizer), each of
        `recipe_callbacks()` is added unless `callbacks` already holds one
        of its type, so a user's own schedule wins.
        """
        callbacks = list(callbacks or [])
        if self._recipe_compiled:
            given = {type(callback) for callback in callbacks}
            callbacks += [
                callback
                for callback in self.recipe_callbacks()
                if type(callback) not in given
            ]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        if isinstance(y_pred, (list, tuple)):
            # The v0.1 convention: outputs and targets are pairs, and the
            # compiled losses are one per output.
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        targets = self.class_targets(y)
        loss = super().compute_loss(x, targets, y_pred, sample_weight, training)
        if self.decoder is None or not self.reconstruction_weight:
            return loss
        images = self._images(x)
        capsules = self._capsules_of(y_pred, images, training)
        reconstructions = self.decode(capsules, targets)
        if sample_weight is not None:
            sample_weight = ops.reshape(sample_weight, (-1,))
        # A Keras loss, reduced as the compiled ones are: under a
        # `tf.distribute` strategy each replica's mean is divided by the
        # number of replicas, whose gradients are then summed.
        reconstruction = ReconstructionLoss(
            self.reconstruction_weight, dtype="float32"
        )(images, reconstructions, sample_weight)
        return loss + ops.cast(reconstruction, loss.dtype)

    def _capsules_of(self, scores: Any, images: Any, training: bool) -> Any:
        """The class capsules behind `scores`, from the call that made them."""
        last = self._last_call
        capsules = last.capsules if last.scores is scores else None
        last.scores = last.capsules = None
        if capsules is None:
            # `compute_loss` called on scores of another call: encode again.
            capsules = self.encode(images, training=training)
        return capsules

    def compute_metrics(
        self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None
    ) -> Any:
        if not isinstance(y_pred, (list, tuple)):
            y = self.class_targets(y)
        elif self._auto_metrics:
            # v0.1 pairs: the default metrics are those of the class scores.
            y, y_pred = y[0], y_pred[0]
        return super().compute_metrics(x, y, y_pred, sample_weight)

    # ------------------------------------------------------------ presets

    @classmethod
    def from_preset(cls, preset: str, load_weights: bool = True, **kwargs: Any) -> Any:
        """A model from a preset: a shipped name or a preset folder.

        `keras_capsules.models.list_presets()` lists the shipped names. A
        folder is what `save_to_preset` writes. `kwargs` override the saved
        configuration (e.g. `dtype="mixed_bfloat16"`). Loading runs no code
        from the preset: its configuration is read in Keras's safe mode.
        """
        return presets.load_preset(cls, preset, load_weights=load_weights, **kwargs)

    def save_to_preset(self, preset_dir: Any, metadata: dict | None = None) -> None:
        """Writes the model's configuration and weights to `preset_dir`.

        `metadata` (a JSON-serialisable dict: test accuracy, the training
        command, ...) is saved beside them and shown by `list_presets`.
        """
        presets.save_preset(self, preset_dir, metadata)

    # ------------------------------------------------------------- config

    def get_config(self) -> dict[str, Any]:
        config = {"image_shape": self.image_shape, "num_classes": self.num_classes}
        return {**super().get_config(), **config}


def _split_shapes(input_shape: Any) -> tuple[tuple, tuple | None]:
    if (
        isinstance(input_shape, (list, tuple))
        and len(input_shape) == 2
        and isinstance(input_shape[0], (list, tuple))
    ):
        return tuple(input_shape[0]), tuple(input_shape[1])
    return tuple(input_shape), None
