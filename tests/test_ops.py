"""keras_capsules.ops against the NumPy reference of the paper, per backend.

Capsule math, losses and convolution; routing is in test_dynamic_routing.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules import ops as capsule_ops
from keras_capsules.ops.convolution import (
    CONV_IMPLEMENTATIONS,
    FASTEST_CONV_IMPLEMENTATION,
    resolve_conv_implementation,
)
from tests import numpy_reference
from tests.gradients import value_and_grads


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def test_squash_matches_reference():
    rng = np.random.default_rng(0)
    s = rng.normal(scale=2.0, size=(4, 6, 8)).astype("float32")
    expected = numpy_reference.squash(s)
    np.testing.assert_allclose(
        _numpy(capsule_ops.squash(s)), expected, rtol=1e-5, atol=1e-6
    )


def test_squash_other_axis_matches_reference():
    s = np.random.default_rng(1).normal(size=(3, 5, 2)).astype("float32")
    np.testing.assert_allclose(
        _numpy(capsule_ops.squash(s, axis=1)),
        numpy_reference.squash(s, axis=1),
        rtol=1e-5,
        atol=1e-6,
    )


def test_squash_of_zero_is_zero_with_finite_gradient():
    zeros = np.zeros((2, 3, 4), dtype="float32")
    assert np.array_equal(_numpy(capsule_ops.squash(zeros)), zeros)
    (grad,) = value_and_grads(lambda x: keras.ops.sum(capsule_ops.squash(x)), [zeros])[
        1
    ]
    assert np.all(np.isfinite(grad)), grad


def test_squash_and_length_keep_float64():
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("float64 on JAX needs x64 (JAX_ENABLE_X64=1), off here")
    s = np.random.default_rng(15).normal(scale=2.0, size=(4, 6, 8))
    s[0, 0] *= 1e-5  # a vector far shorter than float32 resolves beside 1
    v = capsule_ops.squash(s)
    lengths = capsule_ops.capsule_length(s)
    assert _numpy(v).dtype == np.float64 and _numpy(lengths).dtype == np.float64
    np.testing.assert_allclose(
        _numpy(v), numpy_reference.squash(s), rtol=1e-13, atol=1e-16
    )
    np.testing.assert_allclose(
        _numpy(lengths), numpy_reference.length(s), rtol=1e-13, atol=1e-16
    )


def test_squash_is_exact_for_tiny_but_nonzero_vectors():
    s = np.array([[1e-3, 0.0], [0.0, 2e-3]], dtype="float32")
    np.testing.assert_allclose(
        _numpy(capsule_ops.squash(s)), numpy_reference.squash(s), rtol=1e-5
    )


@pytest.mark.parametrize("function", [capsule_ops.squash, capsule_ops.capsule_length])
def test_non_positive_epsilon_is_rejected_by_name(function):
    with pytest.raises(
        ValueError, match="`epsilon`, expected a positive number. Received: epsilon=0.0"
    ):
        function(np.ones((1, 2), "float32"), epsilon=0.0)


def test_capsule_length_matches_reference_and_is_zero_at_zero():
    v = np.random.default_rng(2).normal(size=(5, 10, 16)).astype("float32")
    v[0, 0] = 0.0
    lengths = _numpy(capsule_ops.capsule_length(v))
    np.testing.assert_allclose(lengths, numpy_reference.length(v), rtol=1e-5, atol=1e-7)
    assert lengths[0, 0] == 0.0
    (grad,) = value_and_grads(
        lambda x: keras.ops.sum(capsule_ops.capsule_length(x)), [v]
    )[1]
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[0, 0], np.zeros(16))


def test_margin_loss_matches_eq_4():
    rng = np.random.default_rng(3)
    targets = np.eye(10, dtype="float32")[rng.integers(0, 10, size=6)]
    lengths = rng.uniform(size=(6, 10)).astype("float32")
    for kwargs in ({}, {"m_plus": 0.8, "m_minus": 0.2, "down_weight": 0.25}):
        np.testing.assert_allclose(
            _numpy(capsule_ops.margin_loss(targets, lengths, **kwargs)),
            numpy_reference.margin_loss(targets, lengths, **kwargs),
            rtol=1e-5,
            atol=1e-7,
        )


def test_mask_capsules_by_labels_and_by_length():
    capsules = np.random.default_rng(4).normal(size=(3, 4, 2)).astype("float32")
    labels = np.eye(4, dtype="float32")[[1, 0, 3]]
    masked = _numpy(capsule_ops.mask_capsules(capsules, labels)).reshape(3, 4, 2)
    np.testing.assert_array_equal(masked, capsules * labels[..., None])
    longest = np.linalg.norm(capsules, axis=-1).argmax(axis=-1)
    masked = _numpy(capsule_ops.mask_capsules(capsules)).reshape(3, 4, 2)
    np.testing.assert_array_equal(
        masked, capsules * np.eye(4, dtype="float32")[longest][..., None]
    )


def test_prediction_vectors_are_kernel_times_input():
    rng = np.random.default_rng(5)
    u = rng.normal(size=(2, 3, 4)).astype("float32")
    kernel = rng.normal(size=(3, 5, 4, 6)).astype("float32")
    predictions = _numpy(capsule_ops.capsule_predictions(u, kernel))
    assert predictions.shape == (2, 5, 3, 6)
    for i in range(3):
        for j in range(5):
            np.testing.assert_allclose(
                predictions[:, j, i], u[:, i] @ kernel[i, j], rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize(
    "image, kernel_size, strides, padding",
    [
        ((20, 20), (9, 9), (2, 2), "valid"),  # the paper's PrimaryCapsule
        ((21, 19), (9, 9), (2, 2), "valid"),  # odd sizes: a row is cropped
        ((13, 17), (3, 5), (3, 2), "valid"),
        ((11, 14), (4, 3), (3, 2), "same"),
        ((7, 9), (2, 2), (2, 2), "same"),
        ((6, 6), (3, 3), (1, 1), "valid"),
    ],
)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_space_to_depth_conv_is_the_strided_convolution(
    image, kernel_size, strides, padding, data_format
):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, *image, 3)).astype("float32")
    kernel = rng.normal(size=(*kernel_size, 3, 4)).astype("float32")
    # An independent reference for the valid case; ops.conv for "same".
    if padding == "valid":
        expected = numpy_reference.conv2d_valid(x, kernel, np.zeros(4), stride=strides)
    else:
        expected = keras.ops.convert_to_numpy(
            keras.ops.conv(x, kernel, strides, padding="same")
        )
    if data_format == "channels_first":
        x = x.transpose(0, 3, 1, 2)
        expected = expected.transpose(0, 3, 1, 2)
    output = capsule_ops.space_to_depth_conv(x, kernel, strides, padding, data_format)
    assert tuple(output.shape) == expected.shape
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(output), expected, rtol=1e-4, atol=1e-4
    )


def test_space_to_depth_conv_has_the_gradient_of_the_strided_convolution():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(2, 11, 12, 3)).astype("float32")
    kernel = rng.normal(size=(5, 5, 3, 4)).astype("float32")

    def loss(conv):
        return lambda x, k: keras.ops.sum(keras.ops.square(conv(x, k, (2, 2))))

    value, grads = value_and_grads(loss(keras.ops.conv), [x, kernel])
    s2d_value, s2d_grads = value_and_grads(
        loss(capsule_ops.space_to_depth_conv), [x, kernel]
    )
    np.testing.assert_allclose(s2d_value, value, rtol=1e-5)
    for got, expected in zip(s2d_grads, grads):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_space_to_depth_conv_accepts_an_integer_stride():
    x = np.random.default_rng(13).normal(size=(1, 9, 9, 2)).astype("float32")
    kernel = np.random.default_rng(14).normal(size=(3, 3, 2, 5)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(capsule_ops.space_to_depth_conv(x, kernel, 2)),
        numpy_reference.conv2d_valid(x, kernel, np.zeros(5), stride=2),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize(
    "image_shape, kernel_shape, kwargs, message",
    [
        ((1, 9, 9, 2), (3, 3, 2, 4), {"strides": 0}, "`strides`.*Received: strides=0"),
        ((1, 9, 9, 2), (3, 3, 2, 4), {"padding": "full"}, "`padding`.*padding='full'"),
        (
            (1, 9, 9, 2),
            (3, 3, 2, 4),
            {"data_format": "nhwc"},
            "`data_format`.*data_format='nhwc'",
        ),
        ((9, 9, 2), (3, 3, 2, 4), {}, r"4D.*inputs.shape=\(9, 9, 2\)"),
        ((1, 9, 9, 2), (3, 3, 3, 4), {}, r"kernel.shape=\(3, 3, 3, 4\)"),
        ((1, 2, 9, 2), (3, 3, 2, 4), {}, r"at least as large.*\(1, 2, 9, 2\)"),
    ],
)
def test_space_to_depth_conv_rejects_bad_inputs_by_name(
    image_shape, kernel_shape, kwargs, message
):
    arguments = {"strides": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        capsule_ops.space_to_depth_conv(
            np.zeros(image_shape, "float32"),
            np.zeros(kernel_shape, "float32"),
            **arguments,
        )


def test_auto_conv_implementation_is_the_fastest_for_this_backend():
    backend = keras.backend.backend()
    assert set(FASTEST_CONV_IMPLEMENTATION) == {"tensorflow", "torch", "jax"}
    for choice in FASTEST_CONV_IMPLEMENTATION.values():
        assert choice in CONV_IMPLEMENTATIONS and choice != "auto"
    assert resolve_conv_implementation("auto") == FASTEST_CONV_IMPLEMENTATION[backend]
    # As documented: XLA-compiled JAX is fastest stride-1, the others direct.
    expected = "space_to_depth" if backend == "jax" else "direct"
    assert resolve_conv_implementation("auto") == expected
    for explicit in ("direct", "space_to_depth"):
        assert resolve_conv_implementation(explicit) == explicit
    with pytest.raises(ValueError, match="conv_implementation='fft'"):
        resolve_conv_implementation("fft")
