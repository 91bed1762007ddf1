"""`keras_capsules.ops.dynamic_routing` against Procedure 1, per backend.

Values and couplings against the loop-based NumPy reference (float32, and
float64 where the backend has it), and the gradient that
`stop_gradient_on_agreement` promises against a hand-written routing with
the prediction vectors formed and `stop_gradient` placed by hand.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_capsules import ops as capsule_ops
from tests import numpy_reference
from tests.gradients import value_and_grads

BACKEND = keras.backend.backend()


def _numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _routing_inputs(seed: int, dtype: str = "float32", kernel_scale: float = 0.5):
    rng = np.random.default_rng(seed)
    u = numpy_reference.squash(rng.normal(size=(3, 12, 4)))
    kernel = rng.normal(scale=kernel_scale, size=(12, 5, 4, 6))
    return u.astype(dtype), kernel.astype(dtype)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_matches_procedure_1(iterations):
    u, kernel = _routing_inputs(iterations)
    expected_v, expected_c = numpy_reference.dynamic_routing(u, kernel, iterations)
    v, c = capsule_ops.dynamic_routing(u, kernel, iterations, return_coupling=True)
    assert tuple(v.shape) == (3, 5, 6) and tuple(c.shape) == (3, 5, 12)
    np.testing.assert_allclose(_numpy(v), expected_v, rtol=1e-4, atol=1e-6)
    # The package keeps couplings as (batch, out, in); the reference as (batch, in, out).
    np.testing.assert_allclose(
        _numpy(c), expected_c.transpose(0, 2, 1), rtol=1e-4, atol=1e-6
    )


def test_defaults_are_three_iterations_and_the_capsules_alone():
    u, kernel = _routing_inputs(4)
    expected, _ = numpy_reference.dynamic_routing(u, kernel, 3)
    v = capsule_ops.dynamic_routing(u, kernel)
    np.testing.assert_allclose(_numpy(v), expected, rtol=1e-4, atol=1e-6)


def test_coupling_is_a_distribution_over_the_output_capsules():
    u, kernel = _routing_inputs(5, kernel_scale=2.0)
    _, c = capsule_ops.dynamic_routing(u, kernel, 3, return_coupling=True)
    c = _numpy(c)
    assert np.all(c >= 0)
    np.testing.assert_allclose(c.sum(axis=1), 1.0, atol=1e-5)


def test_one_routing_iteration_is_uniform_coupling():
    rng = np.random.default_rng(7)
    u = rng.normal(size=(2, 6, 3)).astype("float32")
    kernel = rng.normal(size=(6, 4, 3, 5)).astype("float32")
    _, c = capsule_ops.dynamic_routing(u, kernel, 1, return_coupling=True)
    np.testing.assert_allclose(_numpy(c), np.full((2, 4, 6), 0.25), rtol=1e-6)


def test_routing_agreement_changes_the_coupling():
    rng = np.random.default_rng(8)
    u = rng.normal(size=(2, 6, 3)).astype("float32")
    kernel = rng.normal(size=(6, 4, 3, 5)).astype("float32")
    _, c = capsule_ops.dynamic_routing(u, kernel, 3, return_coupling=True)
    assert np.abs(_numpy(c) - 0.25).max() > 1e-3


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None])
def test_bad_iterations_are_rejected(bad):
    u, kernel = _routing_inputs(0)
    with pytest.raises(ValueError, match="`routing_iterations`.*routing_iterations="):
        capsule_ops.dynamic_routing(u, kernel, bad)


def _skip_without_float64():
    if BACKEND == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("float64 on JAX needs x64 (JAX_ENABLE_X64=1), off here")


@pytest.mark.parametrize("iterations", [1, 3, 5])
def test_float64_matches_the_float64_reference(iterations):
    """Logits, softmax and squash all stay in float64 for float64 capsules."""
    _skip_without_float64()
    u, kernel = _routing_inputs(10 + iterations, "float64", kernel_scale=1.5)
    expected_v, expected_c = numpy_reference.dynamic_routing(u, kernel, iterations)
    v, c = capsule_ops.dynamic_routing(u, kernel, iterations, return_coupling=True)
    assert _numpy(v).dtype == np.float64 and _numpy(c).dtype == np.float64
    np.testing.assert_allclose(_numpy(v), expected_v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        _numpy(c), expected_c.transpose(0, 2, 1), rtol=1e-12, atol=1e-12
    )


# --- stop_gradient_on_agreement -------------------------------------------
#
# The docstring's claim: the agreement updates (step 4) use `stop_gradient`
# copies of the inputs and the kernel, so no gradient reaches them through
# the prediction vectors of the agreement, while the outputs `v` in the
# agreement still carry theirs. Routing written by hand with the prediction
# vectors formed, in three variants, tells the cases apart.


def _routing_by_hand(u, kernel, iterations: int, agreement: str):
    """Procedure 1 on formed predictions `(b, j, i, e)`.

    `agreement`: "live" (the paper), "constant_predictions" (step 4 sees
    `stop_gradient(u_hat)` and the live `v`), or "constant_update" (no
    gradient through step 4 at all).
    """
    u_hat = capsule_ops.capsule_predictions(u, kernel)
    agree_with = (
        ops.stop_gradient(u_hat) if agreement == "constant_predictions" else u_hat
    )
    logits = ops.zeros(tuple(u_hat.shape[:3]), dtype=u_hat.dtype)
    for iteration in range(iterations):
        coupling = ops.softmax(logits, axis=1)
        v = capsule_ops.squash(ops.einsum("bji,bjie->bje", coupling, u_hat))
        if iteration < iterations - 1:
            update = ops.einsum("bjie,bje->bji", agree_with, v)
            if agreement == "constant_update":
                update = ops.stop_gradient(update)
            logits = logits + update
    return v


def _gradients(routing, iterations: int = 3):
    """Value and gradients (inputs, kernel) of `sum(w * routing(u, W))`."""
    u, kernel = _routing_inputs(21, kernel_scale=1.0)
    w = np.random.default_rng(22).normal(size=(3, 5, 6)).astype("float32")
    return value_and_grads(
        lambda a, b: ops.sum(ops.multiply(w, routing(a, b, iterations))), [u, kernel]
    )


def _flagged(stop_gradient: bool):
    return lambda u, kernel, iterations: capsule_ops.dynamic_routing(
        u, kernel, iterations, stop_gradient_on_agreement=stop_gradient
    )


def _by_hand(agreement: str):
    return lambda u, kernel, iterations: _routing_by_hand(
        u, kernel, iterations, agreement
    )


def _relative_difference(a: list[np.ndarray], b: list[np.ndarray]) -> list[float]:
    return [
        float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30))
        for x, y in zip(a, b, strict=True)
    ]


TOLERANCE = 1e-4  # float32 autodiff of two formulations
DIFFERENT = 1e-2  # 100x the tolerance: the variants really differ here


def test_default_back_propagates_through_every_agreement():
    value, grads = _gradients(_flagged(False))
    by_hand_value, by_hand = _gradients(_by_hand("live"))
    np.testing.assert_allclose(value, by_hand_value, rtol=1e-5)
    assert max(_relative_difference(grads, by_hand)) < TOLERANCE


def test_stop_gradient_holds_the_agreement_predictions_constant():
    value, grads = _gradients(_flagged(True))
    by_hand_value, by_hand = _gradients(_by_hand("constant_predictions"))
    np.testing.assert_allclose(value, by_hand_value, rtol=1e-5)
    assert max(_relative_difference(grads, by_hand)) < TOLERANCE


def test_stop_gradient_changes_the_gradient_and_not_the_value():
    # Fails if the flag does nothing.
    value, grads = _gradients(_flagged(True))
    full_value, full = _gradients(_flagged(False))
    np.testing.assert_allclose(value, full_value, rtol=1e-6)
    differences = _relative_difference(grads, full)
    assert min(differences) > DIFFERENT, differences


def test_stop_gradient_keeps_the_gradient_through_the_outputs():
    # Fails if the flag stopped every gradient, or every gradient through
    # the logits (the outputs `v` in the agreement would lose theirs too).
    _, grads = _gradients(_flagged(True))
    for grad in grads:
        assert np.all(np.isfinite(grad)) and np.max(np.abs(grad)) > 1e-3
    _, no_agreement = _gradients(_by_hand("constant_update"))
    differences = _relative_difference(grads, no_agreement)
    assert min(differences) > DIFFERENT, differences


def test_stop_gradient_changes_nothing_with_one_iteration():
    # One iteration has no agreement step to stop.
    _, grads = _gradients(_flagged(True), iterations=1)
    _, full = _gradients(_flagged(False), iterations=1)
    assert max(_relative_difference(grads, full)) < 1e-6
