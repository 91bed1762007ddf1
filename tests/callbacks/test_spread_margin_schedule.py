"""The margin schedule reaches the compiled loss, jit-compiled or not."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.callbacks import SpreadMarginSchedule
from keras_capsules.losses import SpreadLoss
from tests import numpy_reference


def _frozen_model(jit_compile):
    # A learning rate of 0 keeps the predictions fixed, so every change of
    # the logged loss comes from the margin.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, "sigmoid")])
    model.compile(
        optimizer=keras.optimizers.SGD(0.0), loss=SpreadLoss(), jit_compile=jit_compile
    )
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, 8)]
    return x, y


def test_margin_grows_linearly_per_epoch():
    schedule = SpreadMarginSchedule(0.2, 0.9, epochs=8)
    margins = [schedule.margin_at(e) for e in range(10)]
    np.testing.assert_allclose(margins[:8], np.linspace(0.2, 0.9, 8))
    assert margins[8] == margins[9] == pytest.approx(0.9)


@pytest.mark.parametrize("jit_compile", ["auto", True, False])
def test_compiled_loss_sees_every_new_margin(jit_compile):
    if jit_compile is True and keras.backend.backend() == "torch":
        pytest.skip("jit_compile=True is torch.compile, slow and not under test")
    model = _frozen_model(jit_compile)
    x, y = _data()
    schedule = SpreadMarginSchedule(0.2, 0.9)
    validation = (x, y)
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        verbose=0,
        callbacks=[schedule],
        validation_data=validation,
    )
    predictions = keras.ops.convert_to_numpy(model(x))
    margins = [0.2, 0.55, 0.9]
    expected = [numpy_reference.spread_loss(y, predictions, m).mean() for m in margins]
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(history.history["val_loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(history.history["spread_margin"], margins)
    assert model.loss.margin == pytest.approx(0.9)


def test_an_explicit_loss_and_a_missing_one():
    loss = SpreadLoss()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, "sigmoid")])
    model.compile(optimizer="sgd", loss=["mse"])
    x, y = _data()
    with pytest.raises(ValueError, match="found no `SpreadLoss`"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[SpreadMarginSchedule()])
    schedule = SpreadMarginSchedule(0.3, 0.5, epochs=2, loss=loss)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[schedule])
    assert loss.margin == pytest.approx(0.5)


def test_bad_arguments_are_named_value_errors():
    with pytest.raises(ValueError, match="initial_margin=-1"):
        SpreadMarginSchedule(initial_margin=-1)
    with pytest.raises(ValueError, match="epochs=0"):
        SpreadMarginSchedule(epochs=0)
    with pytest.raises(ValueError, match="`loss`"):
        SpreadMarginSchedule(loss="mse")
