"""MultiMNIST: pairs of overlapping digits of different classes."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_capsules.datasets import _digits, _geometry


def multi_mnist(
    images: Any,
    labels: Any,
    pairs_per_image: int = 1,
    max_shift: int = 4,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlays each digit with a digit of another class, as in MultiMNIST.

    For every source digit (`pairs_per_image` times), a second digit of a
    different class is drawn uniformly from the other-class digits of the
    same `images`, so train pairs come from the train split and test pairs
    from the test split. Each digit of the pair is shifted by its own random
    integer offset in `[-max_shift, max_shift]` along each axis inside a
    frame `max_shift` pixels larger on every side (36x36 for MNIST and the
    default shift of 4): digit `k` has its top-left corner at
    `(max_shift + dy_k, max_shift + dx_k)`. The image is the pixelwise sum of
    the two shifted digits, clipped to `[0, 1]`.

    Sabour et al. generate 1,000 pairs per training digit. Rather than
    materialising 60 million images, call this once per epoch with a new
    `seed`. Output `i` is built on source digit `i // pairs_per_image`.

    Args:
        images: Digits `(num_images, height, width)` or
            `(num_images, height, width, 1)`: uint8 (scaled by 1/255) or
            float in `[0, 1]`.
        labels: Integer class of each digit, shape `(num_images,)`, with at
            least two distinct classes.
        pairs_per_image: Pairs built on each source digit, each with its own
            partner and shifts. Defaults to `1`.
        max_shift: Largest shift in pixels along each axis. Defaults to `4`.
        seed: Seed for `numpy.random.default_rng`; the same seed and inputs
            give the same pairs. `None` draws fresh entropy. Defaults to `0`.

    Returns:
        A tuple `(images, labels, parts)`: `images` of shape
        `(num_pairs, height + 2 * max_shift, width + 2 * max_shift, 1)`,
        float32; `labels` `(num_pairs, 2)`, int64, the source digit's class
        first; `parts` `(num_pairs, 2, height + 2 * max_shift,
        width + 2 * max_shift, 1)`, float32, each shifted digit alone (the
        decoder's reconstruction targets), with
        `images == clip(parts[:, 0] + parts[:, 1], 0, 1)`.
        `num_pairs = num_images * pairs_per_image`.

    Example:

    >>> import numpy as np
    >>> import keras_capsules
    >>> digits = np.random.default_rng(0).integers(0, 256, (6, 28, 28), "uint8")
    >>> x, y, parts = keras_capsules.datasets.multi_mnist(
    ...     digits, np.array([0, 1, 2, 0, 1, 2]), pairs_per_image=2)
    >>> x.shape, y.shape, parts.shape
    ((12, 36, 36, 1), (12, 2), (12, 2, 36, 36, 1))
    >>> bool(np.all(y[:, 0] != y[:, 1]))
    True

    Reference:
    - [Sabour et al., 2017](https://arxiv.org/abs/1710.09829), section 6
      (MultiMNIST).
    """
    digits = _digits.as_digits(images)
    classes_of = _digits.as_labels(labels, len(digits))
    pairs_per_image = _digits.check_positive_int("pairs_per_image", pairs_per_image)
    max_shift = _digits.check_non_negative_int("max_shift", max_shift)
    rng = np.random.default_rng(_digits.check_seed(seed))

    order = np.argsort(classes_of, kind="stable")
    classes, starts, counts = np.unique(
        classes_of[order], return_index=True, return_counts=True
    )
    if len(classes) < 2:
        raise ValueError(
            "Expected `labels` with at least 2 distinct classes, to pair digits "
            f"of different classes. Received: classes {classes.tolist()} "
            f"in labels.shape={classes_of.shape}"
        )

    source = np.repeat(np.arange(len(digits)), pairs_per_image)
    own = np.searchsorted(classes, classes_of[source])
    # Digits sorted by class put the source's own class in one run
    # [start, start + count); a uniform index over the rest skips that run.
    pick = rng.integers(0, len(digits) - counts[own])
    pick = np.where(pick >= starts[own], pick + counts[own], pick)
    partner = order[pick]
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(source), 2, 2))

    height, width = digits.shape[1:]
    parts = np.zeros(
        (len(source), 2, height + 2 * max_shift, width + 2 * max_shift), np.float32
    )
    for k, index in enumerate((source, partner)):
        _geometry.place(parts[:, k], digits[index], max_shift + shifts[:, k])
    pairs = np.clip(parts[:, 0] + parts[:, 1], 0.0, 1.0)
    pair_labels = np.stack([classes_of[source], classes_of[partner]], axis=1)
    return pairs[..., None], pair_labels, parts[..., None]
