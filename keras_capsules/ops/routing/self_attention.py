"""Self-attention routing, from Efficient-CapsNet (Mazzia et al., 2021).

Reference:
    - [Mazzia, Salvetti & Chiaberge, 2021. Efficient-CapsNet: capsule network
      with self-attention routing](https://arxiv.org/abs/2101.12491)
"""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_capsules._validation import shapes_compatible
from keras_capsules.ops._dtypes import dtype_name, statistics_dtype
from keras_capsules.ops.capsules import efficient_squash


def self_attention_routing(
    inputs: Any,
    kernel: Any,
    log_priors: Any,
    return_coupling: bool = False,
) -> Any:
    """Routes input capsules to output capsules in one self-attention pass.

    With the predictions `u[j, i] = W[i, j]^T u_i` of every input capsule
    `i` for every output capsule `j` (eq. 2 of the paper), the agreement of
    a prediction with all the predictions for the same output capsule,

    `A[j, i] = u[j, i] . sum_k u[j, k] / sqrt(capsule_dim)`,

    gives coupling coefficients `c[j, i] = softmax_j(A[j, i])` over the
    output capsules (eq. 3). Each output capsule is the efficient squash of

    `s_j = sum_i u[j, i] (c[j, i] + b[j, i])` (eq. 4),

    where the log priors `b` are weights. The agreement needs only the sum
    of the predictions, `sum_k u[j, k]`, never the `(batch, J, I, I)` matrix
    of pairwise agreements. The softmax runs in float32 (float64 for
    float64 inputs). This is the authors' formulation (their `FCCaps`
    layer), on which the paper's equations agree.

    Args:
        inputs: Input capsules, `(batch, input_num_capsules,
            input_capsule_dim)`.
        kernel: Transformation matrices, `(input_num_capsules,
            num_capsules, input_capsule_dim, capsule_dim)`.
        log_priors: The priors `b`, `(num_capsules, input_num_capsules)`.
        return_coupling: If `True`, also return the coupling coefficients
            `c`. Defaults to `False`.

    Returns:
        The output capsules `(batch, num_capsules, capsule_dim)`, or the
        pair `(capsules, coupling)` with coupling `(batch, num_capsules,
        input_num_capsules)`, summing to 1 over the output capsules.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import self_attention_routing
    >>> u = np.random.rand(2, 16, 8).astype("float32")
    >>> w = np.random.rand(16, 10, 8, 16).astype("float32")
    >>> b = np.zeros((10, 16), "float32")
    >>> v, c = self_attention_routing(u, w, b, return_coupling=True)
    >>> tuple(v.shape), tuple(c.shape)
    ((2, 10, 16), (2, 10, 16))
    """
    inputs = ops.convert_to_tensor(inputs)
    kernel = ops.convert_to_tensor(kernel)
    log_priors = ops.convert_to_tensor(log_priors)
    _check_shapes(inputs, kernel, log_priors)
    dtype = dtype_name(inputs)
    capsule_dim = kernel.shape[-1]
    predictions = ops.einsum("bid,ijde->bjie", inputs, kernel)
    total = ops.sum(predictions, axis=2)  # (batch, J, E)
    agreement = ops.einsum("bjie,bje->bji", predictions, total)
    agreement = ops.cast(agreement, statistics_dtype(dtype)) / capsule_dim**0.5
    coupling = ops.cast(ops.softmax(agreement, axis=1), dtype)
    weights = coupling + ops.cast(log_priors, dtype)
    capsules = efficient_squash(ops.einsum("bji,bjie->bje", weights, predictions))
    if return_coupling:
        return capsules, coupling
    return capsules


def _check_shapes(inputs: Any, kernel: Any, log_priors: Any) -> None:
    kernel_shape = tuple(kernel.shape)
    valid = (
        len(inputs.shape) == 3
        and len(kernel_shape) == 4
        and shapes_compatible(inputs.shape[1:], (kernel_shape[0], kernel_shape[2]))
        and shapes_compatible(log_priors.shape, (kernel_shape[1], kernel_shape[0]))
    )
    if not valid:
        raise ValueError(
            "`self_attention_routing` expects inputs (batch, input_num_capsules, "
            "input_capsule_dim), a kernel (input_num_capsules, num_capsules, "
            "input_capsule_dim, capsule_dim) and log priors (num_capsules, "
            f"input_num_capsules). Received: inputs.shape={tuple(inputs.shape)}, "
            f"kernel.shape={kernel_shape}, log_priors.shape={tuple(log_priors.shape)}"
        )
