"""NumPy access to the class capsules of any capsule autoencoder."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import keras
import numpy as np


@runtime_checkable
class CapsuleAutoencoder(Protocol):
    """What the figures need of a model: capsules in, images out.

    `keras_capsules.models.CapsNet` is one; so is any object with these two
    methods, e.g. a wrapper around a functional model and its decoder.
    """

    def encode(self, images: Any, return_coupling: bool = False) -> Any:
        """Class capsules `(batch, num_classes, capsule_dim)` of `images`.

        With `return_coupling=True`, the pair `(capsules, coupling)`.
        """

    def decode(self, capsules: Any, labels: Any = None) -> Any:
        """Images reconstructed from the capsules chosen by one-hot `labels`."""


def check_capsule_model(model: Any, needs_decoder: bool = False) -> None:
    if not callable(getattr(model, "encode", None)) or (
        needs_decoder and not callable(getattr(model, "decode", None))
    ):
        wanted = "`encode` and `decode`" if needs_decoder else "`encode`"
        raise ValueError(
            f"Expected a capsule model with {wanted} methods, such as "
            "`keras_capsules.models.CapsNet` (see `CapsuleAutoencoder`). "
            f"Received: model={type(model).__name__}"
        )
    if needs_decoder and getattr(model, "decoder", True) is None:
        raise ValueError(
            "Expected a model with a decoder, to reconstruct images. "
            "Received a model made with use_decoder=False."
        )


def class_capsules(
    model: CapsuleAutoencoder,
    images: Any,
    batch_size: int = 32,
    return_coupling: bool = False,
) -> Any:
    """Class capsules of `images` (and routing couplings) as NumPy arrays.

    Args:
        model: A `CapsuleAutoencoder`, e.g. `keras_capsules.models.CapsNet`.
        images: Images `(batch, height, width, channels)` of the model's
            input shape.
        batch_size: Images encoded at a time, to bound memory. Defaults to
            `32`.
        return_coupling: Whether to also return the coupling coefficients
            of the last routing iteration. Defaults to `False`.

    Returns:
        Capsules `(batch, num_classes, capsule_dim)`; with
        `return_coupling`, the pair `(capsules, coupling)` with coupling of
        shape `(batch, num_classes, num_primary_capsules)`, summing to 1
        over the classes.

    Example:

    >>> import numpy as np
    >>> import keras_capsules
    >>> model = keras_capsules.models.CapsNet(
    ...     image_shape=(20, 20, 1), num_classes=3, conv_filters=4,
    ...     primary_capsule_types=2, capsule_dim=4, decoder_units=(8,))
    >>> capsules, coupling = keras_capsules.visualization.class_capsules(
    ...     model, np.zeros((5, 20, 20, 1), "float32"), return_coupling=True)
    >>> capsules.shape, coupling.shape
    ((5, 3, 4), (5, 3, 8))
    """
    check_capsule_model(model)
    images = np.asarray(images, dtype="float32")
    capsules, couplings = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if return_coupling:
            batch_capsules, coupling = model.encode(batch, return_coupling=True)
            couplings.append(keras.ops.convert_to_numpy(coupling))
        else:
            batch_capsules = model.encode(batch)
        capsules.append(keras.ops.convert_to_numpy(batch_capsules))
    capsules_array = np.concatenate(capsules)
    if return_coupling:
        return capsules_array, np.concatenate(couplings)
    return capsules_array


def perturb_capsule(
    capsules: Any, class_index: int, deltas: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of one example's capsules with one dimension shifted.

    Row `d * len(deltas) + k` of the result is `capsules` with `deltas[k]`
    added to dimension `d` of the capsule of `class_index`: the inputs of
    fig. 4 of Sabour et al. (2017).

    Args:
        capsules: Capsules of one example, `(num_classes, capsule_dim)`.
        class_index: The capsule to perturb.
        deltas: The offsets to add, a 1D sequence.

    Returns:
        The pair `(perturbed, labels)`: capsules `(capsule_dim * len(deltas),
        num_classes, capsule_dim)` and one-hot labels of `class_index` to
        mask them with.
    """
    capsules = np.asarray(capsules, dtype="float32")
    deltas = np.asarray(deltas, dtype="float32")
    num_classes, capsule_dim = capsules.shape
    if not 0 <= class_index < num_classes:
        raise ValueError(
            "Received an invalid value for `class_index`, expected an "
            f"integer in [0, {num_classes}). Received: class_index={class_index}"
        )
    perturbed = np.repeat(capsules[None], capsule_dim * len(deltas), axis=0)
    for dim in range(capsule_dim):
        rows = slice(dim * len(deltas), (dim + 1) * len(deltas))
        perturbed[rows, class_index, dim] += deltas
    labels = np.zeros((len(perturbed), num_classes), dtype="float32")
    labels[:, class_index] = 1.0
    return perturbed, labels
