"""PrimaryMatrixCapsule, ConvMatrixCapsule and ClassMatrixCapsule.

`tests/layer_harness.py` checks single-output layers; these layers return
the pair `(poses, activations)`, so `_run_pair_layer_test` checks the same
contract for them.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules.layers import (
    ClassMatrixCapsule,
    ConvMatrixCapsule,
    PrimaryMatrixCapsule,
)
from tests import numpy_reference


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")))


def _capsules(batch=2, size=(5, 5), types=3, pose=16, seed=0):
    rng = np.random.default_rng(seed)
    poses = rng.normal(size=(batch, *size, types, pose)).astype("float32")
    activations = rng.uniform(0.05, 1, size=(batch, *size, types)).astype("float32")
    return [poses, activations]


def _run_pair_layer_test(layer_cls, kwargs, data, shapes, num_weights, tmp_path):
    data = data if isinstance(data, list) else [data]
    layer = layer_cls(**kwargs)
    config = layer.get_config()
    assert all(key in config for key in kwargs), config
    assert layer_cls.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(revived) is layer_cls and revived.get_config() == config

    input_shapes = [tuple(x.shape) for x in data]
    single = input_shapes if len(data) > 1 else input_shapes[0]
    layer.build(single)
    assert len(layer.trainable_weights) == num_weights
    assert not layer.non_trainable_weights
    assert [tuple(s) for s in layer.compute_output_shape(single)] == shapes

    symbolic = [keras.Input(s[1:]) for s in input_shapes]
    outputs = layer_cls(**kwargs)(symbolic if len(data) > 1 else symbolic[0])
    assert [tuple(o.shape) for o in outputs] == [(None, *s[1:]) for s in shapes]
    model = keras.Model(symbolic if len(data) > 1 else symbolic[0], list(outputs))
    inputs = data if len(data) > 1 else data[0]
    eager = [_numpy(o) for o in model(inputs)]
    assert [o.shape for o in eager] == shapes
    assert all(np.all(np.isfinite(o)) for o in eager)
    first = model([x[:1] for x in data] if len(data) > 1 else data[0][:1])
    for a, b in zip(first, eager):
        np.testing.assert_allclose(_numpy(a), b[:1], rtol=1e-5, atol=1e-6)

    # One fit step changes every weight and keeps it finite.
    rng = np.random.default_rng(1)
    targets = [rng.uniform(size=o.shape).astype("float32") for o in eager]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=["mse", "mse"])
    before = [_numpy(w) for w in model.trainable_weights]
    history = model.fit(inputs, targets, batch_size=len(data[0]), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for weight, old in zip(model.trainable_weights, before):
        new = _numpy(weight)
        assert np.all(np.isfinite(new)) and not np.array_equal(old, new), weight.path

    # .keras round trip with no custom_objects.
    expected = [_numpy(o) for o in model(inputs)]
    model.save(tmp_path / "layer.keras")
    loaded = keras.saving.load_model(tmp_path / "layer.keras")
    for a, b in zip(loaded(inputs), expected):
        np.testing.assert_allclose(_numpy(a), b, rtol=1e-5, atol=1e-6)

    # Mixed precision: float32 weights, compute-dtype outputs close to float32.
    for policy, tolerance in (("mixed_float16", 2e-2), ("mixed_bfloat16", 1e-1)):
        low = layer_cls(**kwargs, dtype=policy)
        low.build(single)
        assert all(w.dtype == "float32" for w in low.weights), policy
        low.set_weights(model.layers[-1].get_weights())
        compute = policy.split("_")[1]
        cast = [keras.ops.cast(x, compute) for x in data]
        result = low(cast if len(data) > 1 else cast[0])
        for a, b in zip(result, expected):
            assert keras.backend.standardize_dtype(a.dtype) == compute, policy
            assert np.all(np.isfinite(_numpy(a))), policy
            np.testing.assert_allclose(_numpy(a), b, rtol=tolerance, atol=tolerance)


def test_primary_matrix_capsule_contract(tmp_path):
    data = np.random.default_rng(0).uniform(size=(2, 6, 6, 4)).astype("float32")
    _run_pair_layer_test(
        PrimaryMatrixCapsule,
        {"capsule_types": 3, "pose_size": 4, "kernel_size": 2, "strides": 2},
        data,
        [(2, 3, 3, 3, 4), (2, 3, 3, 3)],
        4,
        tmp_path,
    )


def test_conv_matrix_capsule_contract(tmp_path):
    _run_pair_layer_test(
        ConvMatrixCapsule,
        {"capsule_types": 2, "kernel_size": 3, "strides": 2, "routing_iterations": 2},
        _capsules(size=(5, 5), types=2, pose=4),
        [(2, 2, 2, 2, 4), (2, 2, 2, 2)],
        3,
        tmp_path,
    )


def test_class_matrix_capsule_contract(tmp_path):
    _run_pair_layer_test(
        ClassMatrixCapsule,
        {"num_classes": 3, "use_coordinate_addition": True},
        _capsules(size=(3, 3), types=2, pose=4),
        [(2, 3, 4), (2, 3)],
        3,
        tmp_path,
    )


def test_primary_matrix_capsule_matches_numpy():
    layer = PrimaryMatrixCapsule(2, pose_size=4, bias_initializer="glorot_uniform")
    images = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype("float32")
    poses, activations = layer(images)
    kernel = np.concatenate(
        [_numpy(layer.pose_kernel), _numpy(layer.activation_kernel)], -1
    )
    bias = np.concatenate([_numpy(layer.pose_bias), _numpy(layer.activation_bias)])
    features = numpy_reference.conv2d_valid(images, kernel, bias, 1)
    np.testing.assert_allclose(
        _numpy(poses), features[..., :8].reshape(2, 3, 4, 2, 4), rtol=1e-5, atol=1e-6
    )
    expected = 1 / (1 + np.exp(-features[..., 8:]))
    np.testing.assert_allclose(_numpy(activations), expected, rtol=1e-5, atol=1e-6)


def test_conv_matrix_capsule_matches_the_reference():
    layer = ConvMatrixCapsule(
        3, kernel_size=2, strides=1, beta_initializer="random_normal"
    )
    poses, activations = _capsules(size=(3, 4), types=2, pose=4, seed=3)
    out_poses, out_activations, assignments = layer(
        [poses, activations], return_assignments=True
    )
    votes = numpy_reference.conv_matrix_votes(poses, _numpy(layer.kernel), (1, 1))
    rows = np.arange(2)[:, None, None, None] + np.arange(2)[None, None, :, None]
    cols = np.arange(3)[None, :, None, None] + np.arange(2)[None, None, None, :]
    expected = numpy_reference.conv_em_routing(
        votes,
        activations[:, rows, cols],
        _numpy(layer.beta_u),
        _numpy(layer.beta_a),
        strides=(1, 1),
    )
    for actual, wanted in zip((out_poses, out_activations, assignments), expected):
        np.testing.assert_allclose(_numpy(actual), wanted, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("coordinates", [True, False])
def test_class_matrix_capsule_matches_the_reference(coordinates):
    layer = ClassMatrixCapsule(
        4, use_coordinate_addition=coordinates, beta_initializer="random_normal"
    )
    poses, activations = _capsules(size=(2, 3), types=2, pose=9, seed=4)
    outputs = layer([poses, activations], return_assignments=True)
    votes = numpy_reference.class_matrix_votes(poses, _numpy(layer.kernel), coordinates)
    expected = numpy_reference.em_routing(
        votes, activations.reshape(2, -1), _numpy(layer.beta_u), _numpy(layer.beta_a)
    )
    expected = (*expected[:2], expected[2].reshape(2, 2, 3, 2, 4))
    for actual, wanted in zip(outputs, expected):
        np.testing.assert_allclose(_numpy(actual), wanted, rtol=2e-5, atol=1e-5)


def test_class_capsules_ignore_the_order_of_their_input_capsules():
    layer = ClassMatrixCapsule(3, use_coordinate_addition=False)
    poses, activations = _capsules(size=(3, 3), types=4, pose=16, seed=5)
    reference = [_numpy(o) for o in layer([poses, activations])]
    rng = np.random.default_rng(0)
    # Any order of the positions (no coordinates to tell them apart)...
    flat_p, flat_a = poses.reshape(2, 9, 4, 16), activations.reshape(2, 9, 4)
    order = rng.permutation(9)
    shuffled = [
        flat_p[:, order].reshape(poses.shape),
        flat_a[:, order].reshape(activations.shape),
    ]
    for a, b in zip(layer(shuffled), reference):
        np.testing.assert_allclose(_numpy(a), b, rtol=1e-5, atol=1e-5)
    # ...and of the types, with their transformation matrices.
    types = rng.permutation(4)
    kernel = _numpy(layer.kernel)
    layer.kernel.assign(kernel[types])
    for a, b in zip(layer([poses[..., types, :], activations[..., types]]), reference):
        np.testing.assert_allclose(_numpy(a), b, rtol=1e-5, atol=1e-5)


def test_assignments_come_out_of_the_same_call_eagerly_and_symbolically():
    layer = ConvMatrixCapsule(2, kernel_size=3, strides=2)
    data = _capsules(size=(5, 5), types=3, pose=4)
    outputs = layer(data, return_assignments=True)
    assert [tuple(o.shape) for o in outputs] == [
        (2, 2, 2, 2, 4),
        (2, 2, 2, 2),
        (2, 2, 2, 3, 3, 3, 2),
    ]
    symbolic = layer(
        [keras.Input((5, 5, 3, 4)), keras.Input((5, 5, 3))], return_assignments=True
    )
    assert tuple(symbolic[2].shape) == (None, 2, 2, 3, 3, 3, 2)
    class_layer = ClassMatrixCapsule(4)
    assignments = class_layer(data, return_assignments=True)[2]
    assert tuple(assignments.shape) == (2, 5, 5, 3, 4)
    np.testing.assert_allclose(_numpy(keras.ops.sum(assignments, -1)), 1.0, rtol=1e-5)


def test_bad_arguments_and_inputs_are_named_value_errors():
    with pytest.raises(ValueError, match="`pose_size`.*pose_size=15"):
        PrimaryMatrixCapsule(4, pose_size=15)
    with pytest.raises(ValueError, match="capsule_types=0"):
        PrimaryMatrixCapsule(0)
    with pytest.raises(ValueError, match="capsule_types=-2"):
        ConvMatrixCapsule(-2)
    with pytest.raises(ValueError, match="num_classes"):
        ClassMatrixCapsule(4, capsule_types=3)
    with pytest.raises(ValueError, match="routing_iterations=0"):
        ClassMatrixCapsule(4, routing_iterations=0)
    with pytest.raises(ValueError, match="kernel_size"):
        ConvMatrixCapsule(4, kernel_size=(3, 0))
    with pytest.raises(ValueError, match=r"perfect square.*\(2, 5, 5, 3, 15\)"):
        ConvMatrixCapsule(4)(_capsules(types=3, pose=15))
    with pytest.raises(ValueError, match=r"kernel_size=\(3, 3\).*\(2, 2, 5, 3, 16\)"):
        ConvMatrixCapsule(4, kernel_size=3)(_capsules(size=(2, 5)))
    with pytest.raises(ValueError, match="pair \\[poses, activations\\]"):
        ClassMatrixCapsule(4)(_capsules()[0])
    with pytest.raises(ValueError, match="pair \\[poses, activations\\]"):
        ClassMatrixCapsule(4)([_capsules()[0], _capsules(types=2)[1]])
    with pytest.raises(ValueError, match="at least 2x2"):
        ClassMatrixCapsule(4)(_capsules(pose=1))
    with pytest.raises(ValueError, match="kernel_size=\\(5, 5\\)"):
        PrimaryMatrixCapsule(4, kernel_size=5)(np.zeros((1, 4, 4, 2), "float32"))
