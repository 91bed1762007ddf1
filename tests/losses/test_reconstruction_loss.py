from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.losses import ReconstructionLoss
from keras_capsules.ops import reconstruction_loss


def _images(n=6, shape=(5, 4, 2), seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.uniform(size=(n, *shape)).astype("float32"),
        rng.uniform(size=(n, *shape)).astype("float32"),
    )


def _sum_of_squares(y_true, y_pred):
    return ((y_pred.astype("float64") - y_true) ** 2).reshape(len(y_true), -1).sum(1)


def test_functional_form_sums_squared_errors_per_example():
    y_true, y_pred = _images()
    loss = keras.ops.convert_to_numpy(reconstruction_loss(y_true, y_pred))
    np.testing.assert_allclose(loss, _sum_of_squares(y_true, y_pred), rtol=1e-5)


def test_default_weight_is_the_papers_0_0005_on_the_batch_mean():
    y_true, y_pred = _images(seed=1)
    expected = 0.0005 * _sum_of_squares(y_true, y_pred).mean()
    np.testing.assert_allclose(
        float(ReconstructionLoss()(y_true, y_pred)), expected, rtol=1e-5
    )


def test_weight_and_reduction_are_used():
    y_true, y_pred = _images(seed=2)
    loss = ReconstructionLoss(weight=2.0, reduction="sum")
    expected = 2.0 * _sum_of_squares(y_true, y_pred).sum()
    np.testing.assert_allclose(float(loss(y_true, y_pred)), expected, rtol=1e-5)


def test_flat_images_and_uint8_targets():
    y_pred = np.full((2, 4), 0.5, "float32")
    y_true = np.array([[0, 1, 0, 1], [1, 1, 1, 1]], "uint8")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reconstruction_loss(y_true, y_pred)), [1.0, 1.0]
    )


def test_config_round_trip_and_serialization():
    loss = ReconstructionLoss(weight=0.25, name="recon")
    clone = ReconstructionLoss.from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert isinstance(revived, ReconstructionLoss) and revived.weight == 0.25


@pytest.mark.parametrize("weight", [-1.0, "0.5", True])
def test_invalid_weight_is_named(weight):
    with pytest.raises(ValueError, match="`weight`.*Received: weight="):
        ReconstructionLoss(weight=weight)


def test_shape_mismatch_is_reported():
    with pytest.raises(
        ValueError, match=r"y_true.shape=\(2, 4\), y_pred.shape=\(2, 5\)"
    ):
        ReconstructionLoss()(np.zeros((2, 4), "float32"), np.zeros((2, 5), "float32"))
