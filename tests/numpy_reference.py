"""An independent NumPy reference of the paper's equations, in float64.

Written from Sabour, Frosst & Hinton (2017) with plain loops and a layout of
its own, `(batch, input capsule i, output capsule j, dim)`, so it shares no
code and no formulation with `keras_capsules.ops` (which never forms the
prediction vectors and keeps couplings as `(batch, j, i)`). Every test that
checks the package's math against the paper, values or gradients (by finite
differences of these functions), uses this one module.
"""

from __future__ import annotations

import numpy as np


def squash(s: np.ndarray, axis: int = -1) -> np.ndarray:
    """Eq. 1: v = |s|^2 / (1 + |s|^2) * s / |s|, and 0 for s = 0."""
    s = np.asarray(s, dtype=np.float64)
    norm = np.linalg.norm(s, axis=axis, keepdims=True)
    safe_norm = np.where(norm > 0, norm, 1.0)
    return (norm**2 / (1.0 + norm**2)) * s / safe_norm


def length(v: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(v, dtype=np.float64), axis=-1)


def predictions(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Eq. 2, u_hat[j|i] = W[i, j]^T u_i, as `(batch, num_in, num_out, dim_out)`."""
    u = np.asarray(u, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    batch, num_in, _ = u.shape
    num_out, dim_out = weights.shape[1], weights.shape[3]
    u_hat = np.zeros((batch, num_in, num_out, dim_out))
    for n in range(batch):
        for i in range(num_in):
            for j in range(num_out):
                u_hat[n, i, j] = weights[i, j].T @ u[n, i]
    return u_hat


def dynamic_routing(
    u: np.ndarray,
    weights: np.ndarray,
    iterations: int,
    agreement_predictions: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Procedure 1, example by example.

    Args:
        u: input capsules `(batch, num_in, dim_in)`.
        weights: `(num_in, num_out, dim_in, dim_out)`.
        iterations: the number of routing iterations `r`.
        agreement_predictions: if given, `(batch, num_in, num_out, dim_out)`
            prediction vectors used in the logit update (step 4) in place
            of those of `u` and `weights`. Passing `predictions(u, weights)`
            computed once, held fixed while `u` and `weights` vary, models
            `stop_gradient_on_agreement`: the agreement sees constant
            predictions but the current outputs `v`.

    Returns:
        `v` of shape `(batch, num_out, dim_out)` and the coupling
        coefficients of the last iteration, `(batch, num_in, num_out)`.
    """
    u_hat_all = predictions(u, weights)
    agree_all = (
        u_hat_all
        if agreement_predictions is None
        else np.asarray(agreement_predictions, dtype=np.float64)
    )
    batch, num_in, num_out, dim_out = u_hat_all.shape
    v_all = np.zeros((batch, num_out, dim_out))
    c_all = np.zeros((batch, num_in, num_out))
    for n in range(batch):
        u_hat, agree = u_hat_all[n], agree_all[n]
        logits = np.zeros((num_in, num_out))
        for r in range(iterations):
            c = softmax(logits, axis=1)
            s = np.zeros((num_out, dim_out))
            for i in range(num_in):
                for j in range(num_out):
                    s[j] += c[i, j] * u_hat[i, j]
            v = squash(s)
            if r < iterations - 1:
                for i in range(num_in):
                    for j in range(num_out):
                        logits[i, j] += agree[i, j] @ v[j]
        v_all[n] = v
        c_all[n] = c
    return v_all, c_all


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Softmax shifted by the maximum, so large logits do not overflow."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def margin_loss(
    targets: np.ndarray,
    lengths: np.ndarray,
    m_plus: float = 0.9,
    m_minus: float = 0.1,
    down_weight: float = 0.5,
) -> np.ndarray:
    """Eq. 4, summed over classes: one value per example."""
    t = np.asarray(targets, dtype=np.float64)
    v = np.asarray(lengths, dtype=np.float64)
    present = t * np.maximum(0.0, m_plus - v) ** 2
    absent = down_weight * (1.0 - t) * np.maximum(0.0, v - m_minus) ** 2
    return (present + absent).sum(axis=-1)


def conv2d_valid(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray,
    stride: int | tuple[int, int],
):
    """A direct 'valid' convolution, channels last, for PrimaryCapsule."""
    x = np.asarray(x, dtype=np.float64)
    kh, kw, _, filters = kernel.shape
    batch, height, width, _ = x.shape
    stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
    out_h = (height - kh) // stride_h + 1
    out_w = (width - kw) // stride_w + 1
    out = np.zeros((batch, out_h, out_w, filters))
    for y in range(out_h):
        for x_pos in range(out_w):
            top, left = y * stride_h, x_pos * stride_w
            patch = x[:, top : top + kh, left : left + kw]
            out[:, y, x_pos] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out + bias


# --- Efficient-CapsNet (Mazzia, Salvetti & Chiaberge 2021) -------------------


def efficient_squash(s: np.ndarray, axis: int = -1) -> np.ndarray:
    """Eq. 5: v = (1 - 1 / exp(|s|)) * s / |s|, and 0 for s = 0."""
    s = np.asarray(s, dtype=np.float64)
    norm = np.linalg.norm(s, axis=axis, keepdims=True)
    safe_norm = np.where(norm > 0, norm, 1.0)
    return (1.0 - 1.0 / np.exp(norm)) * s / safe_norm


def self_attention_routing(
    u: np.ndarray, weights: np.ndarray, log_priors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Eqs. 2-4 of Efficient-CapsNet, example by example, with the full
    pairwise agreement matrix A[j] = U_j U_j^T / sqrt(d) summed over its
    columns, as the paper writes it.

    Args:
        u: input capsules `(batch, num_in, dim_in)`.
        weights: `(num_in, num_out, dim_in, dim_out)`.
        log_priors: `b`, `(num_out, num_in)`.

    Returns:
        `v` of shape `(batch, num_out, dim_out)` and the coupling
        coefficients `(batch, num_in, num_out)`.
    """
    u = np.asarray(u, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    b = np.asarray(log_priors, dtype=np.float64)
    batch, num_in, _ = u.shape
    num_out, dim_out = weights.shape[1], weights.shape[3]
    v_all = np.zeros((batch, num_out, dim_out))
    c_all = np.zeros((batch, num_in, num_out))
    for n in range(batch):
        u_hat = np.zeros((num_out, num_in, dim_out))
        for i in range(num_in):
            for j in range(num_out):
                u_hat[j, i] = weights[i, j].T @ u[n, i]
        agreement = np.zeros((num_in, num_out))
        for j in range(num_out):
            pairwise = u_hat[j] @ u_hat[j].T / np.sqrt(dim_out)  # (num_in, num_in)
            agreement[:, j] = pairwise.sum(axis=1)
        exp = np.exp(agreement - agreement.max(axis=1, keepdims=True))
        c = exp / exp.sum(axis=1, keepdims=True)
        s = np.zeros((num_out, dim_out))
        for j in range(num_out):
            for i in range(num_in):
                s[j] += u_hat[j, i] * (c[i, j] + b[j, i])
        v_all[n] = efficient_squash(s)
        c_all[n] = c
    return v_all, c_all


# --- Matrix capsules with EM routing (Hinton, Sabour & Frosst, 2018) ---------
#
# Written from Procedure 1 of the paper as a bipartite graph of explicit
# (child, parent, vote) connections, walked with loops in float64. The
# choices the paper leaves open follow the module docstring of
# `keras_capsules.ops.routing.em`: lambda_t = final * (1 - 0.95^t), the
# amount of data scaled by parents/children per routing group, epsilon
# added to every variance and amount, R uniform over each child's parents.
#
# Checked term by term against IBM/matrix-capsules-with-em-routing
# (`em_routing.py`, whose form this is), so that a misreading shared with
# the ops would show: R init 1 / (positions * J) (`init_rr`); the M-step
# weights R * a_in, not renormalised over the parents as yl-1993 and
# www0wwwjs1 do (which cancels a_in); mean and variance divided by
# sum(R a) + epsilon, the variance + epsilon (IBM 1e-9); cost
# sum_h (beta_u + log(var) / 2) * sum(R a) * J / N (IBM: * 100 / (N / J),
# the 100 folded into lambda_final and beta_a); a = sigmoid(lambda_t *
# (beta_a - cost)) with lambda_t = final * (1 - 0.95^t), t = 1..r (IBM: it
# + 1, it = 0..r-1); the E-step log a_j (IBM log(a + 1e-9)) minus
# sum_h [(v - mu)^2 / (2 var) + log(2 pi var) / 2], normalised over every
# parent of the child at every position (`softmax_across_parents`); the last
# iteration skips the E-step.


def _em_graph(
    edges,
    num_children,
    num_parents,
    activations,
    beta_u,
    beta_a,
    iterations,
    final_inverse_temperature,
    epsilon,
    data_scale,
    parent_type,
):
    """EM routing on one example.

    `edges` is a list of `(child, parent, vote)`; `activations[child]`;
    `parent_type[parent]` indexes `beta_u` / `beta_a`. Returns the means
    `(num_parents, P)`, activations `(num_parents,)` and the `R` of the
    last M-step, one per edge.
    """
    pose_size = len(edges[0][2])
    parents_of = [[] for _ in range(num_children)]
    for e, (child, _, _) in enumerate(edges):
        parents_of[child].append(e)
    r = np.zeros(len(edges))
    for group in parents_of:
        for e in group:
            r[e] = 1.0 / len(group)
    for t in range(1, iterations + 1):
        lam = final_inverse_temperature * (1.0 - 0.95**t)
        mean = np.zeros((num_parents, pose_size))
        var = np.zeros((num_parents, pose_size))
        data = np.zeros(num_parents)
        for e, (child, parent, _) in enumerate(edges):
            data[parent] += r[e] * activations[child]
        for e, (child, parent, vote) in enumerate(edges):
            mean[parent] += r[e] * activations[child] * vote / (data[parent] + epsilon)
        for e, (child, parent, vote) in enumerate(edges):
            var[parent] += (
                r[e]
                * activations[child]
                * (vote - mean[parent]) ** 2
                / (data[parent] + epsilon)
            )
        var += epsilon
        a_out = np.zeros(num_parents)
        logit = np.zeros(num_parents)
        for p in range(num_parents):
            k = parent_type[p]
            cost = np.sum(beta_u[k] + np.log(np.sqrt(var[p]))) * data[p] * data_scale
            logit[p] = lam * (beta_a[k] - cost)
            a_out[p] = 1.0 / (1.0 + np.exp(-logit[p]))
        if t == iterations:
            break
        log_joint = np.zeros(len(edges))
        for e, (_, parent, vote) in enumerate(edges):
            log_p = -0.5 * np.sum(
                (vote - mean[parent]) ** 2 / var[parent]
                + np.log(2 * np.pi * var[parent])
            )
            log_joint[e] = -np.logaddexp(0.0, -logit[parent]) + log_p
        for group in parents_of:
            top = max(log_joint[e] for e in group)
            total = sum(np.exp(log_joint[e] - top) for e in group)
            for e in group:
                r[e] = np.exp(log_joint[e] - top) / total
    return mean, a_out, r


def em_routing(
    votes,
    activations,
    beta_u,
    beta_a,
    iterations=3,
    final_inverse_temperature=1.0,
    epsilon=1e-6,
):
    """Every child feeds every parent: votes `(batch, N, J, P)`.

    Returns poses `(batch, J, P)`, activations `(batch, J)` and `R`
    `(batch, N, J)`.
    """
    votes = np.asarray(votes, dtype=np.float64)
    activations = np.asarray(activations, dtype=np.float64)
    batch, n, j, p = votes.shape
    beta_u = np.broadcast_to(np.asarray(beta_u, np.float64), (j,))
    beta_a = np.broadcast_to(np.asarray(beta_a, np.float64), (j,))
    poses, acts, rs = (
        np.zeros((batch, j, p)),
        np.zeros((batch, j)),
        np.zeros((batch, n, j)),
    )
    for b in range(batch):
        edges = [(i, k, votes[b, i, k]) for i in range(n) for k in range(j)]
        mean, a_out, r = _em_graph(
            edges,
            n,
            j,
            activations[b],
            beta_u,
            beta_a,
            iterations,
            final_inverse_temperature,
            epsilon,
            j / n,
            list(range(j)),
        )
        poses[b], acts[b], rs[b] = mean, a_out, r.reshape(n, j)
    return poses, acts, rs


def conv_em_routing(
    votes,
    activations,
    beta_u,
    beta_a,
    strides=(1, 1),
    iterations=3,
    final_inverse_temperature=1.0,
    epsilon=1e-6,
):
    """Convolutional capsules: votes `(batch, OH, OW, KH, KW, I, J, P)`.

    The child of type `i` at input position `(y * sh + u, x * sw + v)` feeds
    the parents at `(y, x)`; its assignments sum to 1 over all of them.
    """
    votes = np.asarray(votes, dtype=np.float64)
    activations = np.asarray(activations, dtype=np.float64)
    batch, oh, ow, kh, kw, ni, nj, p = votes.shape
    sh, sw = strides
    beta_u = np.broadcast_to(np.asarray(beta_u, np.float64), (nj,))
    beta_a = np.broadcast_to(np.asarray(beta_a, np.float64), (nj,))
    poses, acts = np.zeros((batch, oh, ow, nj, p)), np.zeros((batch, oh, ow, nj))
    rs = np.zeros(votes.shape[:-1])
    for b in range(batch):
        child_ids, child_acts, edges, where = {}, [], [], []
        for y in range(oh):
            for x in range(ow):
                for u in range(kh):
                    for v in range(kw):
                        for i in range(ni):
                            key = (y * sh + u, x * sw + v, i)
                            if key not in child_ids:
                                child_ids[key] = len(child_ids)
                                child_acts.append(activations[b, y, x, u, v, i])
                            for j in range(nj):
                                parent = (y * ow + x) * nj + j
                                edges.append(
                                    (child_ids[key], parent, votes[b, y, x, u, v, i, j])
                                )
                                where.append((y, x, u, v, i, j))
        mean, a_out, r = _em_graph(
            edges,
            len(child_ids),
            oh * ow * nj,
            child_acts,
            beta_u,
            beta_a,
            iterations,
            final_inverse_temperature,
            epsilon,
            nj / (kh * kw * ni),
            [q % nj for q in range(oh * ow * nj)],
        )
        poses[b] = mean.reshape(oh, ow, nj, p)
        acts[b] = a_out.reshape(oh, ow, nj)
        for e, index in enumerate(where):
            rs[(b, *index)] = r[e]
    return poses, acts, rs


def conv_matrix_votes(poses, kernel, strides=(1, 1)):
    """Votes of a convolutional capsule layer, `V = M_child @ W[u, v, i, j]`.

    `poses` `(batch, H, W, I, n*n)`, `kernel` `(KH, KW, I, J, n, n)`; returns
    `(batch, OH, OW, KH, KW, I, J, n*n)` and the children's positions.
    """
    poses = np.asarray(poses, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    batch, height, width, ni, pp = poses.shape
    kh, kw, _, nj, n, _ = kernel.shape
    sh, sw = strides
    oh, ow = (height - kh) // sh + 1, (width - kw) // sw + 1
    votes = np.zeros((batch, oh, ow, kh, kw, ni, nj, pp))
    for b in range(batch):
        for y in range(oh):
            for x in range(ow):
                for u in range(kh):
                    for v in range(kw):
                        for i in range(ni):
                            pose = poses[b, y * sh + u, x * sw + v, i].reshape(n, n)
                            for j in range(nj):
                                votes[b, y, x, u, v, i, j] = (
                                    pose @ kernel[u, v, i, j]
                                ).ravel()
    return votes


def class_matrix_votes(poses, kernel, coordinate_addition=True):
    """Votes of class capsules, shared over positions, plus the scaled
    (row, column) of each position on entries (0, n-1) and (1, n-1).

    `poses` `(batch, H, W, I, n*n)`, `kernel` `(I, J, n, n)`; returns
    `(batch, H * W * I, J, n*n)` (positions row by row, then types).
    """
    poses = np.asarray(poses, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    batch, height, width, ni, pp = poses.shape
    nj, n = kernel.shape[1], kernel.shape[2]
    votes = np.zeros((batch, height, width, ni, nj, n, n))
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                for i in range(ni):
                    for j in range(nj):
                        vote = poses[b, y, x, i].reshape(n, n) @ kernel[i, j]
                        if coordinate_addition:
                            vote[0, n - 1] += (y + 0.5) / height
                            vote[1, n - 1] += (x + 0.5) / width
                        votes[b, y, x, i, j] = vote
    return votes.reshape(batch, height * width * ni, nj, pp)


def spread_loss(targets, activations, margin=0.2):
    """Eq. 3 of Hinton et al. (2018), one value per example."""
    t = np.asarray(targets, dtype=np.float64)
    a = np.asarray(activations, dtype=np.float64)
    loss = np.zeros(len(a))
    for b in range(len(a)):
        target = int(np.argmax(t[b]))
        for i in range(a.shape[1]):
            if i != target:
                loss[b] += max(0.0, margin - (a[b, target] - a[b, i])) ** 2
    return loss
