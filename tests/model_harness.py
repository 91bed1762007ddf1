"""A model test harness that every capsule model runs.

Modelled on keras-hub's `run_backbone_test` and `run_precision_test`
(`keras_hub/src/tests/test_case.py`), on Keras's public API except where
noted: a model is given by its class, constructor arguments, inputs and
losses, and the harness checks the contract every model of the package
keeps:

- eager outputs of the expected shapes, finite, per example (a batch gives
  the results of its examples one by one);
- config round trip: `from_config(get_config())` gives the same config and,
  with the same weights, the same outputs; `serialize_keras_object` too;
- `.keras` save and load with no `custom_objects`: same class, config and
  outputs;
- the dtype policy reaches every sublayer: under a mixed policy every
  sublayer has the model's policy, weights stay float32, outputs are in the
  compute dtype (eager and symbolic) and close to float32 ones;
- one `fit` step with the given losses: finite loss, every trainable weight
  changed and finite.

`run_float64_test` checks, where the backend has float64, that a float64
model computes in float64 end to end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

Inputs = Any  # an array, or a tuple/list/dict of arrays, as the model takes


def _flat_numpy(outputs: Any) -> list[np.ndarray]:
    return [
        np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")))
        for x in keras.tree.flatten(outputs)
    ]


def _dtypes(outputs: Any) -> list[str]:
    return [
        keras.backend.standardize_dtype(x.dtype) for x in keras.tree.flatten(outputs)
    ]


def _assert_outputs_close(
    actual: Any, expected: Any, what: str, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    actual, expected = _flat_numpy(actual), _flat_numpy(expected)
    assert len(actual) == len(expected), f"{what}: {len(actual)} != {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(
            a, e, rtol=rtol, atol=atol, err_msg=f"{what}: output {k}"
        )


def _sublayers(model: keras.Model) -> list[keras.layers.Layer]:
    # Every nested layer, however deep (a decoder `Sequential`, a block
    # layer holding layers). Keras has no public recursive walk;
    # keras-hub's run_precision_test uses this same `_flatten_layers`.
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if not isinstance(layer, keras.layers.InputLayer)
    ]


def run_model_test(
    model_cls: type[keras.Model],
    init_kwargs: dict[str, Any],
    input_data: Inputs,
    tmp_path: Path,
    train_data: tuple[Inputs, Any],
    loss: Any,
    expected_output_shape: Any = None,
    precision_policies: tuple[str, ...] = ("mixed_bfloat16",),
    learning_rate: float = 0.01,
) -> None:
    """Checks the model contract; raises AssertionError on a breach.

    Args:
        model_cls: The model class under test, registered as serializable.
        init_kwargs: Constructor arguments (a small configuration).
        input_data: What the model is called with, e.g. images or
            `(images, labels)`; the first axis of every array is the batch.
        tmp_path: A folder for the `.keras` files.
        train_data: `(x, y)` for one `fit` step.
        loss: The losses to compile with, as `model.compile(loss=...)`
            takes them.
        expected_output_shape: The output shape for `input_data`, or a list
            of shapes for several outputs, if given.
        precision_policies: Mixed dtype policies to check.
        learning_rate: Adam learning rate of the `fit` step.
    """
    model = model_cls(**init_kwargs)
    outputs = model(input_data)
    _check_outputs(model, input_data, outputs, expected_output_shape)
    _check_config_round_trip(model_cls, init_kwargs, model, input_data, outputs)
    _check_saving(model_cls, model, input_data, outputs, tmp_path / "model.keras")
    for policy in precision_policies:
        _check_precision(model_cls, init_kwargs, model, input_data, policy, tmp_path)
    _check_fit_step(model, train_data, loss, learning_rate)


def _check_outputs(
    model: keras.Model, input_data: Inputs, outputs: Any, expected_shape: Any
) -> None:
    for k, x in enumerate(_flat_numpy(outputs)):
        assert np.all(np.isfinite(x)), f"output {k} is not finite"
    if expected_shape is not None:
        shapes = [tuple(x.shape) for x in keras.tree.flatten(outputs)]
        single = all(d is None or isinstance(d, int) for d in expected_shape)
        expected = [expected_shape] if single else expected_shape
        assert shapes == [tuple(s) for s in expected], (shapes, expected)
    # Per example: nothing is shared across the batch (routing state starts
    # afresh for every example).
    first = keras.tree.map_structure(lambda x: x[:1], input_data)
    _assert_outputs_close(
        model(first),
        keras.tree.map_structure(lambda x: x[:1], outputs),
        "the first example alone",
        rtol=1e-4,
        atol=1e-5,
    )


def _check_config_round_trip(
    model_cls: type[keras.Model],
    init_kwargs: dict[str, Any],
    model: keras.Model,
    input_data: Inputs,
    outputs: Any,
) -> None:
    config = model.get_config()
    for key in init_kwargs:
        assert key in config, f"get_config() lacks the argument {key!r}: {config}"
    clone = model_cls.from_config(config)
    assert clone.get_config() == config, "from_config(get_config()) changed the config"
    clone(input_data)
    clone.set_weights(model.get_weights())
    _assert_outputs_close(clone(input_data), outputs, "from_config(get_config())")

    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model)
    )
    assert type(revived) is model_cls, type(revived)
    assert revived.get_config() == config


def _check_saving(
    model_cls: type[keras.Model],
    model: keras.Model,
    input_data: Inputs,
    outputs: Any,
    path: Path,
) -> keras.Model:
    model.save(path)
    # No custom_objects: importing the package registers every class.
    loaded = keras.saving.load_model(path)
    assert type(loaded) is model_cls, type(loaded)
    assert loaded.get_config() == model.get_config()
    _assert_outputs_close(loaded(input_data), outputs, f"loaded from {path.name}")
    return loaded


def _check_precision(
    model_cls: type[keras.Model],
    init_kwargs: dict[str, Any],
    reference: keras.Model,
    input_data: Inputs,
    policy: str,
    tmp_path: Path,
) -> None:
    compute_dtype = keras.DTypePolicy(policy).compute_dtype
    model = model_cls(**init_kwargs, dtype=policy)
    model(input_data)
    _check_every_layer_has(model, policy)
    for weight in model.weights:
        assert weight.dtype == "float32", f"{policy}: {weight.path} is {weight.dtype}"
    model.set_weights(reference.get_weights())
    outputs = model(input_data)
    assert set(_dtypes(outputs)) == {compute_dtype}, (policy, _dtypes(outputs))
    symbolic = model.compute_output_spec(
        keras.tree.map_structure(
            lambda x: keras.KerasTensor(x.shape, dtype="float32"), input_data
        )
    )
    assert set(_dtypes(symbolic)) == {compute_dtype}, (policy, _dtypes(symbolic))
    tolerance = 2e-2 if compute_dtype == "float16" else 1e-1
    _assert_outputs_close(
        outputs, reference(input_data), policy, rtol=tolerance, atol=tolerance
    )
    # The policy is part of the config: a saved model comes back with it.
    loaded = keras.saving.load_model(_save(model, tmp_path / f"model_{policy}.keras"))
    _check_every_layer_has(loaded, policy)


def _save(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


def _check_every_layer_has(model: keras.Model, policy: str) -> None:
    assert model.dtype_policy.name == policy, model.dtype_policy.name
    sublayers = _sublayers(model)
    assert sublayers, "the model has no sublayers"
    wrong = {
        layer.path: layer.dtype_policy.name
        for layer in sublayers
        if layer.dtype_policy.name != policy
    }
    assert not wrong, f"sublayers without the model's policy {policy!r}: {wrong}"


def _check_fit_step(
    model: keras.Model, train_data: tuple[Inputs, Any], loss: Any, learning_rate: float
) -> None:
    x, y = train_data
    # Adam's first step moves every weight whose gradient is not zero by
    # about the learning rate, whatever the gradient's scale, so "did not
    # change" means "got no gradient". SGD's step (learning rate x gradient)
    # fell below float32's spacing for a fresh CapsNet's decoder kernels
    # (capsules start short), which made the check depend on the seed.
    optimizer = keras.optimizers.Adam(learning_rate, epsilon=1e-12)
    model.compile(optimizer=optimizer, loss=loss)
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    batch_size = len(keras.tree.flatten(x)[0])
    history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    value = history.history["loss"][0]
    assert np.isfinite(value), f"fit step gave a non-finite loss {value}"
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    for weight, old, new in zip(model.trainable_weights, before, after, strict=True):
        assert np.all(np.isfinite(new)), f"{weight.path} is not finite after fit"
        assert not np.array_equal(old, new), f"{weight.path} did not change in fit"


def run_float64_test(
    model_cls: type[keras.Model],
    init_kwargs: dict[str, Any],
    input_data: Inputs,
    skip: Callable[[str], Any],
) -> None:
    """A float64 model computes in float64, as its float32 twin does.

    JAX computes in float32 unless x64 is enabled (`JAX_ENABLE_X64=1`), so
    there `skip` (e.g. `pytest.skip`) is called with the reason.
    """
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            skip("float64 on JAX needs x64 (JAX_ENABLE_X64=1), off in this process")
    model = model_cls(**init_kwargs, dtype="float64")
    _check_every_layer_has(model, "float64")
    reference = model_cls(**init_kwargs)
    reference(input_data)
    model(input_data)
    model.set_weights(reference.get_weights())
    for weight in model.weights:
        assert weight.dtype == "float64", f"{weight.path} is {weight.dtype}"
    outputs = model(input_data)
    assert set(_dtypes(outputs)) == {"float64"}, _dtypes(outputs)
    _assert_outputs_close(outputs, reference(input_data), "float64", 1e-4, 1e-5)
