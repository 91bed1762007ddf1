"""`ConvInvertedAttentionCapsule`: the layer contract and the paper's routing."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.layers import (
    BaseInvertedAttentionCapsule,
    ConvInvertedAttentionCapsule,
)
from tests import inverted_attention_reference as ref
from tests.layer_harness import run_layer_test


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.mark.parametrize("matrix_pose", [False, True])
def test_layer_contract(tmp_path, matrix_pose):
    rng = np.random.default_rng(0)
    dim = 4
    inputs = rng.normal(size=(2, 5, 4, 2, dim)).astype("float32")
    tail = (2, 2) if matrix_pose else (dim, dim)
    kernel = rng.normal(0, 0.5, size=(3, 2, 2, 3, *tail)).astype("float32")
    gamma = rng.uniform(0.5, 1.5, size=(dim,)).astype("float32")
    beta = rng.normal(0, 0.1, size=(dim,)).astype("float32")
    expected, _ = ref.conv_inverted_attention_routing(
        inputs, kernel, (2, 1), 2, matrix_pose, gamma, beta
    )
    run_layer_test(
        ConvInvertedAttentionCapsule,
        {"capsule_types": 3, "capsule_dim": dim, "kernel_size": (3, 2),
         "strides": (2, 1), "matrix_pose": matrix_pose},
        input_data=inputs,
        expected_output_shape=(2, 2, 3, 3, dim),
        expected_num_trainable_weights=3,
        init_weights=[kernel, gamma, beta],
        expected_output=expected,
        output_rtol=1e-4,
        output_atol=1e-4,
        tmp_path=tmp_path,
    )  # fmt: skip


def test_authors_initial_scale_and_papers_shapes():
    # The paper's first convolutional capsule layer on the 16x16 primary grid.
    layer = ConvInvertedAttentionCapsule(32, 16, 3, strides=2, matrix_pose=True)
    assert isinstance(layer, BaseInvertedAttentionCapsule)
    assert layer.compute_output_shape((None, 16, 16, 32, 16)) == (None, 7, 7, 32, 16)
    layer.build((None, 16, 16, 32, 16))
    assert tuple(layer.kernel.shape) == (3, 3, 32, 32, 4, 4)
    # sqrt(out_n / (sqrt_d * in_n * k * k)), as the authors' CapsuleCONV.
    np.testing.assert_allclose(
        np.std(_numpy(layer.kernel)), (32 / (4 * 32 * 9)) ** 0.5, rtol=0.05
    )


def test_return_coupling_eager_and_symbolic():
    inputs = np.random.default_rng(1).normal(size=(2, 4, 4, 2, 4)).astype("float32")
    layer = ConvInvertedAttentionCapsule(3, 4, 2, strides=2, matrix_pose=True)
    poses, coupling = layer(inputs, return_coupling=True)
    assert tuple(poses.shape) == (2, 2, 2, 3, 4)
    assert tuple(coupling.shape) == (2, 2, 2, 2, 2, 2, 3)
    np.testing.assert_allclose(_numpy(coupling).sum(axis=-1), 1.0, rtol=1e-5)
    symbolic = keras.Input((4, 4, 2, 4))
    outputs = ConvInvertedAttentionCapsule(3, 4, 2)(symbolic, return_coupling=True)
    assert [tuple(o.shape) for o in outputs] == [
        (None, 3, 3, 3, 4),
        (None, 3, 3, 2, 2, 2, 3),
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"capsule_types": 0}, "capsule_types=0"),
        ({"kernel_size": 0}, "kernel_size=0"),
        ({"strides": (1, -1)}, r"strides=\(1, -1\)"),
        ({"routing_iterations": -2}, "routing_iterations=-2"),
        ({"capsule_dim": 8, "matrix_pose": True}, "capsule_dim=8"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    arguments = {"capsule_types": 3, "capsule_dim": 4, "kernel_size": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        ConvInvertedAttentionCapsule(**arguments)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((None, 4, 4, 4), r"5D input.*input_shape=\(None, 4, 4, 4\)"),
        ((None, 2, 5, 2, 4), r"kernel_size=\(3, 3\).*input_shape=\(None, 2, 5, 2, 4\)"),
        ((None, None, 5, 2, 4), r"known.*input_shape=\(None, None, 5, 2, 4\)"),
        ((None, 5, 5, 2, 9), r"capsule_dim=4.*input_shape=\(None, 5, 5, 2, 9\)"),
    ],
)
def test_rejects_bad_input_shapes(shape, message):
    with pytest.raises(ValueError, match=message):
        ConvInvertedAttentionCapsule(3, 4, 3, matrix_pose=True).build(shape)
