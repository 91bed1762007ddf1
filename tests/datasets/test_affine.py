"""Tests of `affine_mnist`: affNIST-like digits kept whole inside the frame."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_capsules.datasets import affine_mnist, expanded_mnist
from tests.datasets import border, distinct_digits, offsets_of, reference_warp

IDENTITY = {"max_rotation": 0, "max_shear": 0, "scale_range": (1, 1)}


def blocky_digits(num: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish strokes in a 28x28 image, like MNIST's 20x20 digit box."""
    rng = np.random.default_rng(seed)
    digits = np.zeros((num, 28, 28), np.uint8)
    for digit in digits:
        for _ in range(3):
            row, col = rng.integers(4, 20, 2)
            digit[row : row + 5, col : col + 4] = rng.integers(128, 256)
    return digits


def decompose(matrices: np.ndarray):
    """Rotation (degrees), shear and (row, col) scales of `R @ H @ S`."""
    linear = matrices[:, :, :2]
    col_scale = np.linalg.norm(linear[:, :, 1], axis=1)
    theta = np.arctan2(-linear[:, 0, 1], linear[:, 1, 1])
    cos, sin = np.cos(theta), np.sin(theta)
    # R^T @ A = H @ S = [[row_scale, 0], [shear * row_scale, col_scale]].
    row_scale = cos * linear[:, 0, 0] + sin * linear[:, 1, 0]
    lower = -sin * linear[:, 0, 0] + cos * linear[:, 1, 0]
    return np.rad2deg(theta), lower / row_scale, row_scale, col_scale


def test_shapes_and_dtypes():
    digits = blocky_digits(4)
    images, labels, matrices = affine_mnist(
        digits, np.array([1, 2, 3, 4], np.uint8), return_matrices=True
    )
    assert images.shape == (4, 40, 40, 1) and images.dtype == np.float32
    assert labels.dtype == np.int64 and labels.tolist() == [1, 2, 3, 4]
    assert matrices.shape == (4, 2, 3) and matrices.dtype == np.float64
    assert len(affine_mnist(digits, np.arange(4), frame_size=48)) == 2


def test_transformations_stay_within_the_affnist_ranges():
    digits = blocky_digits(300)
    _, _, matrices = affine_mnist(digits, np.zeros(300, int), return_matrices=True)
    theta, shear, row_scale, col_scale = decompose(matrices)
    assert np.abs(theta).max() <= 20 + 1e-9 and np.abs(theta).max() > 15
    assert np.abs(shear).max() <= 0.2 + 1e-9 and np.abs(shear).max() > 0.15
    for scale in (row_scale, col_scale):
        assert scale.min() >= 0.8 - 1e-9 and scale.max() <= 1.2 + 1e-9
        assert scale.min() < 0.85 and scale.max() > 1.15


def test_zero_ranges_place_the_digit_where_expanded_mnist_does():
    # A blank 1-pixel margin: affine offsets then span 0..12 like expanded.
    digits = np.pad(distinct_digits(30, 26, 26), ((0, 0), (1, 1), (1, 1)))
    for seed in (0, 1, 2):
        affine, _ = affine_mnist(digits, np.arange(30), seed=seed, **IDENTITY)
        expanded, _ = expanded_mnist(digits, np.arange(30), seed=seed)
        np.testing.assert_array_equal(affine, expanded)


def test_zero_ranges_copy_any_digit_unchanged():
    digits = blocky_digits(20)
    images, _, matrices = affine_mnist(
        digits, np.arange(20), seed=3, return_matrices=True, **IDENTITY
    )
    for image, digit, matrix in zip(images, digits.astype(np.float32) / 255, matrices):
        # The blank margin of the 28x28 image may hang over the frame's edge.
        row, col = matrix[:, 2].astype(int)
        assert offsets_of(np.pad(image[..., 0], 28), digit) == [(row + 28, col + 28)]
        np.testing.assert_array_equal(matrix[:, :2], np.eye(2))


def test_warp_matches_an_independent_reference_and_loses_nothing():
    digits = blocky_digits(12, seed=1).astype(np.float32) / 255
    images, _, matrices = affine_mnist(
        digits, np.arange(12), seed=2, return_matrices=True
    )
    for image, digit, matrix in zip(images[..., 0], digits, matrices):
        reference = reference_warp(digit, matrix, 40, pad=6)
        np.testing.assert_allclose(image, reference[6:-6, 6:-6], atol=1e-5)
        outside = reference.copy()
        outside[7:-7, 7:-7] = 0  # what falls on or beyond the frame's edge
        assert np.abs(outside).max() < 1e-6


def test_mass_scales_with_the_determinant():
    digits = blocky_digits(100, seed=3)
    images, _, matrices = affine_mnist(
        digits, np.arange(100), seed=4, return_matrices=True
    )
    ratio = images.sum(axis=(1, 2, 3)) / (digits.sum(axis=(1, 2)) / 255)
    ratio /= np.linalg.det(matrices[:, :, :2])
    np.testing.assert_allclose(ratio, 1.0, atol=0.05)


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(1, 28),
    frame_size=st.integers(3, 44),
    max_rotation=st.floats(0, 180),
    max_shear=st.floats(0, 1),
    scale_low=st.floats(0.3, 2.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_frame_edge_stays_blank(
    size, frame_size, max_rotation, max_shear, scale_low, seed
):
    # Full blocks, up to larger than the frame: redraws and shrinking alike.
    digits = np.ones((4, size, size), np.float32)
    images, _, matrices = affine_mnist(
        digits,
        np.arange(4),
        seed=seed,
        frame_size=frame_size,
        max_rotation=max_rotation,
        max_shear=max_shear,
        scale_range=(scale_low, scale_low * 1.5),
        return_matrices=True,
    )
    assert images.shape == (4, frame_size, frame_size, 1)
    assert not border(images).any()
    assert images.min() >= 0 and images.max() <= 1 + 1e-6
    for image, digit, matrix in zip(images[..., 0], digits, matrices):
        reference = reference_warp(digit, matrix, frame_size, pad=2)
        np.testing.assert_allclose(image, reference[2:-2, 2:-2], atol=1e-5)
        # A block's footprint is connected: had any of it left the frame, it
        # would cross this band around the edge.
        reference[3:-3, 3:-3] = 0
        assert np.abs(reference).max() < 1e-6


def test_same_seed_same_output_and_different_seed_different_output():
    digits = blocky_digits(10)
    first, _ = affine_mnist(digits, np.arange(10), seed=5)
    again, _ = affine_mnist(digits, np.arange(10), seed=5)
    other, _ = affine_mnist(digits, np.arange(10), seed=6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_uint8_and_float_inputs_give_the_same_result():
    digits = blocky_digits(8)
    reference, _ = affine_mnist(digits, np.arange(8))
    for variant in (digits / 255.0, (digits.astype(np.float32) / 255)[..., None]):
        images, _ = affine_mnist(variant, np.arange(8))
        np.testing.assert_array_equal(images, reference)


def test_empty_digits_and_empty_input():
    images, _ = affine_mnist(np.zeros((3, 28, 28)), np.arange(3))
    assert not images.any()
    images, labels = affine_mnist(np.zeros((0, 28, 28)), np.zeros(0, int))
    assert images.shape == (0, 40, 40, 1) and labels.shape == (0,)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_rotation": -1}, r"`max_rotation`.*max_rotation=-1"),
        ({"max_shear": float("nan")}, r"`max_shear`.*max_shear=nan"),
        ({"max_shear": "0.2"}, r"`max_shear`.*max_shear='0.2'"),
        ({"scale_range": (0, 1)}, r"`scale_range`.*scale_range=\(0, 1\)"),
        ({"scale_range": (1.2, 0.8)}, r"`scale_range`.*0 < low <= high"),
        ({"scale_range": 1.0}, r"`scale_range`.*scale_range=1.0"),
        ({"scale_range": (1, 2, 3)}, r"`scale_range`.*scale_range=\(1, 2, 3\)"),
        ({"frame_size": 2}, r"`frame_size` of at least 3.*frame_size=2"),
        ({"frame_size": 40.0}, r"`frame_size`.*frame_size=40.0"),
        ({"labels": [0, 1, 2]}, r"`labels`.*labels.shape=\(3,\)"),
        ({"seed": "a"}, r"`seed`.*seed='a'"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, message):
    arguments = {"images": blocky_digits(2), "labels": [0, 1], **kwargs}
    with pytest.raises(ValueError, match=message):
        affine_mnist(**arguments)
