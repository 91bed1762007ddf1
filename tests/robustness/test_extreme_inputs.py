"""Degenerate and extreme inputs on every backend: finite outputs, lengths < 1.

One small CapsNet is built per module and reset to its initial weights by
each test, so that each backend compiles its predict and train functions
only once per batch shape.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_capsules
from keras_capsules import ops as capsule_ops
from tests.gradients import value_and_grads
from tests.parity import _capsnet

BATCH = _capsnet.BATCH_SIZE


class CapsNet:
    def __init__(self) -> None:
        self.model = _capsnet.build_capsnet()
        _capsnet.compile_for_step(self.model)
        self.initial = self.model.get_weights()

    def reset(self) -> keras.Model:
        self.model.set_weights(self.initial)
        return self.model

    def predict(self, images, labels, batch_size: int = BATCH) -> np.ndarray:
        lengths, reconstruction = self.model.predict(
            [images, labels], batch_size=batch_size, verbose=0
        )
        assert np.all(np.isfinite(lengths)) and np.all(np.isfinite(reconstruction))
        assert lengths.shape == (len(images), _capsnet.NUM_CLASSES)
        assert reconstruction.shape == (len(images), *_capsnet.IMAGE_SHAPE)
        return lengths


@pytest.fixture(scope="module")
def capsnet() -> CapsNet:
    keras.config.set_dtype_policy("float32")
    return CapsNet()


def assert_strictly_below_one(lengths: np.ndarray, what: str) -> None:
    assert np.all(lengths >= 0), f"{what}: negative length {lengths.min()}"
    assert np.all(lengths < 1), f"{what}: length {lengths.max()!r} is not below 1"


def assert_finite_weights(model: keras.Model, what: str) -> None:
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        assert np.all(np.isfinite(value)), f"{what}: {variable.path} is not finite"


def test_all_zero_images(capsnet: CapsNet) -> None:
    model = capsnet.reset()
    images, labels = _capsnet.fixed_batch()
    zeros = np.zeros_like(images)

    lengths = capsnet.predict(zeros, labels)

    # Zero features -> zero capsules at every level: the eps-safe norms give
    # exactly 0 and not NaN.
    np.testing.assert_array_equal(lengths, 0.0)
    logs = model.train_on_batch(
        [zeros, labels], _capsnet.targets(zeros, labels), return_dict=True
    )
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert_finite_weights(model, "one step on zero images")


@pytest.mark.parametrize("scale", [1e4, 1e8])
def test_huge_images(capsnet: CapsNet, scale: float) -> None:
    model = capsnet.reset()
    images, labels = _capsnet.fixed_batch()
    huge = images * np.float32(scale)

    lengths = capsnet.predict(huge, labels)

    assert_strictly_below_one(lengths, f"images x {scale:g}")
    logs = model.train_on_batch(
        [huge, labels], _capsnet.targets(images, labels), return_dict=True
    )
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert_finite_weights(model, f"one step on images x {scale:g}")


@pytest.mark.parametrize("batch_size", [1, 7, 33])
def test_odd_batch_sizes(capsnet: CapsNet, batch_size: int) -> None:
    capsnet.reset()
    images, labels = _capsnet.fixed_batch(33, seed=1)
    images, labels = images[:batch_size], labels[:batch_size]

    lengths = capsnet.predict(images, labels, batch_size=batch_size)

    assert_strictly_below_one(lengths, f"batch of {batch_size}")
    # Routing is per example: a batch of one gives the same answer as that
    # example among others.
    reference = capsnet.predict(*_capsnet.fixed_batch(33, seed=1), batch_size=BATCH)[
        :batch_size
    ]
    np.testing.assert_allclose(lengths, reference, rtol=1e-5, atol=1e-6)


def test_predict_and_fit_with_a_partial_last_batch(capsnet: CapsNet) -> None:
    model = capsnet.reset()
    images, labels = _capsnet.fixed_batch(33, seed=2)

    # 33 = 4 x 8 + 1
    lengths = capsnet.predict(images, labels, batch_size=BATCH)
    whole = np.concatenate(
        [
            capsnet.predict(images[:32], labels[:32]),
            capsnet.predict(images[32:], labels[32:], batch_size=1),
        ]
    )
    np.testing.assert_allclose(lengths, whole, rtol=1e-5, atol=1e-6)
    assert_strictly_below_one(lengths, "predict(33, batch_size=8)")

    history = model.fit(
        [images, labels],
        _capsnet.targets(images, labels),
        batch_size=BATCH,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    assert np.all(np.isfinite(history.history["loss"])), history.history
    assert_finite_weights(model, "fit(33, batch_size=8)")


# --- squash / Length far outside the usual range ---------------------------


def test_squash_saturates_finitely_for_long_float32_vectors() -> None:
    # Beyond |s| ~ 4096 the float32 value of |s|^2 / (1 + |s|^2) is 1, so the
    # squashed length is 1 up to rounding (not strictly below 1), but finite
    # and in the right direction, up to |s| ~ 1e18.
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(6, 8))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    x = (direction * np.array([1e3, 4096.0, 1e4, 1e8, 1e12, 1e18])[:, None]).astype(
        "float32"
    )

    v = keras.ops.convert_to_numpy(capsule_ops.squash(x)).astype("float64")
    # One capsule per example: `Length` takes (batch, num_capsules, dim).
    length = keras.ops.convert_to_numpy(keras_capsules.Length()(x[:, None]))[:, 0]
    length = length.astype("float64")

    assert np.all(np.isfinite(v)) and np.all(np.isfinite(length))
    np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(v, direction, atol=1e-6)
    np.testing.assert_allclose(
        length, np.linalg.norm(x.astype("float64"), axis=-1), rtol=1e-6
    )
    _, (grad,) = value_and_grads(lambda t: keras.ops.sum(capsule_ops.squash(t)), [x])
    assert np.all(np.isfinite(grad))


@pytest.mark.xfail(
    strict=True,
    reason="known limit: |s|^2 overflows float32 for |s| > ~1.8e19, and "
    "squash / capsule_length return NaN (inf / inf, inf * 0)",
)
def test_squash_of_float32_vectors_beyond_1e19() -> None:
    x = np.array([[1e20, 0.0, 0.0, 0.0]], dtype="float32")
    v = keras.ops.convert_to_numpy(capsule_ops.squash(x))
    length = keras.ops.convert_to_numpy(capsule_ops.capsule_length(x))
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(length))
