"""`jit_compile=True`: XLA on TensorFlow and JAX, `torch.compile` on PyTorch.

- TensorFlow: an XLA train step matches the eager one.
- JAX: every train step is XLA-compiled; `jit_compile=True` trains (the
  parity matrix compares JAX's compiled step with the other backends').
- PyTorch: the capsule layers trace into one graph with no graph break
  (`torch.compile(fullgraph=True)`, cheap, always run). A full
  `model.compile(jit_compile=True)` train step with the default inductor
  backend works and matches eager, but its first step compiles for tens of
  seconds on 2 CPU cores, so it runs only with
  `KERAS_CAPSULES_TORCH_COMPILE=1`.
"""

from __future__ import annotations

import os
import time

import keras
import numpy as np
import pytest

import keras_capsules
from tests.parity import _capsnet

BACKEND = keras.backend.backend()
UPDATE_RTOL = 1e-4


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_weights]


def _one_step(model: keras.Model) -> tuple[dict, list[np.ndarray]]:
    images, labels = _capsnet.fixed_batch()
    before = _weights(model)
    logs = model.train_on_batch(
        [images, labels], _capsnet.targets(images, labels), return_dict=True
    )
    return logs, [a - b for a, b in zip(_weights(model), before)]


def _assert_same_step(compiled, eager, what: str) -> None:
    (logs, updates), (eager_logs, eager_updates) = compiled, eager
    for key, value in eager_logs.items():
        assert np.isfinite(logs[key])
        np.testing.assert_allclose(logs[key], value, rtol=1e-5, err_msg=what)
    largest = max(float(np.max(np.abs(u))) for u in eager_updates)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(updates, eager_updates))
    assert diff <= UPDATE_RTOL * largest, (
        f"{what}: the compiled and eager SGD updates differ by {diff:.3g}, "
        f"{diff / largest:.3g} of the largest update (tolerance {UPDATE_RTOL:g})"
    )


def _compiled_and_eager_models(
    jit_compile: bool,
) -> tuple[keras.Model, keras.Model]:
    compiled = _capsnet.build_capsnet()
    _capsnet.compile_for_step(compiled, jit_compile=jit_compile)
    eager = _capsnet.build_capsnet()
    eager.set_weights(compiled.get_weights())
    _capsnet.compile_for_step(eager, jit_compile=False)
    return compiled, eager


@pytest.mark.skipif(BACKEND != "tensorflow", reason="XLA through tf.function")
def test_tensorflow_xla_step_matches_eager() -> None:
    compiled, eager = _compiled_and_eager_models(jit_compile=True)
    assert compiled.jit_compile is True

    _assert_same_step(_one_step(compiled), _one_step(eager), "TensorFlow XLA")


@pytest.mark.skipif(BACKEND != "jax", reason="XLA through jax.jit")
def test_jax_jit_compile_trains() -> None:
    model = _capsnet.build_capsnet()
    _capsnet.compile_for_step(model, jit_compile=True)
    assert model.jit_compile is True
    images, labels = _capsnet.fixed_batch(16)

    history = model.fit(
        [images, labels],
        _capsnet.targets(images, labels),
        batch_size=_capsnet.BATCH_SIZE,
        epochs=3,
        shuffle=False,
        verbose=0,
    )

    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    for variable in model.weights:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(variable)))


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile")
def test_torch_compile_traces_the_capsule_layers_in_one_graph() -> None:
    import torch

    primary = keras_capsules.PrimaryCapsule(4, 4, 3, strides=2)
    routing = keras_capsules.RoutingCapsule(3, 8)
    length = keras_capsules.Length()
    mask = keras_capsules.Mask()

    def forward(features, labels):
        digits = routing(primary(features))
        return length(digits), mask([digits, labels]), mask(digits)

    features = torch.rand(2, 10, 10, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.eye(3)[[0, 2]]
    expected = forward(features, labels)
    torch._dynamo.reset()
    # fullgraph=True raises on any graph break; the "eager" backend checks
    # the tracing only, without inductor's C++ code generation.
    compiled = torch.compile(forward, backend="eager", fullgraph=True)
    for actual, wanted in zip(compiled(features, labels), expected):
        torch.testing.assert_close(actual, wanted)
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile")
@pytest.mark.skipif(
    os.environ.get("KERAS_CAPSULES_TORCH_COMPILE") != "1",
    reason="torch.compile (inductor) of a train step takes tens of seconds on "
    "CPU; set KERAS_CAPSULES_TORCH_COMPILE=1 to run it",
)
def test_torch_jit_compile_step_matches_eager() -> None:
    compiled, eager = _compiled_and_eager_models(jit_compile=True)
    assert compiled.jit_compile is True

    start = time.monotonic()
    first = _one_step(compiled)
    first_step_s = time.monotonic() - start
    _assert_same_step(first, _one_step(eager), "torch.compile")
    start = time.monotonic()
    second = _one_step(compiled)
    print(
        f"\ntorch.compile train step: first {first_step_s:.1f} s, "
        f"second {time.monotonic() - start:.2f} s"
    )
    assert all(np.isfinite(v) for v in second[0].values())
