from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.layers import Mask
from tests.layer_harness import run_layer_test


def _capsules(batch=3):
    return np.random.default_rng(0).normal(size=(batch, 4, 2)).astype("float32")


def test_layer_contract_without_labels(tmp_path):
    run_layer_test(
        Mask,
        {},
        _capsules(),
        expected_output_shape=(3, 8),
        expected_num_trainable_weights=0,
        tmp_path=tmp_path,
        run_training_check=False,
    )


def test_layer_contract_with_labels(tmp_path):
    labels = np.eye(4, dtype="float32")[[0, 3, 1]]
    run_layer_test(
        Mask,
        {},
        [_capsules(), labels],
        expected_output_shape=(3, 8),
        expected_num_trainable_weights=0,
        tmp_path=tmp_path,
        run_training_check=False,
        trainable_inputs=(0, 1),
    )


def test_labels_choose_the_capsule():
    capsules = _capsules()
    labels = np.eye(4, dtype="float32")[[2, 2, 0]]
    output = keras.ops.convert_to_numpy(Mask()([capsules, labels])).reshape(3, 4, 2)
    np.testing.assert_array_equal(output, capsules * labels[..., None])


def test_without_labels_the_longest_capsule_is_kept():
    capsules = _capsules()
    longest = np.linalg.norm(capsules, axis=-1).argmax(-1)
    output = keras.ops.convert_to_numpy(Mask()(capsules)).reshape(3, 4, 2)
    for n in range(3):
        np.testing.assert_array_equal(output[n, longest[n]], capsules[n, longest[n]])
        assert np.count_nonzero(np.delete(output[n], longest[n], axis=0)) == 0


def test_labels_that_do_not_match_the_capsule_count_are_rejected():
    labels = np.eye(5, dtype="float32")[[0, 1, 2]]
    with pytest.raises(
        ValueError, match=r"\(3, 4\).*\(3, 4, 2\).*labels.shape=\(3, 5\)"
    ):
        Mask()([_capsules(), labels])


def test_symbolic_label_mismatch_is_rejected():
    with pytest.raises(ValueError, match=r"labels.shape=\(None, 3\)"):
        Mask()([keras.Input((4, 2)), keras.Input((3,))])


def test_capsules_of_wrong_rank_are_rejected():
    with pytest.raises(ValueError, match=r"capsules.shape=\(None, 8\)"):
        Mask()(keras.Input((8,)))


def test_each_of_two_digits_is_decoded_from_its_own_capsule():
    # MultiMNIST's decoder reconstructs each digit from its own capsule: the
    # capsules are masked once per label, each a one-hot.
    rng = np.random.default_rng(4)
    capsules = rng.normal(size=(3, 5, 4)).astype("float32")
    labels = np.array([[0, 3], [2, 4], [1, 0]])
    mask = Mask()
    for column in range(2):
        one_hot = np.eye(5, dtype="float32")[labels[:, column]]
        masked = np.asarray(keras.ops.convert_to_numpy(mask([capsules, one_hot])))
        masked = masked.reshape(3, 5, 4)
        for example, label in enumerate(labels[:, column]):
            np.testing.assert_array_equal(
                masked[example, label], capsules[example, label]
            )
            others = np.delete(masked[example], label, axis=0)
            np.testing.assert_array_equal(others, 0.0)
