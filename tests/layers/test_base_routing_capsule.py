"""BaseRoutingCapsule: a routing method is one `routing_op` away.

A minimal subclass, uniform coupling (one iteration of Procedure 1), gets
the kernel, checks, output shapes, config, `return_coupling` and saving
from the base, and passes the layer harness.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules import ops as capsule_ops
from keras_capsules.layers import BaseRoutingCapsule
from tests import numpy_reference
from tests.layer_harness import run_layer_test


@keras.saving.register_keras_serializable(package="keras_capsules_tests")
class UniformRoutingCapsule(BaseRoutingCapsule):
    """Every input capsule sends `1 / num_capsules` of its vote to each output."""

    def routing_op(self, inputs, kernel):
        predictions = capsule_ops.capsule_predictions(inputs, kernel)  # (b, j, i, e)
        coupling = keras.ops.full(
            keras.ops.shape(predictions)[:3],
            1.0 / self.num_capsules,
            self.compute_dtype,
        )
        weighted = keras.ops.einsum("bji,bjie->bje", coupling, predictions)
        return capsule_ops.squash(weighted), coupling


def _inputs_and_kernel(seed, batch=4, num_in=6, dim_in=5, num_out=3, dim_out=4):
    rng = np.random.default_rng(seed)
    u = numpy_reference.squash(rng.normal(size=(batch, num_in, dim_in)))
    kernel = rng.normal(scale=0.5, size=(num_in, num_out, dim_in, dim_out))
    return u.astype("float32"), kernel.astype("float32")


def test_minimal_subclass_passes_the_layer_harness(tmp_path):
    u, kernel = _inputs_and_kernel(0)
    # Uniform coupling is one iteration of Procedure 1.
    expected, _ = numpy_reference.dynamic_routing(u, kernel, 1)
    run_layer_test(
        UniformRoutingCapsule,
        {"num_capsules": 3, "capsule_dim": 4},
        u,
        expected_output_shape=(4, 3, 4),
        expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=0,
        init_weights=[kernel],
        expected_output=expected,
        output_rtol=1e-4,
        tmp_path=tmp_path,
    )


def test_subclass_serializes_under_its_package():
    layer = UniformRoutingCapsule(3, 4, kernel_initializer="ones", name="uniform")
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == "keras_capsules_tests>UniformRoutingCapsule"
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is UniformRoutingCapsule
    assert revived.get_config() == layer.get_config()
    config = layer.get_config()
    assert {"num_capsules", "capsule_dim", "kernel_initializer"} <= set(config)


def test_subclass_returns_its_coupling_eager_and_symbolic():
    u, kernel = _inputs_and_kernel(1)
    layer = UniformRoutingCapsule(3, 4)
    capsules, coupling = layer(keras.Input((6, 5)), return_coupling=True)
    assert tuple(capsules.shape) == (None, 3, 4)
    assert tuple(coupling.shape) == (None, 3, 6)
    layer.set_weights([kernel])
    capsules, coupling = layer(u, return_coupling=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(coupling), np.full((4, 3, 6), 1 / 3), rtol=1e-6
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(capsules),
        keras.ops.convert_to_numpy(layer(u)),
        atol=1e-7,
    )


def test_base_owns_the_kernel_and_its_shape():
    layer = BaseRoutingCapsule(10, 16, kernel_regularizer="l2")
    layer.build((None, 1152, 8))
    assert [tuple(w.shape) for w in layer.weights] == [(1152, 10, 8, 16)]
    assert layer.compute_output_shape((None, 1152, 8)) == (None, 10, 16)
    assert layer.get_config()["kernel_regularizer"] is not None


def test_base_without_routing_op_raises_not_implemented():
    u, _ = _inputs_and_kernel(2)
    with pytest.raises(
        NotImplementedError, match=r"`BaseRoutingCapsule` must implement `routing_op"
    ):
        BaseRoutingCapsule(3, 4)(u)

    class Forgetful(BaseRoutingCapsule):
        pass

    with pytest.raises(NotImplementedError, match=r"`Forgetful` must implement"):
        Forgetful(3, 4)(u)


def test_subclass_gets_the_base_checks_under_its_own_name():
    with pytest.raises(ValueError, match="`num_capsules`.*Received: num_capsules=0"):
        UniformRoutingCapsule(0, 4)
    with pytest.raises(ValueError, match=r"`UniformRoutingCapsule` expects a 3D input"):
        UniformRoutingCapsule(3, 4).build((None, 8))
    with pytest.raises(ValueError, match=r"`UniformRoutingCapsule` needs the number"):
        UniformRoutingCapsule(3, 4).build((None, None, 8))
