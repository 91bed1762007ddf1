from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.losses import SpreadLoss
from keras_capsules.ops import spread_loss
from tests import numpy_reference


def _batch(n=8, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    y_true = np.eye(classes, dtype="float32")[rng.integers(0, classes, size=n)]
    y_pred = rng.uniform(size=(n, classes)).astype("float32")
    return y_true, y_pred


@pytest.mark.parametrize("margin", [0.0, 0.2, 0.55, 0.9])
def test_matches_eq_3_per_example_and_mean_over_batch(margin):
    y_true, y_pred = _batch()
    expected = numpy_reference.spread_loss(y_true, y_pred, margin)
    per_example = keras.ops.convert_to_numpy(spread_loss(y_true, y_pred, margin))
    np.testing.assert_allclose(per_example, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        float(SpreadLoss(margin)(y_true, y_pred)), expected.mean(), rtol=1e-5
    )


def test_a_gap_larger_than_the_margin_costs_nothing():
    y_true = np.eye(3, dtype="float32")
    y_pred = np.where(y_true > 0, 0.95, 0.05).astype("float32")
    assert float(SpreadLoss(0.9)(y_true, y_pred)) == 0.0
    assert float(SpreadLoss(0.91)(y_true, y_pred)) > 0.0


def test_integer_targets_and_reductions():
    y_true, y_pred = _batch(seed=1)
    expected = numpy_reference.spread_loss(y_true, y_pred, 0.4)
    loss = SpreadLoss(0.4, reduction="sum")
    np.testing.assert_allclose(
        float(loss(y_true.astype("int32"), y_pred)), expected.sum(), rtol=1e-5
    )


def test_config_round_trip_and_saving_with_a_model(tmp_path):
    loss = SpreadLoss(margin=0.35, name="spread")
    config = loss.get_config()
    assert config["margin"] == 0.35 and config["name"] == "spread"
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert isinstance(revived, SpreadLoss) and revived.get_config() == config
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "sigmoid")])
    model.compile(optimizer="sgd", loss=loss)
    model.fit(np.ones((4, 4), "float32"), _batch(4, 3)[0], verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.loss, SpreadLoss) and reloaded.loss.margin == 0.35


def test_bad_margin_and_shapes_are_named_value_errors():
    with pytest.raises(ValueError, match="`margin`.*margin=-0.1"):
        SpreadLoss(margin=-0.1)
    y_true, y_pred = _batch()
    with pytest.raises(
        ValueError, match=r"y_true.shape=\(8, 4\), y_pred.shape=\(8, 5\)"
    ):
        SpreadLoss()(y_true[:, :4], y_pred)
