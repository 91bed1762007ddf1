"""Property-based tests of `squash` and `Length` (hypothesis), on every backend.

Each example is a fixed-shape batch of capsule vectors, so that compiled
kernels are reused across examples (JAX compiles per shape). Components are
bounded by 100 (lengths up to 200): beyond ~4096 the float32 length of a
squashed vector rounds to 1 (see `test_extreme_inputs.py`).
"""

from __future__ import annotations

import keras
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import keras_capsules
from keras_capsules import ops as capsule_ops
from tests.gradients import value_and_grads

NUM_VECTORS, DIM = 8, 4
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)

components = st.floats(-100.0, 100.0, width=32, allow_subnormal=False)
capsules = hnp.arrays(np.float32, (NUM_VECTORS, DIM), elements=components)
directions = hnp.arrays(
    np.float32, (NUM_VECTORS, DIM), elements=st.floats(-1.0, 1.0, width=32)
).filter(lambda x: np.all(np.linalg.norm(x, axis=-1) > 1e-3))
scales = hnp.arrays(
    np.float32, (NUM_VECTORS, 1), elements=st.floats(0.0, 100.0, width=32)
)


def _numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x).astype("float64")


def _squash_total(x):
    # Module-level, so the JAX gradient helper compiles it once.
    return keras.ops.sum(capsule_ops.squash(x))


_LENGTH = keras_capsules.Length()


def _length(x):
    # The examples are vectors; `Length` takes (batch, num_capsules, dim).
    return _LENGTH(x[None])[0]


def _length_total(x):
    return keras.ops.sum(_length(x))


@PROPERTY_SETTINGS
@given(capsules)
def test_squash_length_is_below_one_and_matches_eq_1(x: np.ndarray) -> None:
    v = _numpy(capsule_ops.squash(x))
    norm = np.linalg.norm(x.astype("float64"), axis=-1)
    length = np.linalg.norm(v, axis=-1)
    assert np.all(np.isfinite(v))
    assert np.all(length < 1.0), length.max()
    np.testing.assert_allclose(length, norm**2 / (1 + norm**2), rtol=1e-5, atol=1e-7)


@PROPERTY_SETTINGS
@given(capsules)
def test_squash_keeps_the_direction(x: np.ndarray) -> None:
    v = _numpy(capsule_ops.squash(x))
    x = x.astype("float64")
    norm = np.linalg.norm(x, axis=-1)
    long_enough = norm > 1e-3
    cosine = np.sum(v * x, axis=-1)[long_enough] / (
        np.linalg.norm(v, axis=-1)[long_enough] * norm[long_enough]
    )
    np.testing.assert_allclose(cosine, 1.0, atol=1e-6)
    # Zero in, zero out.
    assert np.all(v[norm == 0] == 0)


@PROPERTY_SETTINGS
@given(directions, scales, scales)
def test_squash_length_is_monotone_in_the_input_length(
    direction: np.ndarray, a: np.ndarray, b: np.ndarray
) -> None:
    low, high = np.minimum(a, b), np.maximum(a, b)
    squashed = _numpy(
        capsule_ops.squash(np.concatenate([low * direction, high * direction]))
    )
    lengths = np.linalg.norm(squashed, axis=-1)
    shorter, longer = lengths[:NUM_VECTORS], lengths[NUM_VECTORS:]
    assert np.all(shorter <= longer + 1e-7), np.max(shorter - longer)


@PROPERTY_SETTINGS
@given(capsules)
def test_squash_gradient_is_finite(x: np.ndarray) -> None:
    x[0] = 0.0  # always include the zero vector
    _, (grad,) = value_and_grads(_squash_total, [x])
    assert np.all(np.isfinite(grad))


@PROPERTY_SETTINGS
@given(capsules)
def test_length_is_the_norm(x: np.ndarray) -> None:
    length = _numpy(_length(x))
    expected = np.linalg.norm(x.astype("float64"), axis=-1)
    np.testing.assert_allclose(length, expected, rtol=1e-6, atol=1e-7)
    assert np.all(length >= 0)


@PROPERTY_SETTINGS
@given(capsules)
def test_length_of_squashed_capsules_is_below_one(x: np.ndarray) -> None:
    length = _numpy(_length(capsule_ops.squash(x)))
    assert np.all((length >= 0) & (length < 1)), length.max()


@PROPERTY_SETTINGS
@given(capsules)
def test_length_gradient_is_finite_and_a_unit_vector(x: np.ndarray) -> None:
    x[0] = 0.0
    _, (grad,) = value_and_grads(_length_total, [x])
    assert np.all(np.isfinite(grad))
    x64 = x.astype("float64")
    norm = np.linalg.norm(x64, axis=-1)
    nonzero = norm > 1e-3
    # d|x|/dx = x / |x|, and 0 (a subgradient) at the zero vector.
    np.testing.assert_allclose(
        grad[nonzero], x64[nonzero] / norm[nonzero, None], atol=1e-5
    )
    np.testing.assert_array_equal(grad[0], 0.0)
