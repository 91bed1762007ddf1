"""EM routing: Procedure 1 of Hinton, Sabour & Frosst (2018), in log space.

Every child capsule `i` (activation `a_i`) casts a vote `V_ij` (a
flattened pose matrix of `P` entries) for every parent `j` it feeds. With
assignment probabilities `R_ij` and input activations as weights, the
M-step fits one axis-aligned Gaussian per parent and its activation:

    mu_j^h    = sum_i R_ij a_i V_ij^h / sum_i R_ij a_i
    sigma_j^h = sum_i R_ij a_i (V_ij^h - mu_j^h)^2 / sum_i R_ij a_i  (squared)
    cost_j    = sum_h (beta_u + log sigma_j^h) * data_j
    a_j       = sigmoid(lambda * (beta_a - cost_j))

and the E-step gives each child to the parents that explain its vote,
`R_ij = a_j p_j(V_ij) / sum_k a_k p_k(V_ik)`, summed over every parent `k`
the child feeds. The output capsules are the means `mu_j` (their poses) and
the activations `a_j` of the last M-step.

Choices the paper leaves open, and how the authors' code (the IBM
implementation of Gritzman, 2019, and the authors' answers on OpenReview)
settles them; this module follows the code where the paper is silent:

- Inverse temperature. The paper only says that `lambda` grows over the
  iterations. The authors gave the schedule `lambda_t = lambda_final *
  (1 - 0.95^t)` for iterations `t = 1..r` (IBM's `final_lambda`), used
  here with `final_inverse_temperature` as `lambda_final`. It reaches
  `0.14 lambda_final` after 3 iterations, so `lambda_final` is a scale,
  not the last value. Iteration count and `lambda_final` are arguments.
- Pitfall 1 of Gritzman (2019), numerical instability of parents with
  only one child: such a parent (or one whose votes agree exactly) has a
  zero variance, `log sigma = -inf` and a NaN gradient. Every variance here
  is floored by adding `epsilon`; the cost uses `log sigma^2 / 2` and never
  a square root; the amounts of data in the denominators get `epsilon` too,
  so all-zero input activations give finite outputs.
- Pitfall 2, normalising the amount of data assigned to parents: the
  class capsules receive many more votes per parent than a 3x3 convolutional
  capsule, so one `beta_u`, `beta_a` and `lambda` scale would not fit both.
  Like the IBM code, `data_j = (J / N) sum_i R_ij a_i` for `N` children
  and `J` parent types per routing group: the paper's raw sum rescaled to
  the mean amount a parent receives. The IBM code multiplies by a further
  100 and uses `final_lambda = 0.01`; `final_inverse_temperature=1.0` is
  the same up to a rescaling of `beta_a` by 100.
- Pitfall 3, parents at different positions compete for a child: in a
  convolutional capsule layer (`conv_em_routing`), a child lies in the
  receptive fields of several output positions. The E-step normalises its
  assignments over every parent it feeds, all positions and all types
  together, so they sum to 1 per child as in the paper, and not per
  receptive field (which would count a child once per position). The
  initial `R` is uniform over the same set: `1 / (positions * J)`, which
  the IBM code also uses (the paper's `1 / |Omega_{L+1}|` for a fully
  connected layer). Children outside every receptive field (left over by a
  stride) have no parents and take no part.
- The activations weight the assignments in the M-step (`R_ij a_i`), as
  in the paper; the E-step uses `log a_j` (a `log_sigmoid`, finite for any
  logit) plus the Gaussian log density, so the softmax over parents is a
  log-sum-exp: small variances or far votes underflow no probability to 0.
- `beta_u` and `beta_a` are learned, one each per output capsule type as in
  the IBM code (the paper does not say); gradients flow through every
  iteration, as the authors wrote on OpenReview. The last iteration skips
  the E-step, whose result would not be used.

How the open implementations differ (read in their code: IBM
`em_routing.py`, yl-1993 `model/capsules.py`, www0wwwjs1 `capsnet_em.py`,
gyang274 `src/capsules/core.py`); this module is IBM's form:

- IBM/matrix-capsules-with-em-routing: as here. `R a` weights the M-step,
  `var + 1e-9`, cost `(beta_v + log(var) / 2) sum(R a) 100 / (N / J)`,
  `a = sigmoid(lambda_t (beta_a - cost))` with `final_lambda = 0.01` and
  `beta_a` drawn from N(-1000, 500) (-10 +- 5 in this module's units), the
  E-step `log(a + 1e-9)` plus the full Gaussian log density, normalised
  across every parent of a child (positions too); 3 iterations by default.
- yl-1993/Matrix-Capsules-EM-PyTorch: routes each receptive field on its
  own (the E-step's softmax is over the `J` parents of one position). The
  M-step multiplies `R` by `a_in` and renormalises over the parents,
  `R a / (sum_j R a + 1e-8)`; as `R` sums to 1 over those parents, that
  cancels `a_in`: the input activations take no part in the routing. The
  amount of data is the raw `sum_i R`, `lambda = 1e-3` at every iteration,
  `sigma^2 + 1e-8`, the E-step as here; 2 iterations by default.
- www0wwwjs1/Matrix-Capsules-EM-Tensorflow: per receptive field and the same
  renormalisation as yl-1993. The activation of every iteration but the last
  is `softmax_j(sum_i R)` (no cost, no betas), the last one
  `softmax_j(0.01 (beta_a - cost))`, a softmax over the parent types rather
  than a sigmoid; `beta_v` per type and pose entry. The E-step drops
  `2 pi`, shifts the log densities by their maximum over parents and
  entries minus `log 10` and divides by `sum + 1e-9`, so that a child far
  from every parent gets almost no assignment. Its default of 2 iterations
  runs one E-step. The class capsules route per position (18-entry votes:
  the coordinates concatenated) and average their activations over positions.
- gyang274/capsulesEM: per receptive field, `R a` without renormalisation,
  `sigma` without a floor (`log(sigma + 1e-9)`), and the costs
  standardised across the parent types of a position before the sigmoid,
  `sigmoid(lambda_t (beta_a + (mean_j cost - cost_j) / std_j cost))`, with
  `lambda_t` from 1 to 3 over the iterations.

Three iterations (two E-steps) route almost one-hot at initialisation on
MNIST-like votes: with `R` uniform, then sharpened once, the second E-step
gives many children to a single parent (16-entry Gaussians: a parent fitted
to a few children has small variances and a large density at them), and the
last M-step fits some parents to one child. On the paper's small model
(A=64, B=8, C=D=16, 28x28 digits, 16 images) the normalised assignment
entropy is 1.00 / 0.63 / 0.36 in the first convolutional capsule layer at
iterations 1 / 2 / 3, the effective children of a parent (median) 59 / 9.3 /
3.0 and their 5th percentile 57 / 3.4 / 1.0; on 8 images, 19 % of that layer's
parents are fitted to one child at iteration 3. Trained one epoch on the
first 3,000 MNIST training images (batch 24, Adam 3e-3, spread margin 0.2,
`final_inverse_temperature=0.1`, PyTorch) and scored on the first 1,000
test images, 3 iterations reach 0.14-0.17 against 0.61 and 0.66-0.68 for 1
and 2 (`benchmarks/em_iterations.py`); at initialisation the gradient norms
of the first convolution and the primary capsules are 84 and 51 with 3
iterations against 7.9 and 4.6 with 2. Forms measured the same way with 3
iterations, none of which learns as fast as 1 or 2 iterations:

- IBM's own scale, `lambda_final = 1` with `beta_a` drawn from N(-10, 5)
  (clipped to [-20, 0]): 0.13;
- yl-1993's / www0wwwjs1's renormalisation of `R a` (input activations
  cancelled): 0.17;
- that renormalisation with www0wwwjs1's `softmax_j(sum_i R)` activations in
  the iterations before the last: 0.21;
- gyang274's standardised costs with its `lambda_t` of 1 to 3: NaN
  gradients where every parent of a position has the same cost (a blank
  background gives all children the same zero vote, so every variance is
  `epsilon`), and 0.11 with the standard deviation kept off 0 as
  `sqrt(var_j cost + 1)`;
- a conjugate prior on the variances, `(data sigma^2 + n0 sigma_1^2) /
  (data + n0)` with `sigma_1^2` the first iteration's (uniform-`R`)
  variance and `n0 = 1` (about the amount of data of one parent) or `3`:
  0.26 both;
- and, measured before: `epsilon = 1e-4` 0.17, `lambda_final = 1` 0.16,
  batch norm after the first convolution 0.17, no gradient through `R`,
  per-receptive-field normalisation (yl-1993's, gyang274's,
  www0wwwjs1's), standardised inputs, and variance floors of 0.5x the first
  iteration's variance (per parent 0.28, per layer 0.22).

None of the references changes the E-step: the collapse is Procedure 1's own
behaviour with two E-steps on votes that do not agree yet (IBM reports 93.7 %
with 3 iterations against 95.4 % with 2 on smallNORB, yl-1993 97.5 against
99.1 % on MNIST, both after long training). This module keeps the paper's
and IBM's form; `routing_iterations=2` (one E-step, the default of yl-1993 and
www0wwwjs1 and the best iteration count of IBM and yl-1993) is the count that
learns fastest on MNIST here.

Statistics (means, variances, costs, assignments) are computed in float32
for float16, bfloat16 and float32 votes, in float64 for float64; the
outputs are cast back to the votes' dtype.

Reference:
    - [Hinton, Sabour & Frosst, 2018. Matrix capsules with EM routing](
      https://openreview.net/forum?id=HJWLfGWRb)
    - [Gritzman, 2019. Avoiding Implementation Pitfalls of "Matrix Capsules
      with EM Routing" by Hinton et al.](https://arxiv.org/abs/1907.00652)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

from keras_capsules._validation import (
    check_positive_int,
    check_positive_number,
    normalize_pair,
    shapes_compatible,
)
from keras_capsules.ops import _patches
from keras_capsules.ops._dtypes import dtype_name, statistics_dtype

_LOG_2PI = math.log(2.0 * math.pi)


def em_routing(
    votes: Any,
    activations: Any,
    beta_u: Any,
    beta_a: Any,
    routing_iterations: int = 3,
    final_inverse_temperature: float = 1.0,
    epsilon: float = 1e-6,
    return_assignments: bool = False,
) -> Any:
    """EM routing from every input capsule to every output capsule.

    See the module docstring for the equations and the choices made.
    Leading axes between the batch and the input capsules are independent
    routing problems (routed in one pass).

    Args:
        votes: Votes `V`, shape `(batch, ..., input_capsules,
            output_capsules, pose_size)`: input capsule `i`'s flattened
            prediction of output capsule `j`'s pose matrix.
        activations: Input activations `a`, shape `(batch, ...,
            input_capsules)`, in `[0, 1]`.
        beta_u: Per-entry cost offset, shape `(output_capsules,)` or a
            scalar.
        beta_a: Activation offset, shape `(output_capsules,)` or a scalar.
        routing_iterations: EM iterations `r`, a positive integer; `1` is a
            single M-step with uniform assignments. Defaults to `3`.
        final_inverse_temperature: `lambda_final` of the schedule
            `lambda_t = lambda_final (1 - 0.95^t)`. Defaults to `1.0`.
        epsilon: Floor added to every variance and amount of data, a
            positive number. Defaults to `1e-6`.
        return_assignments: If `True`, also return the assignment
            probabilities `R` used by the last M-step. Defaults to `False`.

    Returns:
        The pair `(poses, activations)`: output poses `(batch, ...,
        output_capsules, pose_size)` (the means `mu`) and output activations
        `(batch, ..., output_capsules)`, in the votes' dtype; with
        `return_assignments`, also `R` of shape `(batch, ...,
        input_capsules, output_capsules)`, summing to 1 over the outputs.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import em_routing
    >>> votes = np.random.rand(2, 12, 3, 16).astype("float32")
    >>> activations = np.random.rand(2, 12).astype("float32")
    >>> poses, a = em_routing(votes, activations, np.zeros(3), np.zeros(3))
    >>> tuple(poses.shape), tuple(a.shape)
    ((2, 3, 16), (2, 3))
    """
    votes = ops.convert_to_tensor(votes)
    activations = ops.convert_to_tensor(activations)
    shape = tuple(votes.shape)
    if (
        len(shape) < 4
        or any(d is None for d in shape[-3:])
        or not shapes_compatible(activations.shape, shape[:-2])
    ):
        raise ValueError(
            "`em_routing` expects votes of shape (batch, ..., input_capsules, "
            "output_capsules, pose_size), with the last three known, and "
            "activations of shape (batch, ..., input_capsules). Received: "
            f"votes.shape={shape}, activations.shape={tuple(activations.shape)}"
        )

    def log_normalizer(logits: Any) -> Any:
        return ops.logsumexp(logits, axis=-2, keepdims=True)

    num_children, num_parents = shape[-3], shape[-2]
    return _em(
        ops.swapaxes(votes, -2, -3),
        activations,
        beta_u,
        beta_a,
        routing_iterations,
        final_inverse_temperature,
        epsilon,
        return_assignments,
        np.full((num_children, num_parents), 1.0 / num_parents),
        log_normalizer,
    )


def conv_em_routing(
    votes: Any,
    activations: Any,
    beta_u: Any,
    beta_a: Any,
    strides: int | tuple[int, int] = 1,
    routing_iterations: int = 3,
    final_inverse_temperature: float = 1.0,
    epsilon: float = 1e-6,
    return_assignments: bool = False,
) -> Any:
    """EM routing of a convolutional capsule layer ("valid" padding).

    The parents at output position `(y, x)` receive the votes of the
    children in their `KH x KW` receptive field, which starts at input
    position `(y * stride_h, x * stride_w)`. The M-step is per output
    position; the E-step normalises each child's assignments over every
    parent it feeds, at every output position whose receptive field holds
    it (pitfall 3 of Gritzman, 2019; see the module docstring).

    Args:
        votes: Votes, shape `(batch, out_h, out_w, kernel_h, kernel_w,
            input_capsules, output_capsules, pose_size)`: entry `[b, y, x,
            u, v, i, j]` is the vote of the child of type `i` at input
            position `(y * stride_h + u, x * stride_w + v)` for the parent
            of type `j` at `(y, x)`.
        activations: The children's activations, shape `(batch, out_h,
            out_w, kernel_h, kernel_w, input_capsules)`, laid out likewise.
        beta_u: Per-entry cost offset, shape `(output_capsules,)` or a
            scalar.
        beta_a: Activation offset, shape `(output_capsules,)` or a scalar.
        strides: Strides of the receptive fields, an integer or a pair.
            Defaults to `1`.
        routing_iterations: EM iterations, a positive integer. Defaults to
            `3`.
        final_inverse_temperature: `lambda_final` of the schedule. Defaults
            to `1.0`.
        epsilon: Floor added to every variance and amount of data. Defaults
            to `1e-6`.
        return_assignments: If `True`, also return the assignments `R` used
            by the last M-step. Defaults to `False`.

    Returns:
        Poses `(batch, out_h, out_w, output_capsules, pose_size)` and
        activations `(batch, out_h, out_w, output_capsules)`; with
        `return_assignments`, also `R` shaped like `votes` without the pose
        axis, summing to 1 over all the parents of each child.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import conv_em_routing
    >>> votes = np.random.rand(2, 2, 2, 3, 3, 4, 5, 16).astype("float32")
    >>> activations = np.random.rand(2, 2, 2, 3, 3, 4).astype("float32")
    >>> poses, a = conv_em_routing(
    ...     votes, activations, np.zeros(5), np.zeros(5), strides=2)
    >>> tuple(poses.shape), tuple(a.shape)
    ((2, 2, 2, 5, 16), (2, 2, 2, 5))
    """
    strides = normalize_pair("strides", strides)
    votes = ops.convert_to_tensor(votes)
    activations = ops.convert_to_tensor(activations)
    shape = tuple(votes.shape)
    if (
        len(shape) != 8
        or any(d is None for d in shape[1:])
        or not shapes_compatible(activations.shape, shape[:-2])
    ):
        raise ValueError(
            "`conv_em_routing` expects votes of shape (batch, out_h, out_w, "
            "kernel_h, kernel_w, input_capsules, output_capsules, pose_size) "
            "with every size but the batch known, and activations of shape "
            "(batch, out_h, out_w, kernel_h, kernel_w, input_capsules). "
            f"Received: votes.shape={shape}, "
            f"activations.shape={tuple(activations.shape)}"
        )
    out_h, out_w, kernel_h, kernel_w, inputs, outputs, pose_size = shape[1:]
    votes = ops.reshape(
        votes, (-1, out_h, out_w, kernel_h * kernel_w * inputs, outputs, pose_size)
    )
    return conv_em_routing_by_parent(
        ops.swapaxes(votes, -2, -3),
        activations,
        beta_u,
        beta_a,
        (kernel_h, kernel_w),
        strides,
        routing_iterations,
        final_inverse_temperature,
        epsilon,
        return_assignments,
    )


def conv_em_routing_by_parent(
    votes: Any,
    activations: Any,
    beta_u: Any,
    beta_a: Any,
    kernel_size: tuple[int, int],
    strides: tuple[int, int],
    routing_iterations: int,
    final_inverse_temperature: float,
    epsilon: float,
    return_assignments: bool,
) -> Any:
    """`conv_em_routing` of votes laid out by parent, for the layers.

    `votes` has shape `(batch, out_h, out_w, output_capsules, kernel_h *
    kernel_w * input_capsules, pose_size)`, the children in the order of
    `conv_em_routing`'s `(kernel_h, kernel_w, input_capsules)` axes. A
    layer that computes its votes in this order spares the transposition
    of the largest tensor of the network (see `_em`); the arguments are
    those of `conv_em_routing`, already validated.
    """
    out_h, out_w, outputs, children, _ = votes.shape[1:]
    kernel_h, kernel_w = kernel_size
    inputs = children // (kernel_h * kernel_w)
    field_shape = (-1, out_h, out_w, kernel_h, kernel_w, inputs)

    def log_normalizer(logits: Any) -> Any:
        # log sum_k exp(logits[k]) over every parent k of each child, at
        # every position: shift by the child's largest logit, place the
        # receptive fields back on the input grid, gather them again.
        logits = ops.reshape(ops.swapaxes(logits, -1, -2), (*field_shape, outputs))
        local_max = ops.stop_gradient(ops.max(logits, axis=-1))
        child_max = _patches.fold(local_max, strides, "max")
        shift = _patches.extract(child_max, (kernel_h, kernel_w), strides)
        local_sum = ops.sum(ops.exp(logits - ops.expand_dims(shift, -1)), axis=-1)
        child_sum = _patches.fold(local_sum, strides, "sum")
        # >= 1 where a child has parents; uncovered positions are never read.
        child_log = ops.log(ops.where(child_sum > 0, child_sum, 1.0))
        log_sum = shift + _patches.extract(child_log, (kernel_h, kernel_w), strides)
        return ops.reshape(log_sum, (-1, out_h, out_w, 1, children))

    # Each child starts uniform over its parents: the J types at each of
    # the positions whose receptive fields hold it (a constant).
    counts = np.zeros(
        (strides[0] * (out_h - 1) + kernel_h, strides[1] * (out_w - 1) + kernel_w)
    )
    for u in range(kernel_h):
        for v in range(kernel_w):
            counts[u :: strides[0], v :: strides[1]][:out_h, :out_w] += 1
    rows = np.arange(out_h)[:, None, None, None] * strides[0]
    cols = np.arange(out_w)[None, :, None, None] * strides[1]
    per_field = counts[
        rows + np.arange(kernel_h)[None, None, :, None],
        cols + np.arange(kernel_w)[None, None, None, :],
    ]  # (out_h, out_w, kernel_h, kernel_w)
    initial = np.broadcast_to(
        1.0 / (per_field[..., None, None] * outputs),
        (out_h, out_w, kernel_h, kernel_w, inputs, outputs),
    ).reshape(out_h, out_w, children, outputs)

    results = _em(
        votes,
        ops.reshape(activations, (-1, out_h, out_w, children)),
        beta_u,
        beta_a,
        routing_iterations,
        final_inverse_temperature,
        epsilon,
        return_assignments,
        initial,
        log_normalizer,
    )
    if not return_assignments:
        return results
    poses, output_activations, assignments = results
    return (
        poses,
        output_activations,
        ops.reshape(assignments, (*field_shape, outputs)),
    )


def _em(
    votes: Any,
    activations: Any,
    beta_u: Any,
    beta_a: Any,
    routing_iterations: int,
    final_inverse_temperature: float,
    epsilon: float,
    return_assignments: bool,
    initial_assignments: np.ndarray,
    log_normalizer: Callable[[Any], Any],
) -> Any:
    """Procedure 1 on votes laid out by parent, `(batch, ..., J, N, P)`.

    `initial_assignments`, broadcastable to `(batch, ..., N, J)`, is `R`
    before the first M-step (a constant: a traced computation of it would
    be constant-folded at every batch size). `log_normalizer(logits)` maps
    logits `(batch, ..., J, N)` to the log-sum-exp over every parent of
    each child, broadcastable to them.

    In this layout every sum over the children is a batched matrix product,
    and an iteration forms only two vote-sized tensors, the deviations from
    the means and their squares (the E-step's exponent is the product of
    the squares with the inverse variances). The deviations add the
    negated means, rather than subtract them, so that the backward pass
    does not negate a vote-sized gradient.
    """
    iterations = check_positive_int("routing_iterations", routing_iterations)
    final = check_positive_number(
        "final_inverse_temperature", final_inverse_temperature
    )
    epsilon = check_positive_number("epsilon", epsilon)
    dtype = dtype_name(votes)
    stats = statistics_dtype(dtype)
    num_parents, num_children, pose_size = votes.shape[-3:]
    votes = ops.cast(votes, stats)
    weights = ops.expand_dims(ops.cast(activations, stats), -2)  # (..., 1, N)
    beta_u = ops.expand_dims(_per_parent("beta_u", beta_u, num_parents, stats), -1)
    beta_a = ops.expand_dims(_per_parent("beta_a", beta_a, num_parents, stats), -1)
    data_scale = num_parents / num_children

    initial = np.swapaxes(initial_assignments, -1, -2)
    assignments = ops.convert_to_tensor(initial, dtype=stats) * ops.ones_like(weights)
    for t in range(1, iterations + 1):
        inverse_temperature = final * (1.0 - 0.95**t)
        # M-step.
        weighted = assignments * weights  # (..., J, N)
        data = ops.sum(weighted, axis=-1, keepdims=True)  # (..., J, 1)
        share = weighted / (data + epsilon)
        mean = _sum_over_children(share, votes)  # (..., J, P)
        squared = ops.square(votes + ops.expand_dims(-mean, -2))  # (..., J, N, P)
        variance = _sum_over_children(share, squared) + epsilon
        log_variance = ops.sum(ops.log(variance), axis=-1, keepdims=True)  # (..., J, 1)
        cost = (pose_size * beta_u + 0.5 * log_variance) * (data * data_scale)
        logits = inverse_temperature * (beta_a - cost)  # (..., J, 1)
        if t == iterations:
            break
        # E-step, in log space.
        exponent = ops.einsum("...jnp,...jp->...jn", squared, 1.0 / variance)
        log_density = -0.5 * (exponent + log_variance + pose_size * _LOG_2PI)
        log_joint = ops.log_sigmoid(logits) + log_density  # (..., J, N)
        assignments = ops.exp(log_joint - log_normalizer(log_joint))

    poses = ops.cast(mean, dtype)
    output_activations = ops.cast(ops.sigmoid(ops.squeeze(logits, axis=-1)), dtype)
    if not return_assignments:
        return poses, output_activations
    return poses, output_activations, ops.cast(ops.swapaxes(assignments, -1, -2), dtype)


def _sum_over_children(share: Any, values: Any) -> Any:
    """`sum_n share[..., j, n] values[..., j, n, p]`, a batched matrix product.

    An einsum, not `ops.matmul`: Keras's PyTorch `matmul` returns float32
    for float64 operands.
    """
    return ops.einsum("...jn,...jnp->...jp", share, values)


def _per_parent(name: str, beta: Any, num_parents: int, dtype: str) -> Any:
    beta = ops.cast(ops.convert_to_tensor(beta), dtype)
    if tuple(beta.shape) not in ((), (1,), (num_parents,)):
        raise ValueError(
            f"`{name}` must be a scalar or have one entry per output capsule, "
            f"shape ({num_parents},). Received: {name}.shape={tuple(beta.shape)}"
        )
    return beta
