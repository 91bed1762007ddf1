from __future__ import annotations

import keras
import numpy as np

from keras_capsules.layers import Length
from tests import numpy_reference
from tests.gradients import value_and_grads
from tests.layer_harness import run_layer_test


def test_layer_contract(tmp_path):
    run_layer_test(
        Length,
        {},
        np.random.default_rng(0).normal(size=(3, 5, 4)).astype("float32"),
        expected_output_shape=(3, 5),
        expected_num_trainable_weights=0,
        tmp_path=tmp_path,
        run_training_check=False,
    )


def test_matches_reference_and_gradient_is_finite_at_zero():
    v = np.random.default_rng(1).normal(size=(2, 4, 3)).astype("float32")
    v[1, 2] = 0.0
    output = keras.ops.convert_to_numpy(Length()(v))
    np.testing.assert_allclose(output, numpy_reference.length(v), rtol=1e-5, atol=1e-7)
    (grad,) = value_and_grads(lambda x: keras.ops.sum(Length()(x)), [v])[1]
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad[0, 0], v[0, 0] / np.linalg.norm(v[0, 0]), rtol=1e-5)
