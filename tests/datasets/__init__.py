"""Tests of `keras_capsules.datasets`, with helpers they share.

The builders are NumPy only, so these pass alike under every KERAS_BACKEND.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def distinct_digits(num: int, height: int = 6, width: int = 5, seed: int = 0):
    """Noise digits with no zero pixel, so a placed copy has one position."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, 256, (num, height, width), dtype=np.uint8)


def offsets_of(frame: np.ndarray, digit: np.ndarray) -> list[tuple[int, int]]:
    """Top-left offsets at which `frame` is exactly `digit` pasted on zeros."""
    frame = np.squeeze(frame, axis=-1) if frame.ndim == 3 else frame
    windows = sliding_window_view(frame, digit.shape)
    found = []
    for row, col in np.argwhere((windows == digit).all(axis=(2, 3))):
        pasted = np.zeros_like(frame)
        pasted[row : row + digit.shape[0], col : col + digit.shape[1]] = digit
        if np.array_equal(pasted, frame):
            found.append((int(row), int(col)))
    return found


def reference_warp(
    digit: np.ndarray, matrix: np.ndarray, frame_size: int, pad: int = 0
) -> np.ndarray:
    """Bilinear inverse warp written as tent weights over every source pixel.

    Independent of the package's floor-and-gather code. Returns the frame
    grown by `pad` pixels on each side, to see what would fall outside it.
    """
    coords = np.arange(-pad, frame_size + pad)
    grid = np.stack(np.meshgrid(coords, coords, indexing="ij"), -1).reshape(-1, 2)
    points = (grid - matrix[:, 2]) @ np.linalg.inv(matrix[:, :2]).T
    row_weights = np.maximum(
        0.0, 1.0 - np.abs(points[:, :1] - np.arange(digit.shape[0]))
    )
    col_weights = np.maximum(
        0.0, 1.0 - np.abs(points[:, 1:] - np.arange(digit.shape[1]))
    )
    values = np.einsum("qh,hw,qw->q", row_weights, digit, col_weights)
    return values.reshape(len(coords), len(coords))


def border(frames: np.ndarray) -> np.ndarray:
    """The outermost rows and columns of each `(num, size, size, 1)` frame."""
    return np.concatenate(
        [frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1
    )
