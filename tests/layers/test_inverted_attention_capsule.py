"""`InvertedAttentionCapsule`: the layer contract and the paper's routing."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.layers import (
    BaseInvertedAttentionCapsule,
    InvertedAttentionCapsule,
)
from tests import inverted_attention_reference as ref
from tests.layer_harness import run_layer_test


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _weights(rng, kernel_shape, dim):
    kernel = rng.normal(0, 0.5, size=kernel_shape).astype("float32")
    gamma = rng.uniform(0.5, 1.5, size=(dim,)).astype("float32")
    beta = rng.normal(0, 0.1, size=(dim,)).astype("float32")
    return [kernel, gamma, beta]


@pytest.mark.parametrize("matrix_pose", [False, True])
def test_layer_contract(tmp_path, matrix_pose):
    rng = np.random.default_rng(0)
    if matrix_pose:
        inputs = rng.normal(size=(3, 6, 4)).astype("float32")
        weights = _weights(rng, (6, 5, 2, 2), 4)
        dim = 4
    else:
        inputs = rng.normal(size=(3, 6, 3)).astype("float32")
        weights = _weights(rng, (6, 5, 3, 7), 7)
        dim = 7
    expected, _ = ref.inverted_attention_routing(
        inputs, weights[0], 3, matrix_pose, weights[1], weights[2]
    )
    run_layer_test(
        InvertedAttentionCapsule,
        {"num_capsules": 5, "capsule_dim": dim, "routing_iterations": 3,
         "matrix_pose": matrix_pose},
        input_data=inputs,
        expected_output_shape=(3, 5, dim),
        expected_num_trainable_weights=3,
        init_weights=weights,
        expected_output=expected,
        output_rtol=1e-4,
        output_atol=1e-4,
        tmp_path=tmp_path,
    )  # fmt: skip


def test_authors_initial_scale_and_weight_names():
    layer = InvertedAttentionCapsule(10, 16, matrix_pose=True)
    assert isinstance(layer, BaseInvertedAttentionCapsule)
    layer.build((None, 200, 16))
    assert [w.name for w in layer.weights] == ["kernel", "gamma", "beta"]
    assert tuple(layer.kernel.shape) == (200, 10, 4, 4)
    # sqrt(out_n / (sqrt_d * in_n)), as the authors' CapsuleFC.
    np.testing.assert_allclose(
        np.std(_numpy(layer.kernel)), (10 / (4 * 200)) ** 0.5, rtol=0.05
    )
    vector = InvertedAttentionCapsule(10, 8)
    vector.build((None, 50, 6))
    assert tuple(vector.kernel.shape) == (50, 10, 6, 8)
    np.testing.assert_allclose(
        np.std(_numpy(vector.kernel)), (10 / (6 * 50)) ** 0.5, rtol=0.05
    )


def test_return_coupling_and_parent_poses_eager_and_symbolic():
    inputs = np.random.default_rng(1).normal(size=(2, 6, 4)).astype("float32")
    layer = InvertedAttentionCapsule(3, 4, matrix_pose=True, routing_iterations=2)
    poses, coupling = layer(inputs, return_coupling=True)
    assert tuple(poses.shape) == (2, 3, 4) and tuple(coupling.shape) == (2, 3, 6)
    np.testing.assert_allclose(_numpy(coupling).sum(axis=1), 1.0, rtol=1e-5)
    # Concurrent routing, one pass per call, gives the same as two passes.
    single = InvertedAttentionCapsule.from_config(
        {**layer.get_config(), "routing_iterations": 1}
    )
    single.build((None, 6, 4))
    single.set_weights(layer.get_weights())
    chained = single(inputs, parent_poses=single(inputs))
    np.testing.assert_allclose(_numpy(chained), _numpy(poses), rtol=1e-5, atol=1e-5)
    symbolic = keras.Input((6, 4))
    outputs = InvertedAttentionCapsule(3, 4)(symbolic, return_coupling=True)
    assert [tuple(o.shape) for o in outputs] == [(None, 3, 4), (None, 3, 6)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_capsules": 0, "capsule_dim": 4}, "num_capsules=0"),
        ({"num_capsules": 3, "capsule_dim": -1}, "capsule_dim=-1"),
        ({"num_capsules": 3, "capsule_dim": 4, "routing_iterations": 0},
         "routing_iterations=0"),
        ({"num_capsules": 3, "capsule_dim": 15, "matrix_pose": True},
         "capsule_dim=15"),
        ({"num_capsules": 3, "capsule_dim": 4, "epsilon": 0.0}, "epsilon=0.0"),
    ],
)  # fmt: skip
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InvertedAttentionCapsule(**kwargs)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((None, 6), r"3D input.*input_shape=\(None, 6\)"),
        ((None, None, 4), r"known.*input_shape=\(None, None, 4\)"),
        ((None, 6, 9), r"capsule_dim=16.*input_shape=\(None, 6, 9\)"),
    ],
)
def test_rejects_bad_input_shapes(shape, message):
    with pytest.raises(ValueError, match=message):
        InvertedAttentionCapsule(3, 16, matrix_pose=True).build(shape)
