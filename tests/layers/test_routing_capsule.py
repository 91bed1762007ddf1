from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.layers import BaseRoutingCapsule, RoutingCapsule
from tests import numpy_reference
from tests.layer_harness import run_layer_test


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _inputs_and_kernel(seed, batch=3, num_in=10, dim_in=4, num_out=5, dim_out=6):
    rng = np.random.default_rng(seed)
    u = numpy_reference.squash(rng.normal(size=(batch, num_in, dim_in)))
    kernel = rng.normal(scale=0.5, size=(num_in, num_out, dim_in, dim_out))
    return u.astype("float32"), kernel.astype("float32")


def test_layer_contract(tmp_path):
    u, kernel = _inputs_and_kernel(0, batch=4, num_in=6, dim_in=5, num_out=3, dim_out=4)
    expected, _ = numpy_reference.dynamic_routing(u, kernel, 3)
    run_layer_test(
        RoutingCapsule,
        {"num_capsules": 3, "capsule_dim": 4, "routing_iterations": 3},
        u,
        expected_output_shape=(4, 3, 4),
        expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=0,
        init_weights=[kernel],
        expected_output=expected,
        output_rtol=1e-4,
        tmp_path=tmp_path,
    )


def test_return_coupling_eager_matches_procedure_1():
    u, kernel = _inputs_and_kernel(11)
    layer = RoutingCapsule(5, 6, routing_iterations=3)
    layer.build(u.shape)
    layer.set_weights([kernel])
    capsules, coupling = layer(u, return_coupling=True)
    expected_v, expected_c = numpy_reference.dynamic_routing(u, kernel, 3)
    assert tuple(coupling.shape) == (3, 5, 10)
    np.testing.assert_allclose(_numpy(capsules), expected_v, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_numpy(capsules), _numpy(layer(u)), atol=1e-6)
    np.testing.assert_allclose(_numpy(coupling).sum(axis=1), 1.0, atol=1e-5)
    # The layer keeps couplings as (batch, out, in); the reference as (batch, in, out).
    np.testing.assert_allclose(
        _numpy(coupling), expected_c.transpose(0, 2, 1), rtol=1e-4, atol=1e-6
    )


def test_return_coupling_symbolic_in_a_two_output_model(tmp_path):
    u, kernel = _inputs_and_kernel(12)
    inputs = keras.Input((10, 4))
    layer = RoutingCapsule(5, 6, routing_iterations=2)
    capsules, coupling = layer(inputs, return_coupling=True)
    assert tuple(capsules.shape) == (None, 5, 6)
    assert tuple(coupling.shape) == (None, 5, 10)
    model = keras.Model(inputs, [capsules, coupling])
    layer.set_weights([kernel])
    expected_v, expected_c = numpy_reference.dynamic_routing(u, kernel, 2)
    got_v, got_c = model.predict(u, verbose=0)
    np.testing.assert_allclose(got_v, expected_v, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        got_c, expected_c.transpose(0, 2, 1), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(got_c.sum(axis=1), 1.0, atol=1e-5)
    # The call argument is part of the saved graph.
    model.save(tmp_path / "coupling.keras")
    reloaded = keras.saving.load_model(tmp_path / "coupling.keras")
    for got, want in zip(reloaded.predict(u, verbose=0), (got_v, got_c), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_one_iteration_returns_uniform_coupling():
    u, _ = _inputs_and_kernel(13)
    _, coupling = RoutingCapsule(5, 6, routing_iterations=1)(u, return_coupling=True)
    np.testing.assert_allclose(_numpy(coupling), np.full((3, 5, 10), 0.2), rtol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_coupling_is_in_the_compute_dtype_symbolic_and_eager(policy):
    u, _ = _inputs_and_kernel(14)
    layer = RoutingCapsule(5, 6, dtype=policy)
    compute_dtype = layer.compute_dtype
    _, symbolic = layer(keras.Input((10, 4)), return_coupling=True)
    _, eager = layer(u, return_coupling=True)
    assert keras.backend.standardize_dtype(symbolic.dtype) == compute_dtype
    assert keras.backend.standardize_dtype(eager.dtype) == compute_dtype


def test_float64_layer_matches_the_float64_reference():
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("float64 on JAX needs x64 (JAX_ENABLE_X64=1), off here")
    u, kernel = (a.astype("float64") for a in _inputs_and_kernel(15))
    layer = RoutingCapsule(5, 6, dtype="float64")
    layer.build(u.shape)
    layer.set_weights([kernel])
    capsules, coupling = layer(u, return_coupling=True)
    expected_v, expected_c = numpy_reference.dynamic_routing(u, kernel, 3)
    assert _numpy(capsules).dtype == np.float64
    np.testing.assert_allclose(_numpy(capsules), expected_v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        _numpy(coupling), expected_c.transpose(0, 2, 1), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("iterations", [1, 3])
def test_matches_procedure_1(iterations):
    u, kernel = _inputs_and_kernel(iterations)
    layer = RoutingCapsule(5, 6, routing_iterations=iterations)
    layer.build(u.shape)
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


def test_is_a_base_routing_capsule():
    assert isinstance(RoutingCapsule(3, 4), BaseRoutingCapsule)


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
