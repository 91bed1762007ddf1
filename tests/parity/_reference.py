"""Float64 NumPy versions of the paper's equations, independent of the package."""

from __future__ import annotations

import numpy as np


def squash(s: np.ndarray) -> np.ndarray:
    """Eq. 1, `|s|^2 / (1 + |s|^2) * s / |s|`, written as `s |s| / (1 + |s|^2)`."""
    norm = np.linalg.norm(s, axis=-1, keepdims=True)
    return s * norm / (1.0 + norm**2)


def length(s: np.ndarray) -> np.ndarray:
    return np.linalg.norm(s, axis=-1)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def routing(
    inputs: np.ndarray,
    kernel: np.ndarray,
    iterations: int,
    agreement_predictions: np.ndarray | None = None,
) -> np.ndarray:
    """Procedure 1. `inputs` (b, i, d), `kernel` (i, j, d, e) -> (b, j, e).

    `agreement_predictions`, if given, replaces the prediction vectors in the
    logit update (a constant, to model `stop_gradient_on_agreement`).
    """
    u_hat = np.einsum("bid,ijde->bjie", inputs, kernel)
    agree = u_hat if agreement_predictions is None else agreement_predictions
    logits = np.zeros(u_hat.shape[:3])
    for iteration in range(iterations):
        coupling = softmax(logits, axis=1)
        v = squash(np.einsum("bji,bjie->bje", coupling, u_hat))
        if iteration < iterations - 1:
            logits = logits + np.einsum("bjie,bje->bji", agree, v)
    return v


def predictions(inputs: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return np.einsum("bid,ijde->bjie", inputs, kernel)
