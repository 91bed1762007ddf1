"""MatrixCapsNet: the paper's weight count, the model harness, bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.losses import SpreadLoss
from keras_capsules.models import MatrixCapsNet
from tests.model_harness import run_float64_test, run_model_test

# Narrow enough to build, call and train in seconds on a CPU.
SMALL = dict(
    image_shape=(32, 32, 1),
    num_classes=5,
    conv_filters=4,
    primary_capsule_types=4,
    conv_capsule_types=(4, 4),
)


def _data(count=2, shape=(32, 32, 1), num_classes=5, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(count, *shape)).astype("float32")
    labels = np.eye(num_classes, dtype="float32")[rng.integers(0, num_classes, count)]
    return images, labels


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_paper_smallnorb_model_has_316394_weights():
    model = MatrixCapsNet()
    # conv 832 + primary 17,952 + two conv capsule layers 147,520 each
    # (3*3*32*32 4x4 matrices + 64 betas) + class capsules 2,570.
    assert _trainable_count(model) == 316_394
    assert model.non_trainable_weights == []
    assert tuple(model.conv_capsules[0].kernel.shape) == (3, 3, 32, 32, 4, 4)
    assert tuple(model.class_capsule.kernel.shape) == (32, 5, 4, 4)
    # The paper's smaller model, "about 68K".
    small = MatrixCapsNet(
        conv_filters=64, primary_capsule_types=8, conv_capsule_types=(16, 16)
    )
    assert _trainable_count(small) == 67_154


def test_model_harness(tmp_path):
    images, labels = _data()
    run_model_test(
        MatrixCapsNet,
        SMALL,
        images,
        tmp_path,
        train_data=(images, labels),
        loss=SpreadLoss(margin=0.9),
        expected_output_shape=(2, 5),
    )


def test_float64(tmp_path):
    run_float64_test(MatrixCapsNet, SMALL, _data()[0], pytest.skip)


def test_class_activations_are_probabilities_and_spatial_sizes_follow_the_paper():
    keras.utils.set_random_seed(0)
    model = MatrixCapsNet(**SMALL)
    activations = keras.ops.convert_to_numpy(model(_data(3, seed=1)[0]))
    assert activations.shape == (3, 5)
    # A sigmoid: in (0, 1), though float32 rounds logits above ~17 to 1.
    assert np.all((activations > 0) & (activations <= 1))
    # 32x32 -> 14x14 (conv, primary), 6x6 and 4x4 (conv capsules), 5 classes.
    poses, class_activations = model.class_capsules(_data(1)[0])
    assert tuple(poses.shape) == (1, 5, 16)
    grid = model.conv_capsules[1].compute_output_shape(
        [(None, 6, 6, 4, 16), (None, 6, 6, 4)]
    )
    assert grid[1] == (None, 4, 4, 4)


def test_every_sublayer_gets_the_dtype_policy_and_config_arguments():
    model = MatrixCapsNet(**SMALL, routing_iterations=2, dtype="mixed_bfloat16")
    layers = [
        model.conv,
        model.primary_capsule,
        *model.conv_capsules,
        model.class_capsule,
    ]
    assert {layer.dtype_policy.name for layer in layers} == {"mixed_bfloat16"}
    assert {layer.routing_iterations for layer in layers[2:]} == {2}
    config = model.get_config()
    assert config["conv_capsule_types"] == (4, 4) and config["pose_size"] == 16


def test_bad_arguments_are_named_value_errors():
    with pytest.raises(ValueError, match=r"`image_shape`.*image_shape=\(12, 12, 1\)"):
        MatrixCapsNet(**{**SMALL, "image_shape": (12, 12, 1)})
    with pytest.raises(ValueError, match="conv_capsule_strides"):
        MatrixCapsNet(**SMALL, conv_capsule_strides=(2,))
    with pytest.raises(ValueError, match="pose_size=10"):
        MatrixCapsNet(**SMALL, pose_size=10)
    with pytest.raises(ValueError, match="num_classes=0"):
        MatrixCapsNet(**{**SMALL, "num_classes": 0})
    with pytest.raises(ValueError, match=r"images.shape=\(2, 28, 28, 1\)"):
        MatrixCapsNet(**SMALL)(np.zeros((2, 28, 28, 1), "float32"))
