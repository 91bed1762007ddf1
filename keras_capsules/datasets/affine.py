"""affNIST-like digits: random affine transformations in a larger frame."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_capsules.datasets import _digits, _geometry

# Redraws for a transformation whose digit does not fit the frame, before
# shrinking it instead. At the default ranges none of the 60,000 MNIST
# training digits needs one in a 40x40 frame.
_MAX_REDRAWS = 10


def affine_mnist(
    images: Any,
    labels: Any,
    seed: int | None = 0,
    frame_size: int = 40,
    max_rotation: float = 20.0,
    max_shear: float = 0.2,
    scale_range: tuple[float, float] = (0.8, 1.2),
    return_matrices: bool = False,
) -> tuple[np.ndarray, ...]:
    """Applies a random affine transformation to each digit, affNIST-like.

    An affNIST-like test set for the affNIST experiment of Sabour et al.
    (train on `expanded_mnist`, test on transformed digits). It follows the
    ranges published for affNIST, but it is not affNIST itself: the draws,
    the order of composition and the interpolation are this function's own.
    Download affNIST to compare with published numbers.

    Each digit is transformed about the centre of its source image by
    `A = R(theta) @ H(shear) @ S(scale_y, scale_x)` in `(row, col)`
    coordinates, with, independently and uniformly:

    - rotation `theta` in `[-max_rotation, max_rotation]` degrees
      (counter-clockwise when positive); affNIST: within 20 degrees;
    - horizontal shear (`col += shear * row`) in `[-max_shear, max_shear]`;
      affNIST: within 0.2;
    - vertical and horizontal scales, each in `scale_range`; affNIST:
      0.8 to 1.2 each.

    The transformed digit is then translated by an integer offset, uniform
    over those that keep every pixel it can touch inside the frame (as
    affNIST's translation keeps the digit in its 40x40 image) and off the
    frame's outermost rows and columns, which stay blank; it is resampled
    bilinearly by inverse mapping. So nothing of the digit is cut off, and
    each frame sums to about `scale_y * scale_x` times its digit. A
    transformation too large to fit is redrawn, up to 10 times, then shrunk
    uniformly until it fits (only digits nearly as large as the frame need
    that). With all ranges at zero and scale 1 each digit is copied exactly
    at an integer offset; a digit with a blank 1-pixel margin lands where
    `expanded_mnist` puts it with the same seed.

    Args:
        images: Digits `(num_images, height, width)` or
            `(num_images, height, width, 1)`: uint8 (scaled by 1/255) or
            float in `[0, 1]`.
        labels: Integer class of each digit, shape `(num_images,)`.
        seed: Seed for `numpy.random.default_rng`; the same seed and inputs
            give the same images. `None` draws fresh entropy. Defaults to
            `0`.
        frame_size: Side of the square output frame, at least 3. Defaults
            to `40`.
        max_rotation: Largest rotation in degrees. Defaults to `20.0`.
        max_shear: Largest horizontal shear factor. Defaults to `0.2`.
        scale_range: `(low, high)` range of each axis' scale factor, with
            `0 < low <= high`. Defaults to `(0.8, 1.2)`.
        return_matrices: Whether to also return the maps applied, as affNIST
            provides its transformations. Defaults to `False`.

    Returns:
        A tuple `(images, labels)`: `images` of shape
        `(num_images, frame_size, frame_size, 1)`, float32, and `labels`
        `(num_images,)`, int64. With `return_matrices`, a third array
        `(num_images, 2, 3)`, float64: matrix `M` sends the source pixel
        `(row, col)` to `M[:, :2] @ (row, col) + M[:, 2]` in the frame.

    Example:

    >>> import numpy as np
    >>> import keras_capsules
    >>> digits = np.zeros((3, 28, 28), "uint8")
    >>> digits[:, 6:22, 10:18] = 255
    >>> x, y = keras_capsules.datasets.affine_mnist(digits, np.array([1, 1, 7]))
    >>> x.shape, x.dtype.name, y.tolist()
    ((3, 40, 40, 1), 'float32', [1, 1, 7])
    >>> bool(x[:, 0].any() or x[:, -1].any() or x[:, :, 0].any())
    False

    Reference:
    - [Sabour et al., 2017](https://arxiv.org/abs/1710.09829), section 5.2.
    - [affNIST](http://www.cs.toronto.edu/~tijmen/affNIST/), Tieleman 2013.
    """
    digits = _digits.as_digits(images)
    classes = _digits.as_labels(labels, len(digits))
    rng = np.random.default_rng(_digits.check_seed(seed))
    frame_size = _digits.check_positive_int("frame_size", frame_size)
    if frame_size < 3:
        raise ValueError(
            "Expected `frame_size` of at least 3, to hold a digit inside a "
            f"blank border. Received: frame_size={frame_size}"
        )
    max_rotation = _digits.check_non_negative_float("max_rotation", max_rotation)
    max_shear = _digits.check_non_negative_float("max_shear", max_shear)
    scale_low, scale_high = _check_scale_range(scale_range)

    def draw(num: int) -> np.ndarray:
        theta = np.deg2rad(rng.uniform(-max_rotation, max_rotation, num))
        shear = rng.uniform(-max_shear, max_shear, num)
        scale = rng.uniform(scale_low, scale_high, (num, 2))
        cos, sin = np.cos(theta), np.sin(theta)
        zero, one = np.zeros(num), np.ones(num)
        rotate = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], 1)
        skew = np.stack([np.stack([one, zero], -1), np.stack([shear, one], -1)], 1)
        return (rotate @ skew) * scale[:, None, :]

    num, height, width = digits.shape
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    low, high = _geometry.support_bounds(digits)
    # The translation comes first off the generator, as in `expanded_mnist`.
    uniform = rng.random((num, 2))
    linear = draw(num)
    for redraws in range(_MAX_REDRAWS + 1):
        extent = _geometry.mapped_extent(linear, low, high, centre)
        first, last = _geometry.offset_bounds(*extent, frame_size)
        misfit = np.flatnonzero((first > last).any(axis=1))
        if not misfit.size:
            break
        if redraws < _MAX_REDRAWS:
            linear[misfit] = draw(len(misfit))
    else:
        # Still too large after every redraw: shrink, as a span of at most
        # `frame_size - 2` leaves room for an integer offset.
        span = (extent[1] - extent[0])[misfit].max(axis=1)
        linear[misfit] *= ((frame_size - 2) / span)[:, None, None]
        extent = _geometry.mapped_extent(linear, low, high, centre)
        first, last = _geometry.offset_bounds(*extent, frame_size)
    offsets = _geometry.integer_offsets(uniform, first, last)
    matrices = np.concatenate(
        [linear, (centre + offsets - linear @ centre)[..., None]], axis=-1
    )
    frames = _geometry.warp_bilinear(digits, matrices, frame_size)[..., None]
    if return_matrices:
        return frames, classes, matrices
    return frames, classes


def _check_scale_range(scale_range: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in scale_range)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not (0 < low <= high < float("inf")):
        raise ValueError(
            "Received an invalid value for `scale_range`, expected a pair "
            f"(low, high) with 0 < low <= high. Received: scale_range={scale_range!r}"
        )
    return low, high
