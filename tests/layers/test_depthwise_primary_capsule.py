"""`DepthwisePrimaryCapsule`: depthwise convolution, capsules, efficient squash."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.layers import DepthwisePrimaryCapsule
from tests import numpy_reference as ref
from tests.layer_harness import run_layer_test


def _depthwise_valid(x, kernel, bias, stride):
    """A direct depthwise 'valid' convolution, channels last, in float64."""
    x = np.asarray(x, np.float64)
    kh, kw, channels, multiplier = kernel.shape
    batch, height, width, _ = x.shape
    out_h, out_w = (height - kh) // stride + 1, (width - kw) // stride + 1
    out = np.zeros((batch, out_h, out_w, channels, multiplier))
    for y in range(out_h):
        for x_pos in range(out_w):
            patch = x[
                :, y * stride : y * stride + kh, x_pos * stride : x_pos * stride + kw
            ]
            out[:, y, x_pos] = np.einsum("bhwc,hwcm->bcm", patch, kernel)
    return out.reshape(batch, out_h, out_w, channels * multiplier) + bias


def _expected(x, kernel, bias, stride, capsule_dim):
    features = _depthwise_valid(x, kernel, bias, stride)
    return ref.efficient_squash(features.reshape(len(x), -1, capsule_dim))


def test_layer_contract_against_numpy(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 7, 6)).astype("float32")
    kernel = rng.normal(0, 0.3, size=(3, 3, 6, 2)).astype("float32")
    bias = rng.normal(0, 0.1, size=(12,)).astype("float32")
    run_layer_test(
        DepthwisePrimaryCapsule,
        {"capsule_dim": 4, "kernel_size": 3, "strides": 2, "depth_multiplier": 2},
        input_data=x,
        expected_output_shape=(2, 27, 4),
        expected_num_trainable_weights=2,
        init_weights=[kernel, bias],
        expected_output=_expected(x, kernel, bias, 2, 4),
        output_rtol=1e-4,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_a_window_covering_the_input_against_numpy(data_format, tmp_path):
    # The paper's case: one output position, computed as a sum of products
    # instead of a convolution.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 4, 6)).astype("float32")
    kernel = rng.normal(0, 0.3, size=(5, 4, 6, 2)).astype("float32")
    bias = rng.normal(0, 0.1, size=(12,)).astype("float32")
    inputs = x if data_format == "channels_last" else np.transpose(x, (0, 3, 1, 2))
    run_layer_test(
        DepthwisePrimaryCapsule,
        {"capsule_dim": 3, "kernel_size": (5, 4), "depth_multiplier": 2,
         "data_format": data_format},
        input_data=inputs,
        expected_output_shape=(2, 4, 3),
        expected_num_trainable_weights=2,
        init_weights=[kernel, bias],
        expected_output=_expected(x, kernel, bias, 1, 3),
        output_rtol=1e-4,
        tmp_path=tmp_path,
    )  # fmt: skip


def test_papers_primary_capsules_are_16_of_8_dimensions():
    layer = DepthwisePrimaryCapsule(8, kernel_size=9, data_format="channels_last")
    capsules = layer(np.random.default_rng(1).normal(size=(2, 9, 9, 128)))
    assert tuple(capsules.shape) == (2, 16, 8)
    assert layer.count_params() == 9 * 9 * 128 + 128
    lengths = np.linalg.norm(np.asarray(keras.ops.convert_to_numpy(capsules)), axis=-1)
    assert np.all(lengths < 1.0)


def test_channels_first_gives_the_same_capsules():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 5, 4)).astype("float32")
    last = DepthwisePrimaryCapsule(2, 3, data_format="channels_last")
    first = DepthwisePrimaryCapsule(2, 3, data_format="channels_first")
    expected = keras.ops.convert_to_numpy(last(x))
    first.build((None, 4, 5, 5))
    first.set_weights(last.get_weights())
    got = keras.ops.convert_to_numpy(first(np.transpose(x, (0, 3, 1, 2))))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, shape, message",
    [
        ({"capsule_dim": 5, "kernel_size": 3}, (None, 5, 5, 4), "does not divide"),
        ({"capsule_dim": 2, "kernel_size": 9}, (None, 5, 5, 4), "at least that large"),
        ({"capsule_dim": 2, "kernel_size": 3}, (None, 5, 5), "4D input"),
    ],
)
def test_rejects_bad_shapes(kwargs, shape, message):
    with pytest.raises(ValueError, match=message):
        DepthwisePrimaryCapsule(**kwargs).build(shape)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="capsule_dim"):
        DepthwisePrimaryCapsule(0, 3)
    with pytest.raises(ValueError, match="padding"):
        DepthwisePrimaryCapsule(2, 3, padding="full")
