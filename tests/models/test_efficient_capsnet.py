"""`EfficientCapsNet`: the paper's architecture and the model contract."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.layers import DepthwisePrimaryCapsule, SelfAttentionRoutingCapsule
from keras_capsules.losses import MarginLoss, ReconstructionLoss
from keras_capsules.models import BaseCapsuleClassifier, EfficientCapsNet
from tests.model_harness import run_float64_test, run_model_test

# Narrow enough to train in well under a second on a CPU.
SMALL = dict(
    image_shape=(16, 16, 1),
    num_classes=3,
    conv_filters=(4, 8),
    conv_kernel_sizes=(3, 3),
    conv_strides=(1, 2),
    primary_capsule_dim=4,
    capsule_dim=5,
    decoder_units=(16,),
)


def _data(seed=0, count=4):
    rng = np.random.default_rng(seed)
    images = rng.random((count, 16, 16, 1)).astype("float32")
    labels = np.eye(3, dtype="float32")[rng.integers(0, 3, count)]
    return images, labels


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def test_papers_mnist_network_has_161824_trainable_weights():
    model = EfficientCapsNet(use_decoder=False)
    # convs 130,112 + batch norms 576 + primary 10,496 + routing 20,640
    assert _count(model.trainable_weights) == 161_824
    assert _count(model.non_trainable_weights) == 576  # moving means, variances
    assert isinstance(model.primary_capsule, DepthwisePrimaryCapsule)
    assert isinstance(model.class_capsule, SelfAttentionRoutingCapsule)
    assert tuple(model.class_capsule.kernel.shape) == (16, 10, 8, 16)
    assert isinstance(model, BaseCapsuleClassifier)


def test_decoder_adds_the_capsnet_decoder():
    with_decoder = EfficientCapsNet()
    assert _count(with_decoder.trainable_weights) == 161_824 + 1_411_344
    images = np.zeros((2, 28, 28, 1), "float32")
    lengths = with_decoder(images)
    reconstructions = with_decoder.decode(with_decoder.encode(images))
    assert tuple(lengths.shape) == (2, 10)
    assert tuple(reconstructions.shape) == (2, 28, 28, 1)


def test_model_contract(tmp_path):
    images, labels = _data()
    run_model_test(
        EfficientCapsNet,
        SMALL,
        input_data=(images, labels),
        tmp_path=tmp_path,
        train_data=((images, labels), (labels, images)),
        loss=[MarginLoss(), ReconstructionLoss()],
        expected_output_shape=[(4, 3), (4, 16, 16, 1)],
    )


def test_model_contract_without_decoder(tmp_path):
    images, labels = _data(seed=1)
    run_model_test(
        EfficientCapsNet,
        {**SMALL, "use_decoder": False},
        input_data=images,
        tmp_path=tmp_path,
        train_data=(images, labels),
        loss=MarginLoss(),
        expected_output_shape=(4, 3),
    )


def test_float64_stays_float64():
    run_float64_test(EfficientCapsNet, SMALL, _data(), skip=pytest.skip)


def test_encode_returns_capsules_and_coupling_of_one_pass():
    model = EfficientCapsNet(**SMALL)
    images, _ = _data(seed=2)
    capsules, coupling = model.encode(images, return_coupling=True)
    assert tuple(capsules.shape) == (4, 3, 5)
    coupling = np.asarray(keras.ops.convert_to_numpy(coupling))
    np.testing.assert_allclose(coupling.sum(axis=1), 1.0, rtol=1e-5)
    lengths = keras.ops.convert_to_numpy(model(images))
    np.testing.assert_allclose(
        np.linalg.norm(keras.ops.convert_to_numpy(capsules), axis=-1),
        lengths,
        rtol=1e-5,
        atol=1e-6,
    )


def test_default_primary_kernel_covers_the_last_feature_map():
    model = EfficientCapsNet(**SMALL)
    # 16 -> 14 (3x3) -> 6 (3x3, stride 2): one 6x6 depthwise window.
    assert model.primary_capsule.kernel_size == (6, 6)
    assert model.get_config()["primary_kernel_size"] is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"conv_kernel_sizes": (3,)}, "conv_kernel_sizes"),
        ({"conv_strides": (1, 0)}, "conv_strides"),
        ({"image_shape": (4, 4, 1)}, "image_shape"),
        ({"primary_kernel_size": 9}, "image_shape"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EfficientCapsNet(**{**SMALL, **kwargs})


def test_accepts_numpy_integers():
    model = EfficientCapsNet(
        **{**SMALL, "num_classes": np.int64(3), "image_shape": np.array([16, 16, 1])}
    )
    assert model.num_classes == 3 and model.image_shape == (16, 16, 1)
