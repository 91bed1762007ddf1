"""Tests of `multi_mnist`: pairs of shifted digits of different classes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_capsules.datasets import multi_mnist
from tests.datasets import distinct_digits, offsets_of

LABELS = np.array([0, 1, 2, 0, 1, 2, 3, 3])


def test_shapes_and_dtypes():
    digits = np.random.default_rng(0).integers(0, 256, (5, 28, 28), np.uint8)
    images, labels, parts = multi_mnist(digits, np.array([3, 1, 4, 1, 5]))
    assert images.shape == (5, 36, 36, 1) and images.dtype == np.float32
    assert labels.shape == (5, 2) and labels.dtype == np.int64
    assert parts.shape == (5, 2, 36, 36, 1) and parts.dtype == np.float32


def test_frame_grows_by_twice_the_shift_on_each_axis():
    digits = distinct_digits(4, height=5, width=7)
    images, _, parts = multi_mnist(digits, [0, 1, 0, 1], max_shift=2)
    assert images.shape == (4, 9, 11, 1)
    assert parts.shape == (4, 2, 9, 11, 1)


def test_source_class_first_and_classes_differ():
    digits = distinct_digits(len(LABELS))
    _, labels, _ = multi_mnist(digits, LABELS, pairs_per_image=3, seed=1)
    np.testing.assert_array_equal(labels[:, 0], np.repeat(LABELS, 3))
    assert np.all(labels[:, 0] != labels[:, 1])


def test_image_is_the_clipped_sum_of_the_parts():
    digits = np.random.default_rng(2).random((20, 28, 28)).astype(np.float32)
    images, _, parts = multi_mnist(digits, np.arange(20) % 4, seed=3)
    np.testing.assert_array_equal(images, np.clip(parts[:, 0] + parts[:, 1], 0, 1))
    assert images.max() <= 1.0 and images.min() >= 0.0


def test_parts_are_shifted_copies_of_their_digits():
    digits = distinct_digits(len(LABELS))
    as_float = digits.astype(np.float32) / 255
    max_shift = 3
    _, labels, parts = multi_mnist(
        digits, LABELS, pairs_per_image=4, max_shift=max_shift, seed=4
    )
    for i, (own, other) in enumerate(labels):
        # Offsets are `max_shift + shift`, shift in [-max_shift, max_shift].
        assert offsets_of(parts[i, 0], as_float[i // 4]), i
        (partner,) = [
            j
            for j in np.flatnonzero(LABELS == other)
            if offsets_of(parts[i, 1], as_float[j])
        ]
        assert LABELS[partner] != own


def test_every_other_class_digit_can_be_the_partner():
    digits = distinct_digits(len(LABELS))
    as_float = digits.astype(np.float32) / 255
    _, _, parts = multi_mnist(digits, LABELS, pairs_per_image=300, max_shift=0)
    partners = {
        j
        for part in parts[:300, 1, ..., 0]
        for j in range(len(digits))
        if np.array_equal(part, as_float[j])
    }
    assert partners == set(np.flatnonzero(LABELS != LABELS[0]).tolist())


def test_shifts_cover_the_range():
    digits = distinct_digits(2)
    _, _, parts = multi_mnist(digits, [0, 1], pairs_per_image=400, max_shift=2)
    as_float = digits.astype(np.float32) / 255
    seen = {offsets_of(part, as_float[0])[0] for part in parts[:400, 0]}
    assert seen == {(row, col) for row in range(5) for col in range(5)}


def test_same_seed_same_output_and_different_seed_different_output():
    digits = distinct_digits(len(LABELS))
    first = multi_mnist(digits, LABELS, pairs_per_image=2, seed=7)
    again = multi_mnist(digits, LABELS, pairs_per_image=2, seed=7)
    other = multi_mnist(digits, LABELS, pairs_per_image=2, seed=8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[2], other[2])


def test_uint8_and_float_inputs_give_the_same_result():
    digits = np.random.default_rng(5).integers(0, 256, (8, 28, 28), np.uint8)
    reference = multi_mnist(digits, LABELS)
    for variant in (
        digits.astype(np.float32) / 255,
        digits / 255.0,
        digits[..., None],
        (digits / 255.0)[..., None],
    ):
        for a, b in zip(reference, multi_mnist(variant, LABELS)):
            np.testing.assert_array_equal(a, b)


def test_numpy_integers_are_accepted():
    digits = distinct_digits(4)
    images, _, _ = multi_mnist(
        digits,
        np.array([0, 1, 0, 1], np.uint8),
        pairs_per_image=np.int64(2),
        max_shift=np.int32(1),
        seed=np.uint64(3),
    )
    assert images.shape == (8, 8, 7, 1)


@settings(max_examples=30, deadline=None)
@given(
    num=st.integers(2, 7),
    num_classes=st.integers(2, 4),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    max_shift=st.integers(0, 3),
    pairs_per_image=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_pair_properties(
    num, num_classes, height, width, max_shift, pairs_per_image, seed
):
    digits = distinct_digits(num, height, width, seed=seed % 1000)
    labels_in = np.arange(num) % min(num, num_classes)
    images, labels, parts = multi_mnist(
        digits, labels_in, pairs_per_image, max_shift, seed
    )
    assert images.shape == (
        num * pairs_per_image,
        height + 2 * max_shift,
        width + 2 * max_shift,
        1,
    )
    np.testing.assert_array_equal(images, np.clip(parts[:, 0] + parts[:, 1], 0, 1))
    assert np.all(labels[:, 0] != labels[:, 1])
    as_float = digits.astype(np.float32) / 255
    for i in range(len(images)):
        assert offsets_of(parts[i, 0], as_float[i // pairs_per_image])
        partners = np.flatnonzero(labels_in == labels[i, 1])
        assert any(offsets_of(parts[i, 1], as_float[j]) for j in partners)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"labels": [0, 1, 2]},
            r"`labels` of shape \(num_images,\).*num_images=4.*labels.shape=\(3,\)",
        ),
        ({"labels": [[0], [1], [0], [1]]}, r"`labels`.*labels.shape=\(4, 1\)"),
        ({"labels": [0.0, 1.0, 0.0, 1.0]}, r"integer class indices in `labels`"),
        ({"labels": [2, 2, 2, 2]}, r"`labels` with at least 2 distinct classes.*\[2\]"),
        ({"max_shift": -1}, r"`max_shift`.*non-negative.*max_shift=-1"),
        ({"max_shift": 1.5}, r"`max_shift`.*max_shift=1.5"),
        ({"max_shift": True}, r"`max_shift`.*max_shift=True"),
        ({"pairs_per_image": 0}, r"`pairs_per_image`.*positive.*pairs_per_image=0"),
        ({"seed": -3}, r"`seed`.*seed=-3"),
        ({"images": np.zeros((4, 28))}, r"`images` of shape.*images.shape=\(4, 28\)"),
        ({"images": np.zeros((4, 5, 5, 3))}, r"images.shape=\(4, 5, 5, 3\)"),
        ({"images": np.full((4, 5, 5), 2.0)}, r"float `images` in \[0, 1\]"),
        ({"images": np.full((4, 5, 5), np.nan)}, r"float `images` in \[0, 1\]"),
        ({"images": np.full((4, 5, 5), 300)}, r"integer `images` in \[0, 255\]"),
        ({"images": np.full((4, 5, 5), "a")}, r"`images` of an integer or float"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, message):
    arguments = {"images": distinct_digits(4), "labels": [0, 1, 0, 1], **kwargs}
    with pytest.raises(ValueError, match=message):
        multi_mnist(**arguments)
