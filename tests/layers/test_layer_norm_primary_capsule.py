"""`LayerNormPrimaryCapsule`: the layer contract and the paper's primary capsules."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.layers import LayerNormPrimaryCapsule
from tests import inverted_attention_reference as ref
from tests.layer_harness import run_layer_test


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _expected(images, kernel, gamma, beta, types, dim):
    # A 1x1 convolution is a matrix product per pixel; then poses are cut
    # from consecutive channels and layer-normed one by one.
    features = np.einsum("bhwc,cf->bhwf", images, kernel[0, 0])
    poses = features.reshape(*features.shape[:3], types, dim)
    return np.apply_along_axis(ref.layer_norm, -1, poses, gamma, beta)


def test_layer_contract(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 4, 3, 5)).astype("float32")
    kernel = rng.normal(size=(1, 1, 5, 12)).astype("float32")
    gamma = rng.uniform(0.5, 1.5, size=(4,)).astype("float32")
    beta = rng.normal(0, 0.1, size=(4,)).astype("float32")
    run_layer_test(
        LayerNormPrimaryCapsule,
        {"capsule_types": 3, "capsule_dim": 4},
        input_data=images,
        expected_output_shape=(2, 4, 3, 3, 4),
        expected_num_trainable_weights=3,
        init_weights=[kernel, gamma, beta],
        expected_output=_expected(images, kernel, gamma, beta, 3, 4),
        output_rtol=1e-4,
        output_atol=1e-4,
        tmp_path=tmp_path,
    )


def test_weights_are_a_conv2d_s_and_options_pass_through():
    layer = LayerNormPrimaryCapsule(
        2, 4, kernel_size=3, strides=2, use_bias=True, kernel_initializer="ones"
    )
    assert isinstance(layer, keras.layers.Conv2D)
    assert layer.filters == 8
    layer.build((None, 9, 9, 3))
    assert [w.name for w in layer.weights] == ["kernel", "bias", "gamma", "beta"]
    assert layer.compute_output_shape((None, 9, 9, 3)) == (None, 4, 4, 2, 4)
    clone = LayerNormPrimaryCapsule.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert "filters" not in layer.get_config()


def test_channels_first_images_give_the_same_grid():
    images = np.random.default_rng(1).normal(size=(2, 5, 5, 3)).astype("float32")
    last = LayerNormPrimaryCapsule(2, 4, kernel_size=2, data_format="channels_last")
    first = LayerNormPrimaryCapsule(2, 4, kernel_size=2, data_format="channels_first")
    expected = _numpy(last(images))
    first.build((None, 3, 5, 5))
    first.set_weights(last.get_weights())
    got = _numpy(first(np.transpose(images, (0, 3, 1, 2))))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"capsule_types": 0}, "capsule_types=0"), ({"capsule_dim": -4}, "capsule_dim=-4"),
     ({"epsilon": -1.0}, "epsilon=-1.0")],
)  # fmt: skip
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LayerNormPrimaryCapsule(**{"capsule_types": 2, "capsule_dim": 4, **kwargs})


@pytest.mark.parametrize(
    "shape, message",
    [((None, 8, 8), r"4D input.*input_shape=\(None, 8, 8\)"),
     ((None, 2, 8, 3), r"inputs shape=\(None, 2, 8, 3\).*kernel shape=\(3, 3")],
)  # fmt: skip
def test_rejects_bad_input_shapes(shape, message):
    with pytest.raises(ValueError, match=message):
        LayerNormPrimaryCapsule(2, 4, kernel_size=3).build(shape)
