"""Expanded MNIST: digits at random translations in a larger frame."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_capsules.datasets import _digits, _geometry


def expanded_mnist(
    images: Any,
    labels: Any,
    frame_size: int = 40,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Places each digit at a random translation in a larger zero frame.

    The training set of the affNIST experiment of Sabour et al.: each digit
    image is copied unchanged into a `frame_size` x `frame_size` frame of
    zeros with its top-left corner at a random integer offset, uniform over
    the offsets that keep the whole image inside the frame. For 28x28 MNIST
    and the default 40x40 frame that is a shift of up to 6 pixels either way
    from the centre, as in the authors' script (pad 6, shift 6). The test set
    is then affNIST, or `affine_mnist` for an affNIST-like one.

    Args:
        images: Digits `(num_images, height, width)` or
            `(num_images, height, width, 1)`: uint8 (scaled by 1/255) or
            float in `[0, 1]`. `height` and `width` must not exceed
            `frame_size`.
        labels: Integer class of each digit, shape `(num_images,)`.
        frame_size: Side of the square output frame. Defaults to `40`.
        seed: Seed for `numpy.random.default_rng`; the same seed and inputs
            give the same frames. `None` draws fresh entropy. Defaults to
            `0`.

    Returns:
        A tuple `(images, labels)`: `images` of shape
        `(num_images, frame_size, frame_size, 1)`, float32, and `labels`
        `(num_images,)`, int64.

    Example:

    >>> import numpy as np
    >>> import keras_capsules
    >>> digits = np.random.default_rng(0).integers(0, 256, (3, 28, 28), "uint8")
    >>> x, y = keras_capsules.datasets.expanded_mnist(digits, np.array([4, 2, 7]))
    >>> x.shape, x.dtype.name, y.tolist()
    ((3, 40, 40, 1), 'float32', [4, 2, 7])
    >>> bool(np.isclose(x.sum(), digits.sum() / 255))
    True

    Reference:
    - [Sabour et al., 2017](https://arxiv.org/abs/1710.09829), section 5.2.
    - [affNIST](http://www.cs.toronto.edu/~tijmen/affNIST/), Tieleman 2013.
    """
    digits = _digits.as_digits(images)
    classes = _digits.as_labels(labels, len(digits))
    frame_size = _digits.check_positive_int("frame_size", frame_size)
    rng = np.random.default_rng(_digits.check_seed(seed))
    height, width = digits.shape[1:]
    if max(height, width) > frame_size:
        raise ValueError(
            "Expected `frame_size` at least the digits' height and width. "
            f"Received: frame_size={frame_size} for images of shape "
            f"{np.shape(images)}"
        )
    # Drawn as `affine_mnist` draws its translation, so that the two agree
    # when the affine map is the identity.
    offsets = _geometry.integer_offsets(
        rng.random((len(digits), 2)),
        np.zeros(2, np.int64),
        np.array([frame_size - height, frame_size - width]),
    )
    frames = np.zeros((len(digits), frame_size, frame_size), np.float32)
    _geometry.place(frames, digits, offsets)
    return frames[..., None], classes
