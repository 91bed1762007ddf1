from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.layers import RoutingCapsule
from tests import numpy_reference
from tests.layer_harness import run_layer_test


def test_layer_contract(tmp_path):
    run_layer_test(
        RoutingCapsule,
        {"num_capsules": 3, "capsule_dim": 4, "routing_iterations": 3},
        numpy_reference.squash(np.random.default_rng(0).normal(size=(4, 6, 5))).astype(
            "float32"
        ),
        expected_output_shape=(4, 3, 4),
        expected_num_trainable_weights=1,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("iterations", [1, 3])
def test_matches_procedure_1(iterations):
    rng = np.random.default_rng(iterations)
    u = numpy_reference.squash(rng.normal(size=(3, 10, 4))).astype("float32")
    layer = RoutingCapsule(5, 6, routing_iterations=iterations)
    layer.build(u.shape)
    kernel = rng.normal(scale=0.5, size=(10, 5, 4, 6)).astype("float32")
    layer.set_weights([kernel])
    expected, _ = numpy_reference.dynamic_routing(u, kernel, iterations)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(u)), expected, rtol=1e-4, atol=1e-6
    )


def test_kernel_is_the_only_weight_with_the_documented_shape():
    layer = RoutingCapsule(10, 16)
    layer.build((None, 1152, 8))
    assert [tuple(w.shape) for w in layer.weights] == [(1152, 10, 8, 16)]
    assert layer.count_params() == 1152 * 10 * 8 * 16


def test_routing_state_is_per_example():
    """Each example's routing starts from zero logits: batching changes nothing."""
    u = numpy_reference.squash(np.random.default_rng(4).normal(size=(5, 8, 4)))
    u = u.astype("float32")
    layer = RoutingCapsule(3, 4)
    together = keras.ops.convert_to_numpy(layer(u))
    alone = np.concatenate(
        [keras.ops.convert_to_numpy(layer(u[i : i + 1])) for i in range(5)]
    )
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_stop_gradient_option_is_serialized():
    layer = RoutingCapsule(3, 4, stop_gradient_on_agreement=True)
    assert RoutingCapsule.from_config(layer.get_config()).stop_gradient_on_agreement


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_capsules": 0}, "num_capsules"),
        ({"capsule_dim": 0}, "capsule_dim"),
        ({"routing_iterations": 0}, "routing_iterations"),
        ({"routing_iterations": 2.0}, "routing_iterations"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
        RoutingCapsule(**{"num_capsules": 3, "capsule_dim": 4, **kwargs})


@pytest.mark.parametrize("shape", [(None, 8), (None, 4, 8, 2)])
def test_input_of_wrong_rank_is_rejected_with_its_shape(shape):
    with pytest.raises(ValueError, match=r"3D input.*" + re_shape(shape)):
        RoutingCapsule(3, 4).build(shape)


def test_unknown_capsule_count_is_rejected():
    with pytest.raises(ValueError, match=r"known.*\(None, None, 8\)"):
        RoutingCapsule(3, 4).build((None, None, 8))


def re_shape(shape):
    return "\\(" + ", ".join(str(d) for d in shape) + "\\)"
