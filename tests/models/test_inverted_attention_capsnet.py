"""`InvertedAttentionCapsNet`: the paper's architecture and the model contract."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.layers import (
    ConvInvertedAttentionCapsule,
    InvertedAttentionCapsule,
    LayerNormPrimaryCapsule,
)
from keras_capsules.models import CapsuleClassifier, InvertedAttentionCapsNet
from keras_capsules.models.inverted_attention_capsnet import CIFAR10_CONFIG
from tests.classifier_harness import run_classifier_test
from tests.model_harness import run_model_test

# Small enough to train in about a second on a CPU: a 6x6 grid of 2 primary
# capsule types, one 3x3 stride-2 capsule layer (2x2), 3 classes, 2x2 poses.
SMALL = dict(
    image_shape=(12, 12, 1),
    num_classes=3,
    stem_filters=4,
    stage_filters=(8,),
    stage_blocks=(1,),
    stage_strides=(2,),
    primary_capsule_types=2,
    conv_capsule_types=(2,),
    conv_capsule_kernel_sizes=(3,),
    conv_capsule_strides=(2,),
    capsule_dim=4,
)


def _data(seed=0, count=4):
    rng = np.random.default_rng(seed)
    images = rng.random((count, 12, 12, 1)).astype("float32")
    labels = rng.integers(0, 3, count)
    return images, labels


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def test_model_contract(tmp_path):
    images, labels = _data()
    run_model_test(
        InvertedAttentionCapsNet,
        SMALL,
        input_data=images,
        tmp_path=tmp_path,
        train_data=(images, np.eye(3, dtype="float32")[labels]),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        expected_output_shape=(4, 3),
    )


def test_classifier_contract(tmp_path):
    # One routing pass keeps the compiled steps small; the model contract
    # above and the routing tests below run the later passes.
    images, labels = _data(seed=1)
    config = {**SMALL, "routing_iterations": 1}
    run_classifier_test(InvertedAttentionCapsNet, config, images, labels, tmp_path)


def test_concurrent_routing_updates_every_layer_from_the_previous_pass():
    images, _ = _data(seed=2, count=2)
    model = InvertedAttentionCapsNet(**SMALL, routing_iterations=3)
    assert isinstance(model, CapsuleClassifier)
    assert all(
        layer.routing_iterations == 1
        for layer in (*model.conv_capsules, model.class_capsule)
    )
    # The same passes by hand: uniform first, then each layer from the
    # previous pass's poses of the layers below and above.
    primary = model.primary_capsule(model.backbone(images, training=False))
    conv, head = model.conv_capsules[0], model.class_capsule

    def flat(x):
        return keras.ops.reshape(x, (-1, 8, 4))

    grid = conv(primary)
    classes = head(flat(grid))
    for _ in range(2):
        grid, classes = (
            conv(primary, parent_poses=grid),
            head(flat(grid), parent_poses=classes),
        )
    expected = model.class_scores(classes)
    scores, coupling = model(images, return_coupling=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(scores),
        keras.ops.convert_to_numpy(expected),
        rtol=1e-5,
        atol=1e-5,
    )
    assert tuple(coupling.shape) == (2, 3, 8)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(coupling).sum(axis=1), 1.0, rtol=1e-5
    )


def test_sequential_routing_gives_each_layer_every_pass():
    model = InvertedAttentionCapsNet(
        **SMALL, routing_iterations=3, concurrent_routing=False
    )
    assert model.class_capsule.routing_iterations == 3
    assert model.conv_capsules[0].routing_iterations == 3
    images, _ = _data(seed=3, count=2)
    assert tuple(model(images).shape) == (2, 3)


def test_papers_cifar10_network_has_the_authors_weight_count():
    model = InvertedAttentionCapsNet(**CIFAR10_CONFIG)
    assert isinstance(model.primary_capsule, LayerNormPrimaryCapsule)
    shapes = [tuple(layer.kernel.shape) for layer in model.conv_capsules]
    assert shapes == [(3, 3, 32, 32, 4, 4), (3, 3, 32, 32, 4, 4)]
    assert all(isinstance(c, ConvInvertedAttentionCapsule) for c in model.conv_capsules)
    assert isinstance(model.class_capsule, InvertedAttentionCapsule)
    # 32 x 5 x 5 children of the last grid, each with a 4x4 matrix per class.
    assert tuple(model.class_capsule.kernel.shape) == (800, 10, 4, 4)
    # Counted from the authors' code (`count_parameters`, trainable only):
    # ResNet backbone 1,728 + 128 (stem), 3 x 73,984 (64-filter blocks),
    # 230,144 + 3 x 295,424 (128-filter blocks, the first with its 1x1
    # shortcut), primary 65,536 + 32, capsule layers 2 x (147,456 + 32),
    # class capsules 128,000 + 32, read-out 16 + 1 (a bias left out here: it
    # adds the same to every logit).
    backbone = 1_856 + 3 * 73_984 + 230_144 + 3 * 295_424
    capsules = 65_568 + 2 * 147_488 + 128_032 + 16
    assert _count(model.backbone.trainable_weights) == backbone
    assert _count(model.trainable_weights) == backbone + capsules == 1_828_817 - 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"routing_iterations": 0}, "routing_iterations=0"),
        ({"stage_blocks": (1, 1)}, "stage_blocks"),
        ({"conv_capsule_strides": (1, 2)}, "conv_capsule_strides"),
        ({"capsule_dim": 8}, "capsule_dim=8"),
        ({"primary_capsule_types": 0}, "primary_capsule_types=0"),
        ({"image_shape": (4, 4, 1)}, r"image_shape=\(4, 4, 1\)"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InvertedAttentionCapsNet(**{**SMALL, **kwargs})
