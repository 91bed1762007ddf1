"""A `run_layer_test`-style harness on Keras's public API only.

`keras.src.testing.TestCase.run_layer_test` is private and moves between
releases, so, as keras-hub does, this module checks the same contract with
public calls: config round trip, serialization, build, trainable and
non-trainable weight counts, symbolic call, eager call (and its values,
where given), variable batch sizes, one `fit` step, mixed precision and
`.keras` saving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np


def _as_list(data: Any) -> list[np.ndarray]:
    return list(data) if isinstance(data, (list, tuple)) else [data]


def _single_or_list(items: list[Any]) -> Any:
    return items if len(items) > 1 else items[0]


def _to_numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def run_layer_test(
    layer_cls: type[keras.layers.Layer],
    init_kwargs: dict[str, Any],
    input_data: np.ndarray | list[np.ndarray],
    expected_output_shape: tuple[int | None, ...],
    expected_num_trainable_weights: int,
    tmp_path: Path,
    expected_num_non_trainable_weights: int = 0,
    init_weights: list[np.ndarray] | None = None,
    expected_output: np.ndarray | None = None,
    output_rtol: float = 1e-5,
    output_atol: float = 1e-6,
    run_training_check: bool = True,
    run_mixed_precision_check: bool = True,
    trainable_inputs: tuple[int, ...] = (0,),
) -> None:
    """Checks the Keras layer contract; raises AssertionError on a breach.

    Args:
        layer_cls: The layer class under test.
        init_kwargs: Constructor arguments.
        input_data: A float32 array, or a list of arrays for multi-input
            layers (the first must be the batch-carrying tensor).
        expected_output_shape: The output shape for `input_data`.
        expected_num_trainable_weights: Trainable weights after build.
        tmp_path: A folder for the `.keras` file.
        expected_num_non_trainable_weights: Non-trainable weights after
            build. Capsule layers keep routing state per example, never in
            weights, hence the default of 0.
        init_weights: Weights set with `set_weights` after build, on the
            eager layer and on the functional model's, so that the outputs
            are known (random initializers differ between backends).
        expected_output: The output for `input_data`, checked on the eager
            call and on the functional model; needs `init_weights` unless the
            initializers are deterministic.
        output_rtol: Relative tolerance for `expected_output`.
        output_atol: Absolute tolerance for `expected_output`.
        run_training_check: Whether to take a `fit` step.
        run_mixed_precision_check: Whether to run under mixed precision.
        trainable_inputs: Indices of inputs that are floating tensors a
            mixed-precision model casts (one-hot labels are cast too).
    """
    inputs = _as_list(input_data)
    batch = inputs[0].shape[0]
    input_shapes = [tuple(x.shape) for x in inputs]

    # Config round trip and serialization.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, f"get_config() lacks the argument {key!r}: {config}"
    revived = layer_cls.from_config(config)
    assert revived.get_config() == config, (
        "from_config(get_config()) changed the config"
    )
    serialized = keras.saving.serialize_keras_object(layer)
    deserialized = keras.saving.deserialize_keras_object(serialized)
    assert type(deserialized) is layer_cls, type(deserialized)
    assert deserialized.get_config() == config

    # Build and compute_output_shape.
    layer.build(_single_or_list(input_shapes))
    assert len(layer.trainable_weights) == expected_num_trainable_weights, (
        f"expected {expected_num_trainable_weights} trainable weights, "
        f"got {[w.path for w in layer.trainable_weights]}"
    )
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights, (
        f"expected {expected_num_non_trainable_weights} non-trainable weights "
        "(routing state must not be stored as weights), got "
        f"{[w.path for w in layer.non_trainable_weights]}"
    )
    if init_weights is not None:
        layer.set_weights(init_weights)
    assert tuple(layer.compute_output_shape(_single_or_list(input_shapes))) == tuple(
        expected_output_shape
    )

    # Symbolic call with an unknown batch size.
    symbolic_inputs = [keras.Input(shape=s[1:], dtype="float32") for s in input_shapes]
    symbolic_layer = layer_cls(**init_kwargs)
    symbolic_output = symbolic_layer(_single_or_list(symbolic_inputs))
    assert tuple(symbolic_output.shape) == (None, *expected_output_shape[1:]), (
        symbolic_output.shape
    )

    # Eager call.
    eager_output = _to_numpy(layer(_single_or_list(inputs)))
    assert eager_output.shape == tuple(expected_output_shape), eager_output.shape
    assert np.all(np.isfinite(eager_output)), "eager output is not finite"
    if expected_output is not None:
        np.testing.assert_allclose(
            eager_output,
            expected_output,
            rtol=output_rtol,
            atol=output_atol,
            err_msg="eager output differs from expected_output",
        )

    # Nothing is baked in from the first batch: the functional model runs on
    # several batch sizes and gives per-example results.
    model = keras.Model(_single_or_list(symbolic_inputs), symbolic_output)
    if init_weights is not None:
        symbolic_layer.set_weights(init_weights)
    full = _to_numpy(model(_single_or_list(inputs)))
    if expected_output is not None:
        np.testing.assert_allclose(
            full,
            expected_output,
            rtol=output_rtol,
            atol=output_atol,
            err_msg="functional model output differs from expected_output",
        )
    if batch > 1:
        first = _to_numpy(model(_single_or_list([x[:1] for x in inputs])))
        np.testing.assert_allclose(first, full[:1], rtol=1e-5, atol=1e-6)

    if run_training_check:
        _check_fit_step(model, inputs)

    # Saving and loading with no custom_objects.
    full = _to_numpy(model(_single_or_list(inputs)))
    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        _to_numpy(reloaded(_single_or_list(inputs))), full, rtol=1e-5, atol=1e-6
    )

    if run_mixed_precision_check:
        for policy in ("mixed_float16", "mixed_bfloat16"):
            _check_mixed_precision(
                layer_cls, init_kwargs, inputs, model, policy, trainable_inputs
            )


def _check_fit_step(model: keras.Model, inputs: list[np.ndarray]) -> None:
    outputs = _to_numpy(model(_single_or_list(inputs)))
    targets = np.random.default_rng(0).uniform(size=outputs.shape).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [_to_numpy(w) for w in model.trainable_weights]
    history = model.fit(
        _single_or_list(inputs), targets, batch_size=len(targets), epochs=1, verbose=0
    )
    loss = history.history["loss"][0]
    assert np.isfinite(loss), f"fit step gave a non-finite loss {loss}"
    after = [_to_numpy(w) for w in model.trainable_weights]
    for weight, old, new in zip(model.trainable_weights, before, after):
        assert np.all(np.isfinite(new)), f"{weight.path} is not finite after fit"
        assert not np.array_equal(old, new), f"{weight.path} did not change in fit"


def _check_mixed_precision(
    layer_cls: type[keras.layers.Layer],
    init_kwargs: dict[str, Any],
    inputs: list[np.ndarray],
    reference_model: keras.Model,
    policy: str,
    trainable_inputs: tuple[int, ...],
) -> None:
    compute_dtype = policy.split("_")[1]
    layer = layer_cls(**init_kwargs, dtype=policy)
    cast_inputs = [
        keras.ops.cast(x, compute_dtype) if i in trainable_inputs else x
        for i, x in enumerate(inputs)
    ]
    layer.build(_single_or_list([tuple(x.shape) for x in inputs]))
    for weight in layer.weights:
        assert weight.dtype == "float32", (
            f"{weight.path} is {weight.dtype} under {policy}"
        )
    reference_layer = reference_model.layers[-1]
    layer.set_weights(reference_layer.get_weights())
    output = layer(_single_or_list(cast_inputs))
    assert keras.backend.standardize_dtype(output.dtype) == compute_dtype, (
        f"{policy}: output dtype {output.dtype}, expected {compute_dtype}"
    )
    low = _to_numpy(keras.ops.cast(output, "float32"))
    assert np.all(np.isfinite(low)), f"{policy}: output is not finite"
    full = _to_numpy(reference_model(_single_or_list(inputs)))
    tolerance = 2e-2 if compute_dtype == "float16" else 1e-1
    np.testing.assert_allclose(low, full, atol=tolerance, rtol=tolerance)
