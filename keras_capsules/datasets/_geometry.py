"""Placing and warping digits in larger frames, in NumPy.

Coordinates are `(row, col)` of pixel centres: pixel `(0, 0)` is at
`(0.0, 0.0)`. An affine map is a `(2, 3)` matrix `M` sending a source point
`p` to `M[:, :2] @ p + M[:, 2]` in the frame.
"""

from __future__ import annotations

import numpy as np

# Sample points are rounded to this grid before interpolating, so that a
# point meant to land exactly on a pixel row does despite float error, and a
# digit placed flush with the frame's edge leaks no 1e-16 tail past it.
_SNAP = 2.0**24
# Slack for float error when turning real offset bounds into integers.
_TOLERANCE = 1e-9
_CHUNK = 256


def integer_offsets(
    uniform: np.ndarray, low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """Integers uniform in `[low, high]`, from uniforms in `[0, 1)`.

    Both `expanded_mnist` and `affine_mnist` draw their translation this
    way, from the same first draw of the generator, so that an affine map
    that is the identity places a digit exactly where `expanded_mnist` does.
    """
    offsets = low + np.floor(uniform * (high - low + 1)).astype(np.int64)
    return np.minimum(offsets, high)


def place(frames: np.ndarray, digits: np.ndarray, offsets: np.ndarray) -> None:
    """Writes `digits[i]` into `frames[i]` with its top-left at `offsets[i]`."""
    height, width = digits.shape[1:]
    unique, inverse = np.unique(offsets, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    # One slice assignment per distinct offset rather than one per digit:
    # there are at most (2 * max_shift + 1) ** 2 of them.
    for k, (row, col) in enumerate(unique):
        index = np.flatnonzero(inverse == k)
        frames[index, row : row + height, col : col + width] = digits[index]


def support_bounds(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corners `(row, col)` of each digit's nonzero pixels, widened by 1.

    Bilinear sampling reads a pixel from up to one pixel away, so the open
    box `(low, high)` holds every point at which the digit can be nonzero.
    An empty digit counts as filling its whole image.
    """
    low = np.empty((len(digits), 2))
    high = np.empty((len(digits), 2))
    for axis, reduce_over in ((0, 2), (1, 1)):
        occupied: np.ndarray = np.any(digits, axis=reduce_over)
        size = occupied.shape[1]
        empty = ~occupied.any(axis=1)
        first = np.where(empty, 0, occupied.argmax(axis=1))
        last = np.where(empty, size - 1, size - 1 - occupied[:, ::-1].argmax(axis=1))
        low[:, axis] = first - 1
        high[:, axis] = last + 1
    return low, high


def mapped_extent(
    linear: np.ndarray, low: np.ndarray, high: np.ndarray, centre: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box around the mapped support box, before translation.

    The map is `p -> linear @ (p - centre) + centre`: about the source
    image's centre, so that the identity leaves the digit where it was.
    """
    corners = np.stack(
        [
            low,
            np.stack([low[:, 0], high[:, 1]], axis=1),
            np.stack([high[:, 0], low[:, 1]], axis=1),
            high,
        ],
        axis=1,
    )
    mapped = np.einsum("nij,nkj->nki", linear, corners - centre) + centre
    return mapped.min(axis=1), mapped.max(axis=1)


def offset_bounds(
    low: np.ndarray, high: np.ndarray, frame_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Integer translations keeping the open box `(low, high)` off the edge.

    A frame pixel can be nonzero only if it lies strictly inside the box;
    keeping the box within `[0, frame_size - 1]` leaves the outermost rows
    and columns of the frame blank, so that an output shows by itself that
    nothing was cut off. Empty (`first > last`) where the box spans more
    than `frame_size - 2`.
    """
    first = np.ceil(-low - _TOLERANCE).astype(np.int64)
    last = np.floor(frame_size - 1 - high + _TOLERANCE).astype(np.int64)
    return first, last


def warp_bilinear(
    digits: np.ndarray, matrices: np.ndarray, frame_size: int
) -> np.ndarray:
    """Frames `(n, frame_size, frame_size)` of digits under affine maps.

    Inverse mapping: each frame pixel reads the source at the preimage of
    its centre, bilinearly, with zeros outside the source image.
    """
    num, height, width = digits.shape
    # One zero row/col before and two after, so that both neighbours of any
    # point clipped to [-1, size] index the padded image.
    padded = np.pad(digits, ((0, 0), (1, 2), (1, 2))).reshape(num, -1 if num else 0)
    stride = width + 3
    grid = np.stack(
        np.meshgrid(np.arange(frame_size), np.arange(frame_size), indexing="ij"),
        axis=-1,
    ).reshape(-1, 2)
    inverse = np.linalg.inv(matrices[:, :, :2])
    shift = matrices[:, :, 2]
    frames = np.empty((num, frame_size * frame_size), np.float32)
    for start in range(0, num, _CHUNK):
        stop = min(start + _CHUNK, num)
        points = np.einsum(
            "nij,nqj->nqi", inverse[start:stop], grid - shift[start:stop, None]
        )
        points = np.round(points * _SNAP) / _SNAP
        rows = np.clip(points[..., 0], -1.0, height)
        cols = np.clip(points[..., 1], -1.0, width)
        row0 = np.floor(rows)
        col0 = np.floor(cols)
        row_frac = rows - row0
        col_frac = cols - col0
        base = (row0.astype(np.int64) + 1) * stride + col0.astype(np.int64) + 1
        top_left, top_right, bottom_left, bottom_right = (
            np.take_along_axis(padded[start:stop], base + step, axis=1)
            for step in (0, 1, stride, stride + 1)
        )
        frames[start:stop] = (
            (1 - row_frac) * (1 - col_frac) * top_left
            + (1 - row_frac) * col_frac * top_right
            + row_frac * (1 - col_frac) * bottom_left
            + row_frac * col_frac * bottom_right
        )
    return frames.reshape(num, frame_size, frame_size)
