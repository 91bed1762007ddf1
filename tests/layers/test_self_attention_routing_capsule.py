"""`SelfAttentionRoutingCapsule`: the layer contract and the paper's routing."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.layers import BaseRoutingCapsule, SelfAttentionRoutingCapsule
from tests import numpy_reference as ref
from tests.layer_harness import run_layer_test


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def test_layer_contract(tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(3, 6, 4)).astype("float32")
    kernel = rng.normal(0, 0.3, size=(6, 5, 4, 7)).astype("float32")
    bias = rng.normal(0, 0.1, size=(5, 6)).astype("float32")
    run_layer_test(
        SelfAttentionRoutingCapsule,
        {"num_capsules": 5, "capsule_dim": 7},
        input_data=inputs,
        expected_output_shape=(3, 5, 7),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        init_weights=[kernel, bias],
        expected_output=ref.self_attention_routing(inputs, kernel, bias)[0],
        output_rtol=1e-4,
        tmp_path=tmp_path,
    )


def test_is_a_routing_capsule_layer_with_log_priors():
    layer = SelfAttentionRoutingCapsule(10, 16)
    assert isinstance(layer, BaseRoutingCapsule)
    layer.build((None, 16, 8))
    assert tuple(layer.kernel.shape) == (16, 10, 8, 16)
    assert tuple(layer.bias.shape) == (10, 16)
    np.testing.assert_array_equal(_numpy(layer.bias), 0.0)
    # He-normal as in the authors' code, whose kernel has the same fan-in
    # (16 x 10 x 8): std sqrt(2 / 1280), not RoutingCapsule's 0.01.
    np.testing.assert_allclose(
        np.std(_numpy(layer.kernel)), (2 / 1280) ** 0.5, rtol=0.1
    )


def test_return_coupling_eager_and_symbolic():
    inputs = np.random.default_rng(1).normal(size=(2, 6, 4)).astype("float32")
    layer = SelfAttentionRoutingCapsule(3, 5)
    capsules, coupling = layer(inputs, return_coupling=True)
    assert tuple(capsules.shape) == (2, 3, 5) and tuple(coupling.shape) == (2, 3, 6)
    np.testing.assert_allclose(_numpy(coupling).sum(axis=1), 1.0, rtol=1e-5)
    _, coupling_ref = ref.self_attention_routing(
        inputs, _numpy(layer.kernel), _numpy(layer.bias)
    )
    np.testing.assert_allclose(
        _numpy(coupling), coupling_ref.transpose(0, 2, 1), rtol=1e-4, atol=1e-6
    )
    symbolic = keras.Input((6, 4))
    outputs = SelfAttentionRoutingCapsule(3, 5)(symbolic, return_coupling=True)
    assert [tuple(o.shape) for o in outputs] == [(None, 3, 5), (None, 3, 6)]


def test_config_keeps_bias_options():
    layer = SelfAttentionRoutingCapsule(
        3, 5, bias_initializer="ones", bias_regularizer="l2", name="routed"
    )
    clone = SelfAttentionRoutingCapsule.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build((None, 4, 2))
    np.testing.assert_array_equal(_numpy(clone.bias), 1.0)


@pytest.mark.parametrize(
    "shape, message",
    [((None, 6), "3D input"), ((None, None, 4), "known")],
)
def test_rejects_bad_input_shapes(shape, message):
    with pytest.raises(ValueError, match=message):
        SelfAttentionRoutingCapsule(3, 5).build(shape)
