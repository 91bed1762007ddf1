"""`efficient_squash` and `self_attention_routing` against the NumPy reference."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules import ops as capsule_ops
from tests import numpy_reference as ref
from tests.gradients import central_differences, value_and_grads


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _case(seed=0, batch=3, num_in=7, num_out=4, dim_in=5, dim_out=6):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(batch, num_in, dim_in)).astype("float32")
    w = rng.normal(0, 0.3, size=(num_in, num_out, dim_in, dim_out)).astype("float32")
    b = rng.normal(0, 0.1, size=(num_out, num_in)).astype("float32")
    return u, w, b


def test_efficient_squash_matches_eq_5():
    x = np.random.default_rng(1).normal(size=(4, 6, 8)).astype("float32") * 3
    np.testing.assert_allclose(
        _numpy(capsule_ops.efficient_squash(x)), ref.efficient_squash(x), rtol=1e-5
    )
    along_first = _numpy(capsule_ops.efficient_squash(x, axis=1))
    np.testing.assert_allclose(along_first, ref.efficient_squash(x, axis=1), rtol=1e-5)


def test_efficient_squash_is_zero_with_finite_gradient_at_zero():
    zeros = np.zeros((2, 3), "float32")
    np.testing.assert_array_equal(_numpy(capsule_ops.efficient_squash(zeros)), 0.0)
    _, (grad,) = value_and_grads(
        lambda x: keras.ops.sum(capsule_ops.efficient_squash(x)), [zeros]
    )
    assert np.all(np.isfinite(grad))
    # Slope 1 at the origin, unlike the CapsNet squash (slope 0): a tiny
    # vector keeps about its own length.
    tiny = np.array([[1e-3, 0.0]], "float32")
    np.testing.assert_allclose(
        _numpy(capsule_ops.efficient_squash(tiny)), tiny, rtol=2e-3
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_efficient_squash_keeps_low_precision_dtype_without_overflow(dtype):
    x = keras.ops.cast(np.full((2, 16), 300.0, "float32"), dtype)
    v = capsule_ops.efficient_squash(x)
    assert keras.backend.standardize_dtype(v.dtype) == dtype
    length = np.linalg.norm(_numpy(keras.ops.cast(v, "float32")), axis=-1)
    np.testing.assert_allclose(length, 1.0, rtol=1e-2)


def test_self_attention_routing_matches_the_paper():
    u, w, b = _case()
    v, c = capsule_ops.self_attention_routing(u, w, b, return_coupling=True)
    v_ref, c_ref = ref.self_attention_routing(u, w, b)
    np.testing.assert_allclose(_numpy(v), v_ref, rtol=1e-4, atol=1e-6)
    # The package returns (batch, out, in); the reference (batch, in, out).
    np.testing.assert_allclose(
        _numpy(c), c_ref.transpose(0, 2, 1), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(_numpy(c).sum(axis=1), 1.0, rtol=1e-5)


def test_log_priors_are_added_after_the_softmax():
    u, w, b = _case(seed=2)
    plain = _numpy(capsule_ops.self_attention_routing(u, w, np.zeros_like(b)))
    with_priors = _numpy(capsule_ops.self_attention_routing(u, w, b))
    assert not np.allclose(plain, with_priors)
    np.testing.assert_allclose(
        with_priors, ref.self_attention_routing(u, w, b)[0], rtol=1e-4, atol=1e-6
    )


def test_self_attention_routing_gradients_match_finite_differences():
    u, w, b = _case(seed=3, batch=2, num_in=3, num_out=2, dim_in=2, dim_out=3)
    probe = np.random.default_rng(5).normal(size=(2, 2, 3))

    def loss(inputs, kernel, log_priors):
        v = capsule_ops.self_attention_routing(inputs, kernel, log_priors)
        return keras.ops.sum(v * keras.ops.cast(probe, v.dtype))

    def loss_ref(inputs, kernel, log_priors):
        return float(
            (ref.self_attention_routing(inputs, kernel, log_priors)[0] * probe).sum()
        )

    _, grads = value_and_grads(loss, [u, w, b])
    expected = central_differences(loss_ref, [u, w, b])
    for name, got, want in zip(("inputs", "kernel", "log_priors"), grads, expected):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-5, err_msg=name)


def test_self_attention_routing_float64_matches_reference():
    # On JAX it runs with x64 enabled (the `float64` marker, conftest.py).
    u, w, b = (x.astype("float64") for x in _case(seed=4))
    v = capsule_ops.self_attention_routing(u, w, b)
    assert keras.backend.standardize_dtype(v.dtype) == "float64"
    np.testing.assert_allclose(
        _numpy(v), ref.self_attention_routing(u, w, b)[0], rtol=1e-10, atol=1e-12
    )


def test_self_attention_routing_rejects_mismatched_shapes():
    u, w, b = _case()
    with pytest.raises(ValueError, match=r"log_priors.shape=\(7, 4\)"):
        capsule_ops.self_attention_routing(u, w, b.T)
    with pytest.raises(ValueError, match=r"inputs.shape=\(3, 7, 4\)"):
        capsule_ops.self_attention_routing(u[..., :4], w, b)
