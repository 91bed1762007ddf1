"""An independent NumPy reference of the paper's equations, in float64.

Written from Sabour, Frosst & Hinton (2017) with plain loops and a layout of
its own, `(batch, input capsule i, output capsule j, dim)`, so it shares no
code and no formulation with `keras_capsules.ops`.
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


def dynamic_routing(
    u: np.ndarray, weights: np.ndarray, iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Procedure 1, example by example.

    Args:
        u: input capsules `(batch, num_in, dim_in)`.
        weights: `(num_in, num_out, dim_in, dim_out)`.
        iterations: the number of routing iterations `r`.

    Returns:
        `v` of shape `(batch, num_out, dim_out)` and the coupling
        coefficients of the last iteration, `(batch, num_in, num_out)`.
    """
    u = np.asarray(u, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    batch, num_in, _ = u.shape
    num_out, dim_out = weights.shape[1], weights.shape[3]
    v_all = np.zeros((batch, num_out, dim_out))
    c_all = np.zeros((batch, num_in, num_out))
    for n in range(batch):
        u_hat = np.zeros((num_in, num_out, dim_out))
        for i in range(num_in):
            for j in range(num_out):
                u_hat[i, j] = weights[i, j].T @ u[n, i]
        logits = np.zeros((num_in, num_out))
        for r in range(iterations):
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            c = exp / exp.sum(axis=1, keepdims=True)
            s = np.zeros((num_out, dim_out))
            for i in range(num_in):
                for j in range(num_out):
                    s[j] += c[i, j] * u_hat[i, j]
            v = squash(s)
            if r < iterations - 1:
                for i in range(num_in):
                    for j in range(num_out):
                        logits[i, j] += u_hat[i, j] @ v[j]
        v_all[n] = v
        c_all[n] = c
    return v_all, c_all


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
