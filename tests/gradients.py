"""Gradients for tests, on whichever backend this process runs.

Keras has no public gradient op, so this is the one place where the tests
branch on the backend; the package itself never does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np


def gradients(
    fn: Callable[..., object], inputs: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Gradients of `sum(fn(*inputs))` with respect to each input."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.Variable(x) for x in inputs]
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(fn(*tensors))
        grads = tape.gradient(total, tensors)
        return [np.asarray(g) for g in grads]
    if backend == "torch":
        import torch

        tensors = [torch.tensor(x, requires_grad=True) for x in inputs]
        fn(*tensors).sum().backward()
        return [t.grad.detach().cpu().numpy() for t in tensors]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def total(*args):
            return jnp.sum(fn(*args))

        grads = jax.grad(total, argnums=tuple(range(len(inputs))))(
            *[jnp.asarray(x) for x in inputs]
        )
        return [np.asarray(g) for g in grads]
    raise NotImplementedError(f"No gradient helper for backend {backend!r}")


def model_gradients(model: keras.Model, loss_fn: Callable, x, y) -> list[np.ndarray]:
    """Gradients of `loss_fn(y, model(x))` with respect to the trainable weights."""
    backend = keras.backend.backend()
    weights = model.trainable_weights
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return [np.asarray(g) for g in tape.gradient(loss, weights)]
    if backend == "torch":
        model.zero_grad()
        loss = loss_fn(y, model(x, training=True))
        loss.backward()
        return [w.value.grad.detach().cpu().numpy() for w in weights]
    if backend == "jax":
        import jax

        def loss_of(trainable_values):
            outputs, _ = model.stateless_call(
                trainable_values,
                [v.value for v in model.non_trainable_weights],
                x,
                training=True,
            )
            return loss_fn(y, outputs)

        grads = jax.grad(loss_of)([w.value for w in weights])
        return [np.asarray(g) for g in grads]
    raise NotImplementedError(f"No gradient helper for backend {backend!r}")
