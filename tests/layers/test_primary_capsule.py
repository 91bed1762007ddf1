from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from keras_capsules.layers import PrimaryCapsule
from tests import numpy_reference
from tests.layer_harness import run_layer_test


def test_layer_contract(tmp_path):
    run_layer_test(
        PrimaryCapsule,
        {"capsule_types": 3, "capsule_dim": 4, "kernel_size": 3, "strides": 2},
        np.random.default_rng(0).normal(size=(2, 9, 9, 5)).astype("float32"),
        expected_output_shape=(2, 4 * 4 * 3, 4),
        expected_num_trainable_weights=2,
        tmp_path=tmp_path,
    )


def test_matches_reference_convolution_then_squash():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 7, 7, 3)).astype("float32")
    layer = PrimaryCapsule(2, 4, kernel_size=3, strides=2)
    layer.build(x.shape)
    kernel = rng.normal(scale=0.3, size=(3, 3, 3, 8)).astype("float32")
    bias = rng.normal(size=(8,)).astype("float32")
    layer.set_weights([kernel, bias])
    features = numpy_reference.conv2d_valid(x, kernel, bias, stride=2)
    expected = numpy_reference.squash(features.reshape(2, 3 * 3 * 2, 4))
    output = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-5)


def test_weights_are_those_of_a_conv2d():
    x = np.random.default_rng(2).normal(size=(2, 10, 10, 3)).astype("float32")
    conv = keras.layers.Conv2D(6, 3, strides=2)
    features = keras.ops.convert_to_numpy(conv(x))
    layer = PrimaryCapsule(3, 2, kernel_size=3, strides=2)
    layer.build(x.shape)
    layer.set_weights(conv.get_weights())
    expected = numpy_reference.squash(features.reshape(2, -1, 2))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-4, atol=1e-5
    )


def test_mnist_shapes_give_1152_capsules_of_8():
    layer = PrimaryCapsule(32, 8, kernel_size=9, strides=2)
    assert layer.compute_output_shape((None, 20, 20, 256)) == (None, 1152, 8)
    layer.build((None, 20, 20, 256))
    assert tuple(layer.kernel.shape) == (9, 9, 256, 256)


def test_channels_first_matches_channels_last():
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 3)).astype("float32")
    last = PrimaryCapsule(2, 3, kernel_size=3, data_format="channels_last")
    first = PrimaryCapsule(2, 3, kernel_size=3, data_format="channels_first")
    last.build(x.shape)
    first.build((2, 3, 8, 8))
    first.set_weights(last.get_weights())
    out_first = first(np.transpose(x, (0, 3, 1, 2)))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out_first),
        keras.ops.convert_to_numpy(last(x)),
        rtol=1e-4,
        atol=1e-5,
    )


def test_same_padding_output_shape():
    layer = PrimaryCapsule(2, 4, kernel_size=3, strides=2, padding="same")
    output = layer(np.zeros((1, 7, 7, 1), "float32"))
    assert tuple(output.shape) == (1, 4 * 4 * 2, 4)
    assert layer.compute_output_shape((1, 7, 7, 1)) == (1, 32, 4)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"capsule_types": 0}, "capsule_types"),
        ({"capsule_dim": -2}, "capsule_dim"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": (3, 0)}, "kernel_size"),
        ({"strides": 0}, "strides"),
        ({"padding": "full"}, "padding"),
        ({"data_format": "nhwc"}, "data_format"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    arguments = {"capsule_types": 2, "capsule_dim": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
        PrimaryCapsule(**arguments)


def test_rank_3_input_is_rejected_with_its_shape():
    layer = PrimaryCapsule(2, 4, kernel_size=3)
    with pytest.raises(ValueError, match=r"4D input.*\(2, 9, 9\)"):
        layer.build((2, 9, 9))


def test_image_smaller_than_kernel_is_rejected_at_build():
    layer = PrimaryCapsule(2, 4, kernel_size=9)
    with pytest.raises(ValueError, match=r"kernel_size=\(9, 9\).*\(None, 5, 5, 1\)"):
        layer(keras.Input((5, 5, 1)))


def test_space_to_depth_contract(tmp_path):
    run_layer_test(
        PrimaryCapsule,
        {
            "capsule_types": 3,
            "capsule_dim": 4,
            "kernel_size": 3,
            "strides": 2,
            "conv_implementation": "space_to_depth",
        },
        np.random.default_rng(0).normal(size=(2, 9, 9, 5)).astype("float32"),
        expected_output_shape=(2, 4 * 4 * 3, 4),
        expected_num_trainable_weights=2,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_space_to_depth_matches_direct_with_the_same_weights(data_format, padding):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 11, 10, 3)).astype("float32")
    if data_format == "channels_first":
        x = x.transpose(0, 3, 1, 2)
    arguments = {
        "capsule_types": 2,
        "capsule_dim": 4,
        "kernel_size": 5,
        "strides": 2,
        "padding": padding,
        "data_format": data_format,
    }
    direct = PrimaryCapsule(**arguments)
    s2d = PrimaryCapsule(conv_implementation="space_to_depth", **arguments)
    direct.build(x.shape)
    s2d.build(x.shape)
    s2d.set_weights(direct.get_weights())
    assert s2d.compute_output_shape(x.shape) == direct.compute_output_shape(x.shape)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(s2d(x)),
        keras.ops.convert_to_numpy(direct(x)),
        rtol=1e-4,
        atol=1e-5,
    )


def test_bad_conv_implementation_is_rejected():
    with pytest.raises(
        ValueError, match="`conv_implementation`.*Received: conv_implementation='fft'"
    ):
        PrimaryCapsule(2, 4, kernel_size=3, conv_implementation="fft")


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_auto_conv_implementation_matches_both_explicit_choices(data_format):
    x = np.random.default_rng(5).normal(size=(2, 11, 10, 3)).astype("float32")
    if data_format == "channels_first":
        x = x.transpose(0, 3, 1, 2)
    arguments = {"kernel_size": 5, "strides": 2, "data_format": data_format}
    auto = PrimaryCapsule(2, 4, **arguments)
    assert auto.conv_implementation == "auto"  # the default, kept in the config
    assert auto.get_config()["conv_implementation"] == "auto"
    auto.build(x.shape)
    expected = keras.ops.convert_to_numpy(auto(x))
    for implementation in ("direct", "space_to_depth"):
        layer = PrimaryCapsule(2, 4, conv_implementation=implementation, **arguments)
        layer.build(x.shape)
        layer.set_weights(auto.get_weights())
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-4, atol=1e-5
        )


def test_capsule_types_was_num_capsules():
    with pytest.warns(FutureWarning, match=r"num_capsules=.*`capsule_types`"):
        old = PrimaryCapsule(num_capsules=3, capsule_dim=4, kernel_size=3)
    new = PrimaryCapsule(capsule_types=3, capsule_dim=4, kernel_size=3)
    config = {k: v for k, v in old.get_config().items() if k != "name"}
    assert config == {k: v for k, v in new.get_config().items() if k != "name"}
    assert "num_capsules" not in config
    assert old.capsule_types == 3 and old.num_capsules == 3
    with pytest.raises(ValueError, match="Pass `capsule_types` only"):
        PrimaryCapsule(3, 4, kernel_size=3, num_capsules=3)


def test_old_config_loads_silently():
    config = PrimaryCapsule(3, 4, kernel_size=3).get_config()
    old_config = dict(config)
    old_config["num_capsules"] = old_config.pop("capsule_types")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        layer = PrimaryCapsule.from_config(old_config)
    assert layer.get_config() == config
