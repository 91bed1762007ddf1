"""NumPy reference of inverted dot-product attention routing, from the paper.

Tsai, Srivastava, Goh & Salakhutdinov (2020), Procedure 1 and eqs. 1-5,
written with plain loops over children, parents and positions, in float64,
independently of `keras_capsules.ops`:

- vote (eq. 1): `v_ij = W_ij u_i` (vector poses), or for matrix poses the
  child's `n x n` pose times `W_ij` (the authors' order, see the ops module);
- agreement (eq. 2): `a_ij = p_j . v_ij / sqrt(d)` with the parents' poses
  `p_j` of the previous pass, 0 before the first (so the first pass routes
  uniformly);
- routing coefficients (eq. 3): `r_ij = softmax_j(a_ij)`, over the parents;
- pose update (eq. 4): `p_j = sum_i r_ij v_ij`;
- normalisation (eq. 5): `p_j = LayerNorm(p_j)`, with scale and offset.

The convolutional form routes, for every output position, the children of
its receptive field to the parents at that position.
"""

from __future__ import annotations

import numpy as np


def layer_norm(x, scale=None, offset=None, epsilon=1e-5):
    """Layer normalisation of one pose vector `x`."""
    x = np.asarray(x, np.float64)
    if x.size == 1:
        return x.copy()
    normed = (x - x.mean()) / np.sqrt(x.var() + epsilon)
    if scale is not None:
        normed = normed * scale
    if offset is not None:
        normed = normed + offset
    return normed


def vote(pose, weights, matrix_pose):
    """Eq. 1 for one child and one parent."""
    pose = np.asarray(pose, np.float64)
    weights = np.asarray(weights, np.float64)
    if matrix_pose:
        side = weights.shape[0]
        return (pose.reshape(side, side) @ weights).reshape(-1)
    return weights.T @ pose


def route_votes(votes, iterations, scale=None, offset=None, epsilon=1e-5, poses=None):
    """Procedure 1 on the votes `(N, J, D)` of one example.

    Returns the parents' poses `(J, D)` and the last pass's routing
    coefficients `(N, J)`.
    """
    votes = np.asarray(votes, np.float64)
    num_children, num_parents, dim = votes.shape
    poses = np.zeros((num_parents, dim)) if poses is None else np.array(poses, float)
    coefficients = np.zeros((num_children, num_parents))
    for _ in range(iterations):
        for i in range(num_children):
            agreement = np.array(
                [poses[j] @ votes[i, j] / np.sqrt(dim) for j in range(num_parents)]
            )
            weights = np.exp(agreement - agreement.max())
            coefficients[i] = weights / weights.sum()
        new_poses = np.zeros((num_parents, dim))
        for j in range(num_parents):
            for i in range(num_children):
                new_poses[j] += coefficients[i, j] * votes[i, j]
            new_poses[j] = layer_norm(new_poses[j], scale, offset, epsilon)
        poses = new_poses
    return poses, coefficients


def inverted_attention_routing(
    inputs,
    kernel,
    iterations,
    matrix_pose=False,
    scale=None,
    offset=None,
    epsilon=1e-5,
    parent_poses=None,
):
    """Fully connected routing of `inputs (batch, I, Din)`.

    Returns poses `(batch, J, D)` and coefficients `(batch, I, J)`.
    """
    inputs = np.asarray(inputs, np.float64)
    batch, num_in = inputs.shape[:2]
    num_out = kernel.shape[1]
    all_poses, all_coefficients = [], []
    for b in range(batch):
        votes = np.stack(
            [
                np.stack(
                    [
                        vote(inputs[b, i], kernel[i, j], matrix_pose)
                        for j in range(num_out)
                    ]
                )
                for i in range(num_in)
            ]
        )
        start = None if parent_poses is None else parent_poses[b]
        poses, coefficients = route_votes(
            votes, iterations, scale, offset, epsilon, start
        )
        all_poses.append(poses)
        all_coefficients.append(coefficients)
    return np.stack(all_poses), np.stack(all_coefficients)


def conv_inverted_attention_routing(
    inputs,
    kernel,
    strides,
    iterations,
    matrix_pose=False,
    scale=None,
    offset=None,
    epsilon=1e-5,
):
    """Convolutional routing of `inputs (batch, H, W, I, Din)`.

    `kernel` is `(KH, KW, I, J, ...)`. Returns poses `(batch, OH, OW, J, D)`
    and coefficients `(batch, OH, OW, KH, KW, I, J)`.
    """
    inputs = np.asarray(inputs, np.float64)
    batch, height, width, num_in = inputs.shape[:4]
    kernel_h, kernel_w, _, num_out = kernel.shape[:4]
    stride_h, stride_w = strides
    out_h = (height - kernel_h) // stride_h + 1
    out_w = (width - kernel_w) // stride_w + 1
    poses = None
    coefficients = None
    for b in range(batch):
        for y in range(out_h):
            for x in range(out_w):
                children = []
                for u in range(kernel_h):
                    for v in range(kernel_w):
                        for i in range(num_in):
                            child = inputs[b, y * stride_h + u, x * stride_w + v, i]
                            children.append(
                                [
                                    vote(child, kernel[u, v, i, j], matrix_pose)
                                    for j in range(num_out)
                                ]
                            )
                votes = np.array(children)
                p, r = route_votes(votes, iterations, scale, offset, epsilon)
                if poses is None:
                    poses = np.zeros((batch, out_h, out_w, *p.shape))
                    coefficients = np.zeros(
                        (batch, out_h, out_w, kernel_h, kernel_w, num_in, num_out)
                    )
                poses[b, y, x] = p
                coefficients[b, y, x] = r.reshape(kernel_h, kernel_w, num_in, num_out)
    return poses, coefficients
