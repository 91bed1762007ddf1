from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_capsules
from keras_capsules.losses import MarginLoss
from tests import numpy_reference


def _batch(n=8, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    y_true = np.eye(classes, dtype="float32")[rng.integers(0, classes, size=n)]
    y_pred = rng.uniform(size=(n, classes)).astype("float32")
    return y_true, y_pred


def test_matches_eq_4_mean_over_batch():
    y_true, y_pred = _batch()
    expected = numpy_reference.margin_loss(y_true, y_pred).mean()
    np.testing.assert_allclose(float(MarginLoss()(y_true, y_pred)), expected, rtol=1e-5)


def test_arguments_are_used():
    y_true, y_pred = _batch(seed=1)
    loss = MarginLoss(m_plus=0.95, m_minus=0.05, down_weight=0.25, reduction="sum")
    expected = numpy_reference.margin_loss(y_true, y_pred, 0.95, 0.05, 0.25).sum()
    np.testing.assert_allclose(float(loss(y_true, y_pred)), expected, rtol=1e-5)


def test_perfect_prediction_has_zero_loss():
    y_true = np.eye(3, dtype="float32")
    y_pred = np.where(y_true > 0, 0.95, 0.05).astype("float32")
    assert float(MarginLoss()(y_true, y_pred)) == 0.0


def test_integer_one_hot_targets_are_converted():
    y_true, y_pred = _batch(seed=2)
    np.testing.assert_allclose(
        float(MarginLoss()(y_true.astype("int32"), y_pred)),
        float(MarginLoss()(y_true, y_pred)),
        rtol=1e-6,
    )


def test_config_round_trip_and_serialization():
    loss = MarginLoss(m_plus=0.8, m_minus=0.2, down_weight=0.4, name="margin")
    config = loss.get_config()
    assert config["m_plus"] == 0.8 and config["down_weight"] == 0.4
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert isinstance(revived, MarginLoss) and revived.get_config() == config


def test_model_compiled_with_it_saves_and_loads(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "sigmoid")])
    model.compile(optimizer="sgd", loss=keras_capsules.MarginLoss(m_plus=0.8))
    y_true, _ = _batch(4, 3)
    model.fit(np.ones((4, 4), "float32"), y_true, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.loss, MarginLoss) and reloaded.loss.m_plus == 0.8


def test_shape_mismatch_is_a_value_error_with_both_shapes():
    y_true, y_pred = _batch()
    with pytest.raises(
        ValueError, match=r"y_true.shape=\(8, 9\), y_pred.shape=\(8, 10\)"
    ):
        MarginLoss()(y_true[:, :9], y_pred)


@pytest.mark.parametrize("argument", ["m_plus", "m_minus", "down_weight"])
def test_negative_arguments_are_rejected(argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}=-1"):
        MarginLoss(**{argument: -1})


def test_two_digit_targets_of_multi_mnist():
    # MultiMNIST: both classes of an overlay are present, T_k = 1 for each;
    # eq. 4 then asks both capsules to be long and the others short.
    rng = np.random.default_rng(3)
    first = rng.integers(0, 10, 8)
    second = (first + rng.integers(1, 10, 8)) % 10
    y_true = np.zeros((8, 10), "float32")
    y_true[np.arange(8), first] = y_true[np.arange(8), second] = 1.0
    y_pred = rng.uniform(size=(8, 10)).astype("float32")
    expected = numpy_reference.margin_loss(y_true, y_pred).mean()
    np.testing.assert_allclose(float(MarginLoss()(y_true, y_pred)), expected, rtol=1e-5)
    both_long = np.where(y_true == 1, 0.95, 0.05).astype("float32")
    assert float(MarginLoss()(y_true, both_long)) == 0.0
