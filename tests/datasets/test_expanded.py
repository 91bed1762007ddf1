"""Tests of `expanded_mnist`: digits copied at random translations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_capsules.datasets import expanded_mnist
from tests.datasets import distinct_digits, offsets_of


def test_shapes_and_dtypes():
    digits = np.random.default_rng(0).integers(0, 256, (3, 28, 28), np.uint8)
    images, labels = expanded_mnist(digits, np.array([7, 2, 1], np.uint8))
    assert images.shape == (3, 40, 40, 1) and images.dtype == np.float32
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [7, 2, 1])


def test_each_digit_is_copied_unchanged_inside_the_frame():
    digits = distinct_digits(50, height=28, width=28)
    images, _ = expanded_mnist(digits, np.zeros(50, np.int64), seed=1)
    for image, digit in zip(images, digits.astype(np.float32) / 255):
        # The search covers offsets 0..12, so the whole digit is inside.
        assert len(offsets_of(image, digit)) == 1


def test_translations_cover_every_offset():
    digits = distinct_digits(600, height=3, width=2)
    images, _ = expanded_mnist(digits, np.zeros(600, np.int64), frame_size=6)
    seen = {
        offsets_of(image, digit)[0]
        for image, digit in zip(images, digits.astype(np.float32) / 255)
    }
    assert seen == {(row, col) for row in range(4) for col in range(5)}


def test_a_frame_the_size_of_the_digit_copies_it():
    digits = distinct_digits(4, height=5, width=5)
    images, _ = expanded_mnist(digits, [0, 1, 2, 3], frame_size=5)
    np.testing.assert_array_equal(images[..., 0], digits.astype(np.float32) / 255)


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(1, 8),
    width=st.integers(1, 8),
    margin=st.integers(0, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_placement_property(height, width, margin, seed):
    digits = distinct_digits(5, height, width, seed=seed % 1000)
    frame_size = max(height, width) + margin
    images, _ = expanded_mnist(digits, np.arange(5), frame_size, seed)
    for image, digit in zip(images, digits.astype(np.float32) / 255):
        assert len(offsets_of(image, digit)) == 1


def test_same_seed_same_output_and_different_seed_different_output():
    digits = distinct_digits(10, height=28, width=28)
    first, _ = expanded_mnist(digits, np.arange(10), seed=5)
    again, _ = expanded_mnist(digits, np.arange(10), seed=5)
    other, _ = expanded_mnist(digits, np.arange(10), seed=6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_uint8_and_float_inputs_give_the_same_result():
    digits = np.random.default_rng(5).integers(0, 256, (8, 28, 28), np.uint8)
    reference, _ = expanded_mnist(digits, np.arange(8))
    for variant in (digits / 255.0, (digits.astype(np.float32) / 255)[..., None]):
        images, _ = expanded_mnist(variant, np.arange(8))
        np.testing.assert_array_equal(images, reference)


def test_empty_input_gives_empty_output():
    images, labels = expanded_mnist(np.zeros((0, 28, 28), np.uint8), [])
    assert images.shape == (0, 40, 40, 1) and labels.shape == (0,)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"frame_size": 27}, r"`frame_size`.*frame_size=27.*\(2, 28, 28\)"),
        ({"frame_size": 0}, r"`frame_size`.*positive.*frame_size=0"),
        ({"labels": [1]}, r"`labels`.*num_images=2.*labels.shape=\(1,\)"),
        ({"seed": 1.5}, r"`seed`.*seed=1.5"),
        ({"images": np.zeros(28)}, r"`images` of shape.*images.shape=\(28,\)"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, message):
    arguments = {"images": distinct_digits(2, 28, 28), "labels": [0, 1], **kwargs}
    with pytest.raises(ValueError, match=message):
        expanded_mnist(**arguments)
