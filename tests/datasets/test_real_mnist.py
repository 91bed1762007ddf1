"""The dataset builders on a few hundred real MNIST digits: nothing clipped."""

from __future__ import annotations

import numpy as np
import pytest

from keras_capsules.datasets import affine_mnist, expanded_mnist, multi_mnist
from tests.datasets import border, offsets_of, reference_warp

NUM_DIGITS = 300


@pytest.fixture(scope="module")
def mnist(mnist_path):
    with np.load(mnist_path) as data:
        return data["x_test"][:NUM_DIGITS], data["y_test"][:NUM_DIGITS]


def test_multi_mnist_keeps_both_digits_whole(mnist):
    digits, labels = mnist
    images, pair_labels, parts = multi_mnist(digits, labels, pairs_per_image=2)
    assert images.shape == (2 * NUM_DIGITS, 36, 36, 1)
    assert np.all(pair_labels[:, 0] != pair_labels[:, 1])
    np.testing.assert_array_equal(pair_labels[:, 0], np.repeat(labels, 2))
    np.testing.assert_array_equal(images, np.clip(parts[:, 0] + parts[:, 1], 0, 1))
    as_float = digits.astype(np.float32) / 255
    for i in range(0, len(images), 10):
        assert offsets_of(parts[i, 0], as_float[i // 2])
    # Each part holds all of one digit: the partner's total is a digit total.
    totals = as_float.sum(axis=(1, 2))
    part_totals = parts.sum(axis=(2, 3, 4))
    np.testing.assert_allclose(part_totals[:, 0], np.repeat(totals, 2), rtol=1e-5)
    nearest = np.abs(part_totals[:, 1:] - totals).min(axis=1)
    assert nearest.max() < 1e-3


def test_expanded_mnist_copies_every_digit_whole(mnist):
    digits, labels = mnist
    images, out_labels = expanded_mnist(digits, labels)
    np.testing.assert_array_equal(out_labels, labels)
    for image, digit in zip(images, digits.astype(np.float32) / 255):
        assert len(offsets_of(image, digit)) >= 1


def test_affine_mnist_clips_no_digit(mnist):
    digits, labels = mnist
    images, out_labels, matrices = affine_mnist(
        digits, labels, seed=1, return_matrices=True
    )
    np.testing.assert_array_equal(out_labels, labels)
    assert not border(images).any()
    ratio = images.sum(axis=(1, 2, 3)) / (digits.sum(axis=(1, 2)) / 255)
    ratio /= np.linalg.det(matrices[:, :, :2])
    np.testing.assert_allclose(ratio, 1.0, atol=0.06)
    as_float = digits.astype(np.float32) / 255
    for i in range(0, NUM_DIGITS, 30):
        reference = reference_warp(as_float[i], matrices[i], 40, pad=8)
        np.testing.assert_allclose(images[i, ..., 0], reference[8:-8, 8:-8], atol=1e-5)
        assert reference.sum() == pytest.approx(images[i].sum(), rel=1e-5)


def test_affine_mnist_spreads_digits_over_the_frame(mnist):
    digits, labels = mnist
    images, _ = affine_mnist(digits, labels, seed=2)
    rows = np.flatnonzero(images.any(axis=(0, 2, 3)))
    cols = np.flatnonzero(images.any(axis=(0, 1, 3)))
    # Across 300 digits, ink reaches the second and second-to-last lines.
    assert rows.tolist() == list(range(1, 39))
    assert cols.tolist() == list(range(1, 39))
