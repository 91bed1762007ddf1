"""`inverted_attention_routing` and its convolutional form against the paper."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_capsules import ops as capsule_ops
from tests import inverted_attention_reference as ref
from tests.gradients import central_differences, value_and_grads


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")))


def _fc_case(seed=0, matrix_pose=False, batch=2, num_in=5, num_out=3, dim=4, out=6):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(batch, num_in, dim)).astype("float32")
    if matrix_pose:
        side = int(round(dim**0.5))
        kernel = rng.normal(0, 0.7, size=(num_in, num_out, side, side))
        out = dim
    else:
        kernel = rng.normal(0, 0.7, size=(num_in, num_out, dim, out))
    scale = rng.uniform(0.5, 1.5, size=(out,)).astype("float32")
    offset = rng.normal(0, 0.1, size=(out,)).astype("float32")
    return inputs, kernel.astype("float32"), scale, offset


def _conv_case(seed=0, matrix_pose=False, size=4, kernel_size=2, num_in=2, num_out=3):
    rng = np.random.default_rng(seed)
    dim, out = (4, 4) if matrix_pose else (3, 5)
    inputs = rng.normal(size=(2, size, size, num_in, dim)).astype("float32")
    tail = (2, 2) if matrix_pose else (dim, out)
    kernel = rng.normal(0, 0.7, size=(kernel_size, kernel_size, num_in, num_out, *tail))
    scale = rng.uniform(0.5, 1.5, size=(out,)).astype("float32")
    offset = rng.normal(0, 0.1, size=(out,)).astype("float32")
    return inputs, kernel.astype("float32"), scale, offset


@pytest.mark.parametrize("iterations", [1, 2, 3])
@pytest.mark.parametrize("matrix_pose", [False, True])
def test_fully_connected_routing_matches_the_paper(iterations, matrix_pose):
    inputs, kernel, scale, offset = _fc_case(matrix_pose=matrix_pose)
    poses, coupling = capsule_ops.inverted_attention_routing(
        inputs,
        kernel,
        routing_iterations=iterations,
        matrix_pose=matrix_pose,
        scale=scale,
        offset=offset,
        return_coupling=True,
    )
    poses_ref, coupling_ref = ref.inverted_attention_routing(
        inputs, kernel, iterations, matrix_pose, scale, offset
    )
    np.testing.assert_allclose(_numpy(poses), poses_ref, rtol=1e-4, atol=1e-4)
    # The package gives (batch, parents, children), the reference the paper's
    # r_ij as (batch, children, parents).
    np.testing.assert_allclose(
        _numpy(coupling), coupling_ref.transpose(0, 2, 1), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("iterations", [1, 2, 3])
@pytest.mark.parametrize(
    "matrix_pose, strides", [(False, (1, 1)), (True, (2, 2)), (True, (1, 2))]
)
def test_convolutional_routing_matches_the_paper(iterations, matrix_pose, strides):
    inputs, kernel, scale, offset = _conv_case(matrix_pose=matrix_pose)
    poses, coupling = capsule_ops.conv_inverted_attention_routing(
        inputs,
        kernel,
        strides=strides,
        routing_iterations=iterations,
        matrix_pose=matrix_pose,
        scale=scale,
        offset=offset,
        return_coupling=True,
    )
    poses_ref, coupling_ref = ref.conv_inverted_attention_routing(
        inputs, kernel, strides, iterations, matrix_pose, scale, offset
    )
    assert tuple(poses.shape) == poses_ref.shape
    np.testing.assert_allclose(_numpy(poses), poses_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_numpy(coupling), coupling_ref, rtol=1e-4, atol=1e-5)


def test_first_pass_is_uniform_and_coupling_sums_to_one_over_parents():
    inputs, kernel, _, _ = _fc_case(seed=1)
    _, uniform = capsule_ops.inverted_attention_routing(
        inputs, kernel, routing_iterations=1, return_coupling=True
    )
    np.testing.assert_allclose(_numpy(uniform), 1 / 3, rtol=1e-6)
    _, coupling = capsule_ops.inverted_attention_routing(
        inputs, kernel, routing_iterations=3, return_coupling=True
    )
    coupling = _numpy(coupling)
    np.testing.assert_allclose(coupling.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(coupling, 1 / 3), "later passes should not be uniform"
    conv_inputs, conv_kernel, _, _ = _conv_case(seed=1, matrix_pose=True)
    _, conv_coupling = capsule_ops.conv_inverted_attention_routing(
        conv_inputs, conv_kernel, routing_iterations=2, matrix_pose=True,
        return_coupling=True,
    )  # fmt: skip
    np.testing.assert_allclose(_numpy(conv_coupling).sum(axis=-1), 1.0, rtol=1e-5)


def test_poses_are_layer_normalised_without_a_scale():
    inputs, kernel, _, _ = _fc_case(seed=2)
    poses = _numpy(capsule_ops.inverted_attention_routing(inputs, kernel))
    np.testing.assert_allclose(poses.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(poses.std(axis=-1), 1.0, rtol=1e-3)


@pytest.mark.parametrize("matrix_pose", [False, True])
def test_permuting_the_children_permutes_only_the_coupling(matrix_pose):
    inputs, kernel, scale, offset = _fc_case(seed=3, matrix_pose=matrix_pose)
    order = np.random.default_rng(4).permutation(inputs.shape[1])
    kwargs = dict(routing_iterations=3, matrix_pose=matrix_pose, scale=scale,
                  offset=offset, return_coupling=True)  # fmt: skip
    poses, coupling = capsule_ops.inverted_attention_routing(inputs, kernel, **kwargs)
    permuted_poses, permuted_coupling = capsule_ops.inverted_attention_routing(
        inputs[:, order], kernel[order], **kwargs
    )
    np.testing.assert_allclose(
        _numpy(permuted_poses), _numpy(poses), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        _numpy(permuted_coupling), _numpy(coupling)[:, :, order], rtol=1e-5, atol=1e-6
    )


def test_parent_poses_replace_the_uniform_first_pass():
    inputs, kernel, scale, offset = _fc_case(seed=5)
    start = np.random.default_rng(6).normal(size=(2, 3, 6)).astype("float32")
    poses = capsule_ops.inverted_attention_routing(
        inputs, kernel, routing_iterations=1, scale=scale, offset=offset,
        parent_poses=start,
    )  # fmt: skip
    expected, _ = ref.inverted_attention_routing(
        inputs, kernel, 1, False, scale, offset, parent_poses=start
    )
    np.testing.assert_allclose(_numpy(poses), expected, rtol=1e-4, atol=1e-4)
    # Two passes from zero poses are one uniform pass, then one from its poses.
    first = capsule_ops.inverted_attention_routing(
        inputs, kernel, routing_iterations=1, scale=scale, offset=offset
    )
    chained = capsule_ops.inverted_attention_routing(
        inputs, kernel, routing_iterations=1, scale=scale, offset=offset,
        parent_poses=first,
    )  # fmt: skip
    direct = capsule_ops.inverted_attention_routing(
        inputs, kernel, routing_iterations=2, scale=scale, offset=offset
    )
    np.testing.assert_allclose(_numpy(chained), _numpy(direct), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_gradients_flow_through_every_pass(iterations):
    inputs, kernel, scale, offset = _fc_case(seed=7, batch=1, num_in=3, num_out=2,
                                             dim=2, out=3)  # fmt: skip
    probe = np.random.default_rng(8).normal(size=(1, 2, 3))

    def loss(u, w):
        poses = capsule_ops.inverted_attention_routing(
            u, w, routing_iterations=iterations, scale=scale, offset=offset
        )
        return keras.ops.sum(poses * keras.ops.cast(probe, poses.dtype))

    def loss_ref(u, w):
        poses, _ = ref.inverted_attention_routing(
            u, w, iterations, False, scale, offset
        )
        return float((poses * probe).sum())

    _, grads = value_and_grads(loss, [inputs, kernel])
    expected = central_differences(loss_ref, [inputs, kernel])
    for name, got, want in zip(("inputs", "kernel"), grads, expected):
        assert np.all(np.isfinite(got)), name
        np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-3, err_msg=name)


@pytest.mark.parametrize("iterations", [1, 2, 3])
@pytest.mark.parametrize("conv", [False, True])
def test_bfloat16_keeps_its_dtype_and_finite_gradients(iterations, conv):
    if conv:
        inputs, kernel, scale, offset = _conv_case(seed=9, matrix_pose=True)
        route = capsule_ops.conv_inverted_attention_routing
    else:
        inputs, kernel, scale, offset = _fc_case(seed=9, matrix_pose=True, dim=16)
        route = capsule_ops.inverted_attention_routing
    inputs = inputs * 50.0  # large votes: the softmax must not overflow

    def loss(u, w):
        poses = route(
            keras.ops.cast(u, "bfloat16"),
            keras.ops.cast(w, "bfloat16"),
            routing_iterations=iterations,
            matrix_pose=True,
            scale=scale,
            offset=offset,
        )
        assert keras.backend.standardize_dtype(poses.dtype) == "bfloat16"
        return keras.ops.sum(keras.ops.cast(poses, "float32") ** 2)

    value, grads = value_and_grads(loss, [inputs, kernel])
    assert np.isfinite(value)
    for name, grad in zip(("inputs", "kernel"), grads):
        assert np.all(np.isfinite(grad)), name
    assert np.any(grads[1] != 0), "no gradient reached the kernel"


def test_rejects_matrix_poses_that_are_not_square():
    inputs = np.zeros((2, 5, 15), "float32")
    kernel = np.zeros((5, 3, 4, 4), "float32")
    with pytest.raises(ValueError, match=r"matrix_pose=True.*input_capsule_dim=15"):
        capsule_ops.inverted_attention_routing(inputs, kernel, matrix_pose=True)
    with pytest.raises(ValueError, match=r"inputs.shape=\(2, 3, 3, 2, 15\)"):
        capsule_ops.conv_inverted_attention_routing(
            np.zeros((2, 3, 3, 2, 15), "float32"),
            np.zeros((2, 2, 2, 3, 4, 4), "float32"),
            matrix_pose=True,
        )


def test_rejects_a_kernel_larger_than_the_input():
    with pytest.raises(
        ValueError, match=r"kernel_size=\(3, 3\).*inputs.shape=\(1, 2, 4, 2, 3\)"
    ):
        capsule_ops.conv_inverted_attention_routing(
            np.zeros((1, 2, 4, 2, 3), "float32"),
            np.zeros((3, 3, 2, 4, 3, 5), "float32"),
        )


@pytest.mark.parametrize("iterations", [0, -1, 1.5, True])
def test_rejects_non_positive_routing_iterations(iterations):
    inputs, kernel, _, _ = _fc_case()
    with pytest.raises(ValueError, match=rf"routing_iterations={iterations!r}"):
        capsule_ops.inverted_attention_routing(
            inputs, kernel, routing_iterations=iterations
        )


def test_rejects_empty_capsule_counts_and_mismatched_kernels():
    inputs, kernel, _, _ = _fc_case()
    with pytest.raises(ValueError, match=r"kernel.shape=\(5, 0, 4, 6\)"):
        capsule_ops.inverted_attention_routing(inputs, kernel[:, :0])
    with pytest.raises(ValueError, match=r"inputs.shape=\(2, 5, 3\).*kernel.shape"):
        capsule_ops.inverted_attention_routing(inputs[..., :3], kernel)
    with pytest.raises(ValueError, match=r"strides"):
        capsule_ops.conv_inverted_attention_routing(
            np.zeros((1, 4, 4, 2, 3), "float32"),
            np.zeros((2, 2, 2, 4, 3, 5), "float32"),
            strides=0,
        )
    with pytest.raises(ValueError, match=r"parent_poses.shape=\(2, 3, 5\)"):
        capsule_ops.inverted_attention_routing(
            inputs, kernel, parent_poses=np.zeros((2, 3, 5), "float32")
        )
