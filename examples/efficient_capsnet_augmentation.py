"""The MNIST augmentation of Efficient-CapsNet's authors (Mazzia et al., 2021).

Their `utils/pre_process_mnist.py` draws, for every training image in turn:

1. a rotation about the centre, for half the images only, by
   `int(30 * clip(N(0, 0.33), -0.9999, 0.9999))` degrees (most angles are
   small: the standard deviation is about 10 degrees);
2. a shift that keeps the digit inside the image: along each axis a random
   side, and `floor(min(|N(0, 0.33)|, 0.9999) * margin)` pixels, the margin
   being the empty rows or columns on that side (one more on the right and
   bottom);
3. a horizontal squish: the image narrowed by `floor(7 * min(|N(0, 0.33)|,
   0.9999)) + 1` pixels (1 to 7; a quarter of the width on other sizes) and put back at an offset of half that, plus
   0 or 1;
4. a 4x4 patch set to 0, its corner at a row and a column in [4, 22].

The distributions are theirs; the resampling is not: both geometric steps are
computed with `keras.ops.image.affine_transform` (bilinear), where they
use OpenCV for the rotation and a Lanczos resize for the squish. Keras's
random preprocessing layers draw uniform factors for every image, so they
cannot express "half the images" or a normal law of angles and shifts
bounded by each digit's margins; this module keeps to `keras.ops` and NumPy
instead, and runs on every backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SIZE_DEVIATION = 0.33
MAX_ROTATION_DEGREES = 30
ERASED_PATCH = 4


def _folded_normal(rng: np.random.Generator, shape: Any) -> Any:
    """`min(|N(0, 0.33)|, 0.9999)`, the authors' draw of an amount in [0, 1)."""
    return np.minimum(np.abs(rng.normal(0.0, SIZE_DEVIATION, shape)), 0.9999)


def _transform(images: Any, transforms: Any) -> Any:
    import keras

    return keras.ops.convert_to_numpy(
        keras.ops.image.affine_transform(
            keras.ops.convert_to_tensor(images),
            keras.ops.convert_to_tensor(transforms.astype("float32")),
            interpolation="bilinear",
            fill_mode="constant",
            fill_value=0.0,
        )
    )


def _rotations(rng: np.random.Generator, count: int, height: int, width: int) -> Any:
    """Output-to-input maps rotating half the images about the centre."""
    draws = np.clip(rng.normal(0.0, SIZE_DEVIATION, (count, 2)), -0.9999, 0.9999)
    degrees = np.trunc(draws[:, 0] * MAX_ROTATION_DEGREES)
    degrees[draws[:, 1] > 0] = 0.0
    theta = np.deg2rad(degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    center_x, center_y = width / 2, height / 2
    # input = R(-theta) (output - centre) + centre, as [a0 a1 a2 b0 b1 b2 0 0].
    transforms = np.zeros((count, 8))
    transforms[:, 0], transforms[:, 1] = cos, sin
    transforms[:, 3], transforms[:, 4] = -sin, cos
    transforms[:, 2] = center_x - cos * center_x - sin * center_y
    transforms[:, 5] = center_y + sin * center_x - cos * center_y
    return transforms


def _margins(images: Any) -> tuple[Any, Any, Any, Any]:
    """Empty columns left and right, rows above and below, of each image."""
    ink = (images > 0).any(axis=-1)
    columns, rows = ink.any(axis=1), ink.any(axis=2)
    # An empty image has no margins to shift within.
    left = np.where(columns.any(1), columns.argmax(1), 0)
    right = np.where(columns.any(1), columns[:, ::-1].argmax(1), 0)
    top = np.where(rows.any(1), rows.argmax(1), 0)
    bottom = np.where(rows.any(1), rows[:, ::-1].argmax(1), 0)
    return left, right, top, bottom


def _shifts_and_squishes(rng: np.random.Generator, images: Any) -> Any:
    """Output-to-input maps shifting each digit within its margins, then squishing it."""
    count, _, width = images.shape[:3]
    left, right, top, bottom = _margins(images)
    sides = rng.uniform(size=(count, 2)) < 0.5
    amounts = _folded_normal(rng, (count, 2))
    shift_x = np.where(
        sides[:, 1],
        np.floor(-amounts[:, 0] * left),
        np.floor(amounts[:, 0] * (right + 1)),
    )
    shift_y = np.where(
        sides[:, 0],
        np.floor(-amounts[:, 1] * top),
        np.floor(amounts[:, 1] * (bottom + 1)),
    )
    squish = _folded_normal(rng, (count, 2))
    # Up to a quarter of the width: 7 pixels on MNIST, as theirs.
    narrowed = np.floor(squish[:, 0] * (width // 4)) + 1
    offset = narrowed // 2 + np.floor(squish[:, 1] * 2)
    scale = width / (width - narrowed)
    transforms = np.zeros((count, 8))
    # Squished column u shows shifted column (u - offset + 0.5) * scale - 0.5,
    # which shows input column that minus shift_x: half-pixel centres, as a resize.
    transforms[:, 0] = scale
    transforms[:, 2] = (0.5 - offset) * scale - 0.5 - shift_x
    transforms[:, 4] = 1.0
    transforms[:, 5] = -shift_y
    return transforms


def _erase_patches(rng: np.random.Generator, images: Any) -> Any:
    """Each image with one 4x4 patch, its corner at [4, 22] in both axes, set to 0."""
    count, height, width = images.shape[:3]
    corners = (
        np.floor(rng.uniform(size=(count, 2)) * (np.array([height, width]) - 9)).astype(
            int
        )
        + ERASED_PATCH
    )
    offsets = np.arange(ERASED_PATCH)
    rows = corners[:, :1, None] + offsets[None, :, None]
    cols = corners[:, None, 1:] + offsets[None, None, :]
    erased = images.copy()
    erased[np.arange(count)[:, None, None], rows, cols] = 0.0
    return erased


def augment(images: Any, rng: np.random.Generator) -> Any:
    """`images` (N, H, W, 1) in [0, 1], augmented as the authors' MNIST pipeline does.

    Rotation, then shift and squish (one resampling, computed from the
    rotated digit's margins), then the erased patch; values clipped to
    [0, 1], float32. Deterministic for a given `rng` state.
    """
    images = np.asarray(images, "float32")
    if images.ndim != 4 or images.shape[-1] != 1:
        raise ValueError(
            "`images` must be a batch of one-channel images, (N, H, W, 1). "
            f"Received: images.shape={images.shape}"
        )
    count, height, width = images.shape[:3]
    if count == 0:
        return images
    rotated = _transform(images, _rotations(rng, count, height, width))
    # Bilinear resampling leaves faint ink where there was none: ignore it
    # when measuring the margins, as the authors' integer images would.
    rotated = np.where(rotated > 1e-3, rotated, 0.0).astype("float32")
    moved = _transform(rotated, _shifts_and_squishes(rng, rotated))
    return np.clip(_erase_patches(rng, moved), 0.0, 1.0).astype("float32")


def main(argv: list[str] | None = None) -> int:
    """Answers --help: this module is imported, not run."""
    import argparse
    import sys

    argparse.ArgumentParser(
        prog="efficient_capsnet_augmentation.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="This module is not a script: capsnet_mnist.py --model "
        "efficient-capsnet imports its `augment(images, rng)`. Run that, e.g. "
        "python examples/capsnet_mnist.py --model efficient-capsnet --help.",
    ).parse_args(argv)
    print(
        "efficient_capsnet_augmentation.py is a module that "
        "capsnet_mnist.py imports, not a script; see --help",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
