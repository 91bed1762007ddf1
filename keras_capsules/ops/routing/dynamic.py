"""Dynamic routing: routing-by-agreement, Procedure 1 of Sabour et al. (2017).

Reference:
    - [Sabour, Frosst & Hinton, 2017. Dynamic Routing Between Capsules](
      https://arxiv.org/abs/1710.09829)
"""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_capsules._validation import check_positive_int
from keras_capsules.ops._dtypes import dtype_name, matmul, statistics_dtype
from keras_capsules.ops.capsules import squash


def dynamic_routing(
    inputs: Any,
    kernel: Any,
    routing_iterations: int = 3,
    stop_gradient_on_agreement: bool = False,
    return_coupling: bool = False,
) -> Any:
    """Routes input capsules to output capsules by agreement (Procedure 1).

    Each input capsule `u_i` predicts each output capsule `j` through its
    own matrix, `u_hat[j|i] = W[i, j]^T u_i` (eq. 2). For `r` iterations,
    with routing logits `b[i, j]` starting at 0 for every example:

    1. `c[i] = softmax(b[i])` over the output capsules `j`;
    2. `s[j] = sum_i c[i, j] u_hat[j|i]`;
    3. `v[j] = squash(s[j])`;
    4. `b[i, j] += u_hat[j|i] . v[j]` (skipped after the last iteration).

    The logits and coupling coefficients are per-example state, never
    weights; gradients flow through every iteration, as in the paper. They
    are kept in float32 for float16/bfloat16/float32 capsules and in float64
    for float64 ones.

    The prediction vectors are never formed. With the kernel viewed per
    output capsule, `K_j = W[:, j]` as an `(E, I * D)` matrix, both routing
    contractions are batched matrix products over the `J` output capsules:
    the weighted sum is `s[b, j] = K_j @ flatten(c[b, j, :, None] * u[b])`
    and the agreement `u_hat[b, j, i] . v[b, j] = sum_d u[b, i, d]
    (v[b, j] @ K_j)[i, d]`. Each iteration moves one `(J, B, I * D)`
    tensor, half the size of `u_hat` for MNIST's DigitCaps, through large
    GEMMs; the first iteration, uniform coupling, is a single GEMM. Every
    product uses the same `(J, E, I * D)` view of the kernel, so each kernel
    gradient is a plain GEMM (XLA on CPU ran other layouts' kernel gradients
    as slow transposed GEMMs; benchmarks/README.md has the measurements).

    Args:
        inputs: Input capsules `u`, shape `(batch, input_num_capsules,
            input_capsule_dim)`.
        kernel: Transformation matrices `W`, shape `(input_num_capsules,
            num_capsules, input_capsule_dim, capsule_dim)`.
        routing_iterations: Number of routing iterations `r`, a positive
            integer; `1` means uniform coupling. Defaults to `3`.
        stop_gradient_on_agreement: If `True`, the agreement updates of
            step 4 are computed from `stop_gradient` copies of the inputs and
            the kernel: no gradient reaches `u` or `W` through the logits,
            while the weighted sums of step 2 (every iteration's, since the
            outputs `v` in the agreement still carry gradients) are
            back-propagated as usual. Not in the paper; off by default.
        return_coupling: If `True`, also return the coupling coefficients
            used in the last iteration. Defaults to `False`.

    Returns:
        The output capsules `v`, shape `(batch, num_capsules, capsule_dim)`,
        or the pair `(v, c)` when `return_coupling` is `True`, with `c` of
        shape `(batch, num_capsules, input_num_capsules)`, summing to 1
        over the output capsules.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import dynamic_routing
    >>> u = np.random.rand(2, 6, 4).astype("float32")
    >>> w = np.random.rand(6, 3, 4, 5).astype("float32")
    >>> v, c = dynamic_routing(u, w, routing_iterations=3, return_coupling=True)
    >>> tuple(v.shape), tuple(c.shape)
    ((2, 3, 5), (2, 3, 6))
    """
    check_positive_int("routing_iterations", routing_iterations)
    inputs = ops.convert_to_tensor(inputs)
    kernel = ops.convert_to_tensor(kernel)
    _check_shapes(inputs, kernel)
    dtype = dtype_name(inputs)
    logits_dtype = statistics_dtype(dtype)
    input_num_capsules, num_capsules, input_capsule_dim, capsule_dim = kernel.shape
    flat_dim = input_num_capsules * input_capsule_dim
    # (J, E, I * D): output capsule, its dimension, then every input entry.
    kernel_by_capsule = ops.reshape(
        ops.transpose(kernel, (1, 3, 0, 2)), (num_capsules, capsule_dim, flat_dim)
    )
    agreement_inputs, agreement_kernel = inputs, kernel_by_capsule
    if stop_gradient_on_agreement:
        agreement_inputs = ops.stop_gradient(inputs)
        agreement_kernel = ops.stop_gradient(kernel_by_capsule)

    # Iteration 1: the softmax of zero logits is uniform, so `s` is the
    # plain mean of the predictions, one GEMM over every output capsule.
    every_capsule = ops.reshape(kernel_by_capsule, (-1, flat_dim))
    s = matmul(ops.reshape(inputs, (-1, flat_dim)), ops.transpose(every_capsule))
    s = ops.reshape(s / num_capsules, (-1, num_capsules, capsule_dim))
    outputs = squash(ops.transpose(s, (1, 0, 2)))  # (J, B, E)
    logits = coupling = None
    for _ in range(1, routing_iterations):
        projected = matmul(outputs, agreement_kernel)
        projected = ops.reshape(
            projected, (num_capsules, -1, input_num_capsules, input_capsule_dim)
        )
        update = ops.cast(ops.sum(projected * agreement_inputs, axis=-1), logits_dtype)
        logits = update if logits is None else logits + update  # (J, B, I)
        coupling = ops.cast(ops.softmax(logits, axis=0), dtype)
        weighted = ops.expand_dims(coupling, -1) * inputs
        weighted = ops.reshape(weighted, (num_capsules, -1, flat_dim))
        # An einsum, not `matmul` with a transposed kernel: XLA then takes
        # the kernel gradient directly in the (J, E, I * D) layout.
        outputs = squash(ops.einsum("jbk,jek->jbe", weighted, kernel_by_capsule))
    outputs = ops.transpose(outputs, (1, 0, 2))
    if not return_coupling:
        return outputs
    if coupling is None:
        shape = (ops.shape(inputs)[0], num_capsules, input_num_capsules)
        return outputs, ops.full(shape, 1.0 / num_capsules, dtype=dtype)
    return outputs, ops.transpose(coupling, (1, 0, 2))


def _check_shapes(inputs: Any, kernel: Any) -> None:
    kernel_shape = tuple(kernel.shape)
    if (
        len(inputs.shape) != 3
        or len(kernel_shape) != 4
        or any(d is None for d in kernel_shape)
        or inputs.shape[1] not in (None, kernel_shape[0])
        or inputs.shape[2] not in (None, kernel_shape[2])
    ):
        raise ValueError(
            "`dynamic_routing` expects inputs of shape (batch, "
            "input_num_capsules, input_capsule_dim) and a kernel of shape "
            "(input_num_capsules, num_capsules, input_capsule_dim, capsule_dim). "
            f"Received: inputs.shape={tuple(inputs.shape)}, "
            f"kernel.shape={kernel_shape}"
        )
