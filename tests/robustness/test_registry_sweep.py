"""Every component of the package, found by walking it, through the same checks.

`sweep_entries.find_components()` walks the registered and exported
classes; each needs an entry in `sweep_entries.ENTRIES` (a new class without
one fails `test_every_component_has_an_entry`). Per component:

- bad constructor arguments (derived from the signature, plus the entry's)
  raise a ValueError that names the argument and echoes the value;
- NumPy integers are accepted and stored as Python ints;
- wrong input ranks and shapes raise a ValueError naming the shape, eagerly
  and, for layers, on symbolic inputs;
- zero, tiny (1e-30) and huge (1e4) inputs give finite outputs and finite
  gradients (for the inputs and every trainable weight), in float32 and
  mixed_bfloat16;
- a `.keras` round trip (no `custom_objects`, safe mode) gives the same
  config and outputs.

The entries are the smallest configurations, so the sweep stays cheap.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.gradients import outputs_and_grads_function, value_and_grads
from tests.robustness.sweep_entries import (
    BASE,
    CALLBACK,
    CHECKS,
    ENTRIES,
    LAYER,
    LOSS,
    MODEL,
    constructor_arguments,
    derived_bad_arguments,
    find_components,
    with_numpy_integers,
)

COMPONENTS = find_components()
SCALES = (0.0, 1e-30, 1e4)
POLICIES = ("float32", "mixed_bfloat16")


def _applies(check: str) -> list:
    """The component names whose entry runs `check`, xfailed where known."""
    params = []
    for name in sorted(ENTRIES):
        entry = ENTRIES[name]
        if check in entry.not_applicable:
            continue
        marks = []
        if check in entry.xfail_checks:
            marks.append(pytest.mark.xfail(reason=entry.xfail_checks[check]))
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def _make(name: str, **overrides):
    return COMPONENTS[name](**{**ENTRIES[name].config, **overrides})


# --- The walk ----------------------------------------------------------------


def missing_entries(components: dict[str, type]) -> list[str]:
    return sorted(set(components) - set(ENTRIES))


def test_every_component_has_an_entry() -> None:
    missing = missing_entries(COMPONENTS)
    assert not missing, (
        f"No sweep entry for {missing}: add one to tests/robustness/sweep_entries.py"
    )


def test_every_entry_is_a_component() -> None:
    stale = sorted(set(ENTRIES) - set(COMPONENTS))
    assert not stale, f"Sweep entries for classes the package no longer has: {stale}"


def test_every_entry_names_real_checks() -> None:
    for name, entry in ENTRIES.items():
        unknown = set(entry.not_applicable) | set(entry.xfail_checks)
        assert unknown <= set(CHECKS), (name, unknown - set(CHECKS))
        if entry.kind not in (BASE, CALLBACK):
            assert entry.inputs is not None, name
            assert "extreme_inputs" not in entry.not_applicable, name


def test_a_new_registered_class_without_an_entry_is_found() -> None:
    # The walk is what the sweep relies on: a class registered the way the
    # package registers its own must show up as missing.
    custom_objects = keras.saving.get_custom_objects()

    @keras.saving.register_keras_serializable(package="keras_capsules")
    class SweepProbe(keras.layers.Layer):
        pass

    try:
        assert missing_entries(find_components()) == ["SweepProbe"]
    finally:
        del custom_objects["keras_capsules>SweepProbe"]
    assert missing_entries(find_components()) == []


def test_the_walk_finds_each_kind() -> None:
    kinds = {entry.kind for entry in ENTRIES.values()}
    assert kinds == {LAYER, LOSS, MODEL, CALLBACK, BASE}


# --- Constructor arguments ---------------------------------------------------


def _bad_argument_params() -> list:
    params = []
    for name in sorted(ENTRIES):
        for overrides, argument, xfail in derived_bad_arguments(
            COMPONENTS[name], ENTRIES[name]
        ):
            marks = [pytest.mark.xfail(reason=xfail, strict=False)] if xfail else []
            label = ",".join(f"{k}={v!r}" for k, v in overrides.items())
            params.append(
                pytest.param(
                    name, overrides, argument, id=f"{name}-{label}", marks=marks
                )
            )
    return params


@pytest.mark.parametrize("name, overrides, argument", _bad_argument_params())
def test_bad_constructor_argument_is_named(name, overrides, argument) -> None:
    received = re.escape(f"{argument}={overrides[argument]!r}")
    with pytest.raises(ValueError, match=rf"`{argument}`(.|\n)*{received}"):
        _make(name, **overrides)


def _numpy_integer_arguments(name: str) -> dict:
    arguments = constructor_arguments(COMPONENTS[name], ENTRIES[name])
    return {
        key: with_numpy_integers(value)
        for key, value in arguments.items()
        if with_numpy_integers(value) is not value
    }


@pytest.mark.parametrize(
    "name",
    [p for p in _applies("numpy_integers") if _numpy_integer_arguments(p.values[0])],
)
def test_numpy_integers_are_stored_as_ints(name) -> None:
    # Sizes often come out of NumPy (`np.prod`, array shapes): accepted, and
    # stored as Python ints so that the config stays JSON.
    converted = _numpy_integer_arguments(name)
    component = _make(name, **converted)
    stored = component.get_config() if hasattr(component, "get_config") else {}
    for key in converted:
        value = stored.get(key, getattr(component, key))
        for item in value if isinstance(value, tuple) else (value,):
            assert type(item) is int, (name, key, value)


# --- Input shapes ------------------------------------------------------------


def _bad_input_params(symbolic: bool) -> list:
    check = "symbolic_bad_inputs" if symbolic else "bad_inputs"
    params = []
    for name in sorted(ENTRIES):
        entry = ENTRIES[name]
        if check in entry.not_applicable or (symbolic and entry.kind != LAYER):
            continue
        for case in entry.bad_inputs:
            marks = [pytest.mark.xfail(reason=case.xfail)] if case.xfail else []
            params.append(
                pytest.param(name, case, id=f"{name}-{case.shapes}", marks=marks)
            )
    return params


def _shapes(case) -> list[tuple]:
    return case.shapes if isinstance(case.shapes, list) else [case.shapes]


def _assert_names_shapes(error: pytest.ExceptionInfo, case, shapes) -> None:
    named = case.named if case.named is not None else range(len(shapes))
    message = str(error.value)
    for index in named:
        assert str(tuple(shapes[index])) in message, (shapes[index], message)


def _call(name: str, component, inputs) -> None:
    if ENTRIES[name].kind == LOSS:
        component(*inputs)
    else:
        component(inputs if len(inputs) > 1 else inputs[0])


@pytest.mark.parametrize("name, case", _bad_input_params(symbolic=False))
def test_wrong_input_shape_is_named(name, case) -> None:
    component = _make(name)
    shapes = _shapes(case)
    inputs = [np.zeros(shape, "float32") for shape in shapes]
    with pytest.raises(ValueError) as error:
        _call(name, component, inputs)
    _assert_names_shapes(error, case, shapes)


@pytest.mark.parametrize("name, case", _bad_input_params(symbolic=True))
def test_wrong_symbolic_input_shape_is_named(name, case) -> None:
    component = _make(name)
    shapes = [(None, *shape[1:]) for shape in _shapes(case)]
    inputs = [keras.Input(shape[1:], batch_size=None) for shape in shapes]
    with pytest.raises(ValueError) as error:
        _call(name, component, inputs)
    _assert_names_shapes(error, case, shapes)


# --- Zero, tiny and huge inputs ----------------------------------------------


def _assert_finite(arrays, what: str) -> None:
    for k, array in enumerate(arrays):
        count = int(np.sum(~np.isfinite(array)))
        assert count == 0, f"{what}: {count} non-finite values in array {k}"


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", _applies("extreme_inputs"))
def test_zero_tiny_and_huge_inputs_stay_finite(name, policy) -> None:
    keras.config.set_dtype_policy(policy)
    entry = ENTRIES[name]
    component = _make(name)
    if entry.kind == LOSS:
        low = "bfloat16" if policy == "mixed_bfloat16" else "float32"
        for scale in SCALES:
            y_true, y_pred = entry.inputs(scale)

            def loss_of(prediction, y_true=y_true):
                return component(y_true, keras.ops.cast(prediction, low))

            value, grads = value_and_grads(loss_of, [y_pred])
            _assert_finite([value], f"{name} loss at scale {scale:g}")
            _assert_finite(grads, f"{name} gradient at scale {scale:g}")
        return
    call_kwargs = {"training": True} if entry.kind == MODEL else {}
    component(entry.inputs(1.0))  # builds it
    run = outputs_and_grads_function(component, **call_kwargs)
    for scale in SCALES:
        outputs, input_grads, weight_grads = run(entry.inputs(scale))
        _assert_finite(outputs, f"{name} outputs at scale {scale:g}")
        _assert_finite(input_grads, f"{name} input gradients at scale {scale:g}")
        _assert_finite(weight_grads, f"{name} weight gradients at scale {scale:g}")


# --- .keras round trip -------------------------------------------------------


def _as_model(name: str, component) -> keras.Model:
    entry = ENTRIES[name]
    if entry.kind == MODEL:
        return component
    sample = entry.inputs(1.0)
    if entry.kind == LOSS:
        y_true, _ = sample
        inputs = keras.Input(y_true.shape[1:])
        model = keras.Model(inputs, keras.layers.Identity()(inputs))
        model.compile(optimizer="sgd", loss=component)
        return model
    if isinstance(sample, list):
        inputs = [keras.Input(a.shape[1:]) for a in sample]
    else:
        inputs = keras.Input(sample.shape[1:])
    return keras.Model(inputs, component(inputs))


def _predict(model: keras.Model, sample) -> list[np.ndarray]:
    outputs = model(sample)
    return [
        np.asarray(keras.ops.convert_to_numpy(x)) for x in keras.tree.flatten(outputs)
    ]


@pytest.mark.parametrize("name", _applies("saving"))
def test_keras_file_round_trip(name, tmp_path: Path) -> None:
    entry = ENTRIES[name]
    component = _make(name)
    model = _as_model(name, component)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    if entry.kind == LOSS:
        restored = loaded.loss
        assert type(restored) is type(component), restored
        assert restored.get_config() == component.get_config()
        y_true, y_pred = entry.inputs(1.0)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(restored(y_true, y_pred)),
            keras.ops.convert_to_numpy(component(y_true, y_pred)),
            rtol=1e-6,
        )
        return
    if entry.kind == MODEL:
        assert type(loaded) is type(component)
        assert loaded.get_config() == component.get_config()
    else:
        (restored,) = [
            layer for layer in loaded.layers if type(layer) is type(component)
        ]
        assert restored.get_config() == component.get_config()
    sample = entry.inputs(1.0)
    for a, b in zip(_predict(loaded, sample), _predict(model, sample)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
