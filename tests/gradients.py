"""Gradients in tests, on whichever backend this process runs.

Keras has no public gradient op, so the tests branch on the backend here
(the package itself never does).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np


def value_and_grads(
    fn: Callable[..., Any], arrays: Sequence[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The value of a scalar `fn(*tensors)` and its gradient for each input.

    `fn` receives backend tensors made from `arrays` and must return a
    scalar tensor. Returns NumPy arrays.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
    elif backend == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        value = fn(*tensors)
        grads = torch.autograd.grad(value, tensors, allow_unused=True)
    elif backend == "jax":
        value, grads = _jitted_value_and_grad(fn, len(arrays))(*arrays)
    else:
        raise NotImplementedError(f"No gradient helper for backend {backend!r}")
    grads = [
        np.zeros_like(a) if g is None else keras.ops.convert_to_numpy(g)
        for a, g in zip(arrays, grads)
    ]
    return keras.ops.convert_to_numpy(value), grads


@functools.lru_cache(maxsize=64)
def _jitted_value_and_grad(fn: Callable[..., Any], num_args: int) -> Callable:
    # One compiled function instead of one compilation per primitive, and
    # compiled once per `fn` (and shapes), not once per call: property tests
    # call the same `fn` on many examples.
    import jax

    return jax.jit(jax.value_and_grad(fn, argnums=tuple(range(num_args))))


def central_differences(
    fn: Callable[..., float], arrays: Sequence[np.ndarray], step: float = 1e-6
) -> list[np.ndarray]:
    """Central finite differences of a scalar NumPy `fn` in float64."""
    arrays = [np.array(a, dtype="float64") for a in arrays]
    grads = []
    for a in arrays:
        grad = np.zeros_like(a)
        flat, grad_flat = a.reshape(-1), grad.reshape(-1)
        for k in range(flat.size):
            original = flat[k]
            flat[k] = original + step
            upper = fn(*arrays)
            flat[k] = original - step
            lower = fn(*arrays)
            flat[k] = original
            grad_flat[k] = (upper - lower) / (2 * step)
        grads.append(grad)
    return grads


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


def outputs_and_grads_function(
    layer: keras.layers.Layer, **call_kwargs: Any
) -> Callable[[Any], tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]]:
    """A function of `inputs`: the outputs of `layer(inputs)` and gradients.

    `layer` is a built layer or model; `inputs` an array or a list of
    arrays, passed as the one positional argument. The objective is
    the sum of every output, cast to float32. The function returns NumPy
    arrays: the flattened outputs, the gradient for each input array and
    for each trainable weight (in `layer.trainable_weights` order). On JAX
    it is compiled once, for every call with inputs of the same shapes.
    """
    weights = layer.trainable_weights

    def total(outputs: Any) -> Any:
        return sum(
            keras.ops.sum(keras.ops.cast(x, "float32"))
            for x in keras.tree.flatten(outputs)
        )

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def objective(tensors, is_list, trainable, non_trainable):
            inputs = list(tensors) if is_list else tensors[0]
            outputs, _ = layer.stateless_call(
                trainable, non_trainable, inputs, **call_kwargs
            )
            return total(outputs), outputs

        compiled = jax.jit(
            jax.value_and_grad(objective, argnums=(0, 2), has_aux=True),
            static_argnums=1,
        )

    def run(inputs: Any) -> tuple[list, list, list]:
        is_list = isinstance(inputs, (list, tuple))
        arrays = [np.asarray(a) for a in (inputs if is_list else [inputs])]

        def pack(tensors: Sequence[Any]) -> Any:
            return list(tensors) if is_list else tensors[0]

        if backend == "tensorflow":
            import tensorflow as tf

            tensors = [tf.constant(a) for a in arrays]
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                outputs = layer(pack(tensors), **call_kwargs)
                value = total(outputs)
            grads = tape.gradient(value, [*tensors, *weights])
        elif backend == "torch":
            import torch

            tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
            outputs = layer(pack(tensors), **call_kwargs)
            value = total(outputs)
            grads = torch.autograd.grad(
                value, [*tensors, *(w.value for w in weights)], allow_unused=True
            )
        elif backend == "jax":
            (_, outputs), (input_grads, weight_grads) = compiled(
                arrays,
                is_list,
                [w.value for w in weights],
                [w.value for w in layer.non_trainable_weights],
            )
            grads = [*input_grads, *weight_grads]
        else:
            raise NotImplementedError(f"No gradient helper for backend {backend!r}")
        outputs = [
            np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")))
            for x in keras.tree.flatten(outputs)
        ]
        references = [*arrays, *(np.zeros(w.shape, "float32") for w in weights)]
        grads = [
            np.zeros_like(r) if g is None else np.asarray(keras.ops.convert_to_numpy(g))
            for r, g in zip(references, grads)
        ]
        return outputs, grads[: len(arrays)], grads[len(arrays) :]

    return run
