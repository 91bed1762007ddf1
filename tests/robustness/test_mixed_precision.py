"""Mixed precision (`mixed_float16`, `mixed_bfloat16`) on every backend.

The package computes squared norms, lengths and the routing softmax in
float32 and casts back; these tests check that low-precision capsules with
lengths far beyond what float16 can square (65504 ** 0.5 = 256) stay finite
and correct, and that a small CapsNet trains under both policies.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_capsules
from keras_capsules import ops as capsule_ops
from tests import numpy_reference
from tests.parity import _capsnet

POLICIES = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
# Relative precision of each dtype, with some room for a few roundings.
RTOL = {"float16": 4e-3, "bfloat16": 3e-2}


def _numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")).astype("float64")


def _vectors(lengths: list[float], dim: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(lengths), dim))
    return x / np.linalg.norm(x, axis=-1, keepdims=True) * np.array(lengths)[:, None]


@pytest.mark.parametrize("policy", POLICIES)
def test_capsnet_trains_a_step(policy: str) -> None:
    keras.config.set_dtype_policy(policy)
    model = _capsnet.build_capsnet()
    _capsnet.compile_for_step(model)
    low = POLICIES[policy]
    assert [keras.backend.standardize_dtype(t.dtype) for t in model.outputs] == [
        low,
        low,
    ]
    images, labels = _capsnet.fixed_batch()
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_weights]

    logs = model.train_on_batch(
        [images, labels], _capsnet.targets(images, labels), return_dict=True
    )

    assert all(np.isfinite(value) for value in logs.values()), logs
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_weights]
    for variable, value in zip(model.trainable_weights, after):
        assert value.dtype == np.float32, variable.path
        assert np.all(np.isfinite(value)), f"{policy}: {variable.path} is not finite"
    changed = [not np.array_equal(a, b) for a, b in zip(after, before)]
    assert all(changed), f"{policy}: the step left weights unchanged: {changed}"


@pytest.mark.parametrize("dtype", POLICIES.values())
def test_squash_of_long_low_precision_vectors(dtype: str) -> None:
    # |s|^2 of a length-1e3 vector is 1e6: inf in float16 without the
    # float32 upcast, and the result would be NaN.
    lengths = [1e-2, 1.0, 16.0, 300.0, 1e3, 3e4]
    x = keras.ops.cast(_vectors(lengths), dtype)

    v = capsule_ops.squash(x)

    assert keras.backend.standardize_dtype(v.dtype) == dtype
    v = _numpy(v)
    assert np.all(np.isfinite(v))
    expected = numpy_reference.squash(_numpy(x))
    np.testing.assert_allclose(v, expected, rtol=RTOL[dtype], atol=RTOL[dtype] / 10)
    assert np.all(np.linalg.norm(v, axis=-1) <= 1.0 + RTOL[dtype])


@pytest.mark.parametrize("dtype", POLICIES.values())
def test_length_of_long_low_precision_vectors(dtype: str) -> None:
    lengths = [1e-2, 1.0, 300.0, 1e3, 3e4]
    x = keras.ops.cast(_vectors(lengths), dtype)

    # One capsule per example: `Length` takes (batch, num_capsules, dim).
    length = keras_capsules.Length(dtype=dtype)(x[:, None])[:, 0]

    assert keras.backend.standardize_dtype(length.dtype) == dtype
    np.testing.assert_allclose(
        _numpy(length), np.linalg.norm(_numpy(x), axis=-1), rtol=RTOL[dtype]
    )


@pytest.mark.parametrize("policy", POLICIES)
def test_routing_in_low_precision_matches_float32(policy: str) -> None:
    # Predictions of length ~30 make agreements of ~30 per iteration: the
    # routing logits and their softmax stay in float32 and saturate safely.
    rng = np.random.default_rng(1)
    inputs = numpy_reference.squash(rng.normal(size=(4, 16, 4)) * 3).astype("float32")
    kernel = rng.normal(scale=8.0, size=(16, 3, 4, 8)).astype("float32")
    outputs = {}
    for name in ("float32", policy):
        layer = keras_capsules.RoutingCapsule(3, 8, dtype=name)
        layer.build((None, 16, 4))
        layer.kernel.assign(kernel)
        outputs[name] = layer(inputs)
    low = POLICIES[policy]
    assert keras.backend.standardize_dtype(outputs[policy].dtype) == low

    mixed, full = _numpy(outputs[policy]), _numpy(outputs["float32"])
    assert np.all(np.isfinite(mixed))
    np.testing.assert_allclose(mixed, full, rtol=0, atol=2 * RTOL[low])
    assert np.all(np.linalg.norm(mixed, axis=-1) <= 1.0 + RTOL[low])
    # The test is not vacuous: some capsules are long, and the couplings are
    # far from uniform.
    assert np.max(np.linalg.norm(full, axis=-1)) > 0.9


@pytest.mark.parametrize("dtype", POLICIES.values())
def test_routing_softmax_saturates_without_overflow(dtype: str) -> None:
    # Agreements of ~1e3 per iteration: exp() of such logits overflows in any
    # float type unless the softmax is shifted by its maximum.
    # Unit input capsules and a kernel of scale 1e3 / sqrt(8) make
    # predictions u_hat[j|i] of length ~1e3 with random directions.
    rng = np.random.default_rng(2)
    inputs = keras.ops.cast(_vectors([1.0] * 8, dim=8, seed=3)[None], dtype)
    kernel = keras.ops.cast(
        rng.normal(scale=1e3 / np.sqrt(8), size=(8, 3, 8, 8)), dtype
    )
    predictions = numpy_reference.predictions(_numpy(inputs), _numpy(kernel))
    assert np.median(np.linalg.norm(predictions, axis=-1)) > 500

    v, coupling = capsule_ops.dynamic_routing(inputs, kernel, 3, return_coupling=True)

    assert keras.backend.standardize_dtype(coupling.dtype) == dtype
    coupling = _numpy(coupling)
    assert np.all(np.isfinite(_numpy(v))) and np.all(np.isfinite(coupling))
    np.testing.assert_allclose(coupling.sum(axis=1), 1.0, atol=RTOL[dtype])
    # Saturated: each input capsule sends nearly everything to one output.
    assert np.mean(coupling.max(axis=1) > 0.99) > 0.5
