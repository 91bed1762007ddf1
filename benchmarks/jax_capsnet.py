"""A hand-written JAX CapsNet (`jax.lax.conv_general_dilated`, `jax.jit`): the JAX baseline.

The same model, loss and optimiser as `torch_capsnet.py`: squash, 3 routing
iterations differentiated through, margin loss plus 0.0005 x the decoder's
sum of squared errors, Adam (epsilon 1e-7, as Keras). The whole training
step (forward, gradient, Adam) is one jitted function whose parameter and
optimiser buffers are donated, so XLA updates them in place.

The routing uses the formulation of `torch_capsnet.routing` (the prediction
vectors are never formed); benchmarks/README.md compares it with `einsum`
on `u_hat`.
"""

from __future__ import annotations

from functools import partial

import common
import jax
import jax.numpy as jnp
import numpy as np

EPSILON = 1e-7


def squash(s):
    squared = jnp.sum(s * s, axis=-1, keepdims=True)
    return s * (
        squared / (1.0 + squared) * jax.lax.rsqrt(jnp.maximum(squared, EPSILON**2))
    )


def length(v):
    squared = jnp.sum(v * v, axis=-1)
    return squared * jax.lax.rsqrt(jnp.maximum(squared, EPSILON**2))


def margin_loss(labels, lengths):
    present = labels * jnp.square(jax.nn.relu(0.9 - lengths))
    absent = 0.5 * (1.0 - labels) * jnp.square(jax.nn.relu(lengths - 0.1))
    return jnp.mean(jnp.sum(present + absent, axis=-1))


def routing(u, kernel, iterations: int = common.ROUTING_ITERATIONS):
    """Dynamic routing of `u` (B, I, D) by `kernel` (I, J, D, E) -> (B, J, E)."""
    batch, num_inputs, input_dim = u.shape
    num_outputs, output_dim = kernel.shape[1], kernel.shape[3]
    flat = num_inputs * input_dim
    # One (J, E, I*D) view for every product, so each kernel gradient is a
    # plain GEMM in that layout; (J, I*D, E) made XLA run transposed GEMMs.
    kernel_t = jnp.transpose(kernel, (1, 3, 0, 2)).reshape(
        num_outputs, output_dim, flat
    )
    s = u.reshape(batch, flat) @ kernel_t.reshape(-1, flat).T
    s = s.reshape(batch, num_outputs, output_dim) / num_outputs
    v = squash(jnp.transpose(s, (1, 0, 2)))
    logits = None
    for _ in range(1, iterations):
        projected = v @ kernel_t
        agreement = jnp.sum(
            projected.reshape(num_outputs, batch, num_inputs, input_dim) * u, -1
        )
        logits = agreement if logits is None else logits + agreement
        coupling = jax.nn.softmax(logits, axis=0)
        weighted = (coupling[..., None] * u).reshape(num_outputs, batch, flat)
        v = squash(jnp.einsum("jbk,jek->jbe", weighted, kernel_t))
    return jnp.transpose(v, (1, 0, 2))


def _glorot(key, shape, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, jnp.float32, -limit, limit)


def init_params(bench: str, key):
    keys = jax.random.split(key, 6)
    routing_shape = (
        common.INPUT_CAPSULES,
        common.NUM_CLASSES,
        common.INPUT_CAPSULE_DIM,
        common.CAPSULE_DIM,
    )
    params = {"routing": 0.01 * jax.random.normal(keys[0], routing_shape)}
    if bench == "routing":
        return params
    k, channels = common.KERNEL_SIZE, common.IMAGE_SHAPE[-1]
    filters, primary = (
        common.CONV_FILTERS,
        common.PRIMARY_CAPSULES * common.INPUT_CAPSULE_DIM,
    )
    params["conv"] = (
        _glorot(keys[1], (k, k, channels, filters), k * k * channels, k * k * filters),
        jnp.zeros(filters),
    )
    params["primary"] = (
        _glorot(keys[2], (k, k, filters, primary), k * k * filters, k * k * primary),
        jnp.zeros(primary),
    )
    sizes = (
        common.NUM_CLASSES * common.CAPSULE_DIM,
        *common.DECODER_UNITS,
        int(np.prod(common.IMAGE_SHAPE)),
    )
    params["decoder"] = [
        (_glorot(key, (n_in, n_out), n_in, n_out), jnp.zeros(n_out))
        for key, n_in, n_out in zip(keys[3:], sizes[:-1], sizes[1:])
    ]
    return params


def _conv(x, kernel_bias, stride):
    kernel, bias = kernel_bias
    y = jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + bias


def _space_to_depth_conv(x, kernel_bias, stride):
    """`_conv` as a stride-1 convolution of stride x stride pixel blocks."""
    kernel, bias = kernel_bias
    size, _, channels, filters = kernel.shape
    blocks = -(-size // stride)
    out = (x.shape[1] - size) // stride + 1
    rows = (out - 1 + blocks) * stride
    x = x[:, :rows, :rows]
    x = jnp.pad(x, ((0, 0), (0, rows - x.shape[1]), (0, rows - x.shape[2]), (0, 0)))
    n = rows // stride
    x = x.reshape(-1, n, stride, n, stride, channels).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(-1, n, n, stride * stride * channels)
    pad = blocks * stride - size
    kernel = jnp.pad(kernel, ((0, pad), (0, pad), (0, 0), (0, 0)))
    kernel = kernel.reshape(blocks, stride, blocks, stride, channels, filters)
    kernel = kernel.transpose(0, 2, 1, 3, 4, 5).reshape(blocks, blocks, -1, filters)
    return _conv(x, (kernel, bias), 1)


def capsnet_apply(params, images, labels=None, space_to_depth=False):
    """Class-capsule lengths and reconstructions of NHWC `images`."""
    primary_conv = _space_to_depth_conv if space_to_depth else _conv
    features = primary_conv(
        jax.nn.relu(_conv(images, params["conv"], 1)), params["primary"], 2
    )
    u = squash(features.reshape(images.shape[0], -1, common.INPUT_CAPSULE_DIM))
    v = routing(u, params["routing"])
    lengths = length(v)
    if labels is None:
        labels = jax.nn.one_hot(
            jnp.argmax(lengths, -1), common.NUM_CLASSES, dtype=v.dtype
        )
    h = (v * labels[..., None]).reshape(images.shape[0], -1)
    layers = params["decoder"]
    for kernel, bias in layers[:-1]:
        h = jax.nn.relu(h @ kernel + bias)
    kernel, bias = layers[-1]
    return lengths, jax.nn.sigmoid(h @ kernel + bias).reshape(images.shape)


def loss_fn(bench: str, space_to_depth: bool, params, inputs, labels):
    if bench == "routing":
        return margin_loss(labels, length(routing(inputs, params["routing"])))
    lengths, reconstructions = capsnet_apply(params, inputs, labels, space_to_depth)
    squared_error = jnp.mean(
        jnp.sum(jnp.square(reconstructions - inputs), axis=(1, 2, 3))
    )
    return margin_loss(labels, lengths) + common.RECONSTRUCTION_WEIGHT * squared_error


@partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2, 3))
def train_step(bench: str, space_to_depth: bool, params, opt_state, inputs, labels):
    loss, grads = jax.value_and_grad(partial(loss_fn, bench, space_to_depth))(
        params, inputs, labels
    )
    step, m, v = opt_state
    step = step + 1
    beta1, beta2 = 0.9, 0.999
    m = jax.tree.map(lambda m, g: beta1 * m + (1 - beta1) * g, m, grads)
    v = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * g * g, v, grads)
    # Keras's Adam: bias correction folded into the learning rate.
    lr = common.LEARNING_RATE * jnp.sqrt(1 - beta2**step) / (1 - beta1**step)
    params = jax.tree.map(
        lambda p, m, v: p - lr * m / (jnp.sqrt(v) + EPSILON), params, m, v
    )
    return params, (step, m, v), loss


class Trainer:
    """Holds the parameters and Adam state; `train_step` / `infer_step` run one batch."""

    def __init__(
        self, bench: str, batch: dict, device: str = "cpu", space_to_depth=False
    ):
        self.bench = bench
        # The primary capsules' stride-2 convolution as a stride-1 one
        # (keras_capsules.ops.space_to_depth_conv): XLA's CPU gradient of the
        # strided one is ~10x slower.
        self.space_to_depth = space_to_depth
        platform = "gpu" if device == "gpu" else "cpu"
        self.device = jax.devices(platform)[0]
        self.params = jax.device_put(init_params(bench, jax.random.key(0)), self.device)
        zeros = jax.tree.map(jnp.zeros_like, self.params)
        self.opt_state = (
            jnp.zeros((), jnp.float32),
            zeros,
            jax.tree.map(jnp.zeros_like, zeros),
        )
        self.inputs = jax.device_put(batch["inputs"], self.device)
        self.labels = jax.device_put(batch["labels"], self.device)
        self._infer = jax.jit(partial(capsnet_apply, space_to_depth=space_to_depth))

    def train_step(self):
        self.params, self.opt_state, loss = train_step(
            self.bench,
            self.space_to_depth,
            self.params,
            self.opt_state,
            self.inputs,
            self.labels,
        )
        return loss

    def infer_step(self):
        return self._infer(self.params, self.inputs)

    def sync(self, result) -> None:
        jax.block_until_ready(result)

    def num_params(self) -> int:
        return int(sum(np.prod(p.shape) for p in jax.tree.leaves(self.params)))
