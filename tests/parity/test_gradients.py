"""Gradients of squash, Length and RoutingCapsule against float64 NumPy.

The backend computes the gradient (autodiff, float32) of `sum(w * f(x))` for
a fixed random cotangent `w`; the reference is a central finite difference
of an independent float64 NumPy version of the paper's equations. Every
backend runs this module, so all three agree with the same reference.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_capsules
from keras_capsules import ops as capsule_ops
from tests import numpy_reference
from tests.gradients import central_differences, value_and_grads

BACKEND = keras.backend.backend()
# Relative to the largest reference gradient: float32 autodiff against a
# float64 difference quotient.
GRAD_RTOL = 2e-5


def assert_grads_close(actual, expected, what: str) -> None:
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert np.all(np.isfinite(a)), f"{BACKEND}: non-finite gradient of {what}"
        scale = max(float(np.max(np.abs(e))), 1e-12)
        err = float(np.max(np.abs(a - e)))
        assert err <= GRAD_RTOL * scale, (
            f"{BACKEND}: gradient {k} of {what} differs from the float64 "
            f"reference by up to {err:.3g} ({err / scale:.3g} of its largest "
            f"entry {scale:.3g}; tolerance {GRAD_RTOL:g})"
        )


def capsule_vectors(seed: int, shape=(3, 5, 4)) -> np.ndarray:
    """Capsules with lengths from 1e-3 to 30, and one zero vector."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    x *= np.exp(rng.uniform(np.log(1e-3), np.log(30.0), shape[:-1]))[..., None]
    x[0, 0] = 0.0
    return x.astype("float32")


def test_squash_gradient_matches_reference() -> None:
    x = capsule_vectors(0)
    w = np.random.default_rng(1).normal(size=x.shape).astype("float32")

    value, grads = value_and_grads(
        lambda t: keras.ops.sum(keras.ops.multiply(w, capsule_ops.squash(t))), [x]
    )
    expected = central_differences(lambda s: np.sum(w * numpy_reference.squash(s)), [x])
    np.testing.assert_allclose(value, np.sum(w * numpy_reference.squash(x)), rtol=1e-5)
    assert_grads_close(grads, expected, "squash")


def test_length_layer_gradient_matches_reference() -> None:
    x = capsule_vectors(2)
    w = np.random.default_rng(3).normal(size=x.shape[:-1]).astype("float32")
    layer = keras_capsules.Length()

    value, grads = value_and_grads(
        lambda t: keras.ops.sum(keras.ops.multiply(w, layer(t))), [x]
    )
    expected = central_differences(lambda s: np.sum(w * numpy_reference.length(s)), [x])
    np.testing.assert_allclose(value, np.sum(w * numpy_reference.length(x)), rtol=1e-5)
    assert_grads_close(grads, expected, "Length")
    # The subgradient at the zero vector is 0, not NaN.
    np.testing.assert_array_equal(grads[0][0, 0], 0.0)


@pytest.mark.parametrize(
    "routing_iterations, stop_gradient",
    [(1, False), (3, False), (3, True)],
    ids=["1-iteration", "3-iterations", "3-iterations-stop-gradient"],
)
def test_routing_capsule_gradient_matches_reference(
    routing_iterations: int, stop_gradient: bool
) -> None:
    rng = np.random.default_rng(4)
    inputs = capsule_vectors(5, shape=(2, 5, 3)) / 3.0
    kernel = rng.normal(scale=0.8, size=(5, 2, 3, 4)).astype("float32")
    w = rng.normal(size=(2, 2, 4)).astype("float32")
    layer = keras_capsules.RoutingCapsule(
        2,
        4,
        routing_iterations=routing_iterations,
        stop_gradient_on_agreement=stop_gradient,
        kernel_initializer="zeros",  # replaced by `kernel` in the stateless call
    )
    layer.build((None, 5, 3))

    def loss(t_inputs, t_kernel):
        outputs, _ = layer.stateless_call([t_kernel], [], t_inputs)
        return keras.ops.sum(keras.ops.multiply(w, outputs))

    value, grads = value_and_grads(loss, [inputs, kernel])

    constant = numpy_reference.predictions(inputs, kernel) if stop_gradient else None

    def reference(u, k, agreement_predictions=constant):
        v, _ = numpy_reference.dynamic_routing(
            u, k, routing_iterations, agreement_predictions=agreement_predictions
        )
        return np.sum(w * v)

    np.testing.assert_allclose(value, reference(inputs, kernel), rtol=1e-5)
    expected = central_differences(reference, [inputs, kernel])
    assert_grads_close(grads, expected, f"RoutingCapsule(r={routing_iterations})")
    if stop_gradient:
        # The stop-gradient variant really differs from full backprop here,
        # so the comparison above is not vacuous.
        full = central_differences(
            lambda u, k: reference(u, k, agreement_predictions=None), [inputs, kernel]
        )
        assert np.max(np.abs(full[1] - expected[1])) > 100 * GRAD_RTOL * np.max(
            np.abs(expected[1])
        )
