"""What the registry sweep knows about each component of the package.

`find_components()` walks the package: every class registered with the
`keras_capsules>` prefix, every class exported by `keras_capsules.layers`,
`.losses`, `.models` and `.callbacks`, and every `Layer`, `Loss` or
`Callback` subclass defined in a module of the package. `ENTRIES` holds,
for each one, how to make its smallest instance, a valid input at a given
scale, and its bad inputs; `test_registry_sweep.py` runs the same checks on
every entry and fails for a component without one.

Adding a component: add an `Entry` under its class name. Bad constructor
arguments are derived from the signature (every argument holding an int, a
float, a string or a tuple of ints is given wrong values of its kind); list
in `skip_arguments` those the derivation gets wrong, with the reason, and in
`bad_arguments` the values it cannot guess (`num_classes=1`). A check that
cannot apply goes in `not_applicable`, with the reason: it is then not run
at all, rather than skipped.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

import keras_capsules

LAYER = "layer"
LOSS = "loss"
MODEL = "model"
CALLBACK = "callback"
BASE = "base"  # an abstract base: its subclasses are swept; its checks are

# The checks of `test_registry_sweep.py`, by the name `not_applicable` uses.
CHECKS = (
    "bad_arguments",
    "numpy_integers",
    "bad_inputs",
    "symbolic_bad_inputs",
    "extreme_inputs",
    "saving",
)

EXPORTING_MODULES = ("layers", "losses", "models", "callbacks")
COMPONENT_TYPES = (keras.layers.Layer, keras.losses.Loss, keras.callbacks.Callback)


@dataclass(frozen=True)
class BadInput:
    """Input shapes a component must reject with a ValueError naming them.

    `shapes` is one shape or a list of shapes (one per input); the message
    must contain the shape at each index of `named` (all by default).
    """

    shapes: Any
    named: tuple[int, ...] | None = None
    xfail: str | None = None


@dataclass(frozen=True)
class Entry:
    kind: str
    config: dict[str, Any] = field(default_factory=dict)
    # `inputs(scale)`: a valid input, its free values multiplied by `scale`
    # (0, 1e-30, 1e4). An array or a list of arrays; for a loss the pair
    # `(y_true, y_pred)`, with `y_pred` scaled.
    inputs: Callable[[float], Any] | None = None
    bad_inputs: tuple[BadInput, ...] = ()
    bad_arguments: tuple[tuple[dict[str, Any], str], ...] = ()
    skip_arguments: dict[str, str] = field(default_factory=dict)
    # Argument names whose bad values are accepted today: (name, reason).
    xfail_arguments: dict[str, str] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    # Checks known to fail today, with the reason (xfail, strict=False).
    xfail_checks: dict[str, str] = field(default_factory=dict)


def find_components() -> dict[str, type]:
    """Every component class of the package, by class name."""
    found: dict[str, type] = {}
    for key, obj in keras.saving.get_custom_objects().items():
        if key.startswith("keras_capsules>") and isinstance(obj, type):
            found[obj.__name__] = obj
    for module_name in EXPORTING_MODULES:
        module = getattr(keras_capsules, module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, COMPONENT_TYPES):
                found[obj.__name__] = obj
    for info in pkgutil.walk_packages(
        keras_capsules.__path__, prefix="keras_capsules."
    ):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, COMPONENT_TYPES)
                and obj.__module__.startswith("keras_capsules")
            ):
                found[obj.__name__] = obj
    return found


# --- Inputs ------------------------------------------------------------------


def _normal(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _uniform(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=shape).astype("float32")


def _one_hot(batch: int, classes: int) -> np.ndarray:
    return np.eye(classes, dtype="float32")[np.arange(batch) % classes]


def _scaled(array: np.ndarray, scale: float) -> np.ndarray:
    return (array * np.float32(scale)).astype("float32")


def _matrix_inputs(shape: tuple[int, ...], scale: float) -> list[np.ndarray]:
    # Activations are probabilities: scaled like the poses, then kept <= 1.
    poses = _scaled(_normal(*shape), scale)
    activations = np.minimum(_scaled(_uniform(*shape[:-1], seed=1), scale), 1.0)
    return [poses, activations.astype("float32")]


IMAGE = (8, 8, 1)
SMALL_CAPSNET = dict(
    image_shape=IMAGE,
    num_classes=2,
    routing_iterations=2,
    conv_filters=4,
    conv_kernel_size=3,
    primary_capsule_types=2,
    primary_capsule_dim=4,
    primary_kernel_size=3,
    primary_strides=2,
    capsule_dim=4,
    decoder_units=(8,),
)
SMALL_EFFICIENT_CAPSNET = dict(
    image_shape=IMAGE,
    num_classes=2,
    conv_filters=(4, 8),
    conv_kernel_sizes=(3, 3),
    conv_strides=(1, 2),
    primary_capsule_dim=4,
    capsule_dim=4,
    decoder_units=(8,),
)
SMALL_MATRIX_CAPSNET = dict(
    image_shape=(6, 6, 1),
    num_classes=2,
    conv_filters=4,
    conv_kernel_size=3,
    conv_strides=1,
    primary_capsule_types=2,
    conv_capsule_types=(2,),
    conv_capsule_kernel_sizes=(3,),
    conv_capsule_strides=(1,),
    pose_size=4,
    routing_iterations=1,
)

IMAGE_BAD_INPUTS = (
    BadInput((2, 9, 8, 1)),
    BadInput((2, 8, 8)),
    BadInput((2, 8, 8, 3)),
)

ENTRIES: dict[str, Entry] = {
    # --- Layers --------------------------------------------------------------
    "Length": Entry(
        LAYER,
        inputs=lambda s: _scaled(_normal(2, 3, 4), s),
        bad_inputs=(BadInput((2,)), BadInput((2, 4))),
    ),
    "Mask": Entry(
        LAYER,
        inputs=lambda s: _scaled(_normal(2, 3, 4), s),
        bad_inputs=(
            BadInput((2, 12)),
            BadInput((2, 3, 4, 1)),
            BadInput([(2, 3, 4), (2, 4)]),
            BadInput([(2, 3, 4), (2, 3, 1)]),
        ),
    ),
    "PrimaryCapsule": Entry(
        LAYER,
        config=dict(capsule_types=2, capsule_dim=4, kernel_size=3, strides=2),
        inputs=lambda s: _scaled(_uniform(2, 5, 5, 2), s),
        bad_inputs=(
            BadInput((2, 5, 5)),
            BadInput((2, 1, 5, 5, 2)),
            BadInput((2, 2, 2, 2)),
        ),
    ),
    "DepthwisePrimaryCapsule": Entry(
        LAYER,
        config=dict(capsule_dim=4, kernel_size=3),
        inputs=lambda s: _scaled(_uniform(2, 4, 4, 2), s),
        bad_inputs=(
            BadInput((2, 4, 4)),
            BadInput((2, 1, 4, 4, 2)),
            BadInput((2, 2, 2, 2)),
            BadInput((2, 3, 3, 2)),  # 2 features: no capsule of 4
        ),
    ),
    "RoutingCapsule": Entry(
        LAYER,
        config=dict(num_capsules=3, capsule_dim=4, routing_iterations=2),
        inputs=lambda s: _scaled(_normal(2, 5, 4), s),
        bad_inputs=(BadInput((2, 8)), BadInput((2, 5, 4, 1))),
    ),
    "SelfAttentionRoutingCapsule": Entry(
        LAYER,
        config=dict(num_capsules=3, capsule_dim=4),
        inputs=lambda s: _scaled(_normal(2, 5, 4), s),
        bad_inputs=(BadInput((2, 8)), BadInput((2, 5, 4, 1))),
    ),
    "PrimaryMatrixCapsule": Entry(
        LAYER,
        config=dict(capsule_types=2, pose_size=4),
        inputs=lambda s: _scaled(_uniform(2, 3, 3, 4), s),
        bad_inputs=(BadInput((2, 3, 3)), BadInput((2, 1, 3, 3, 4))),
    ),
    "ConvMatrixCapsule": Entry(
        LAYER,
        config=dict(capsule_types=2, kernel_size=2, routing_iterations=1),
        inputs=lambda s: _matrix_inputs((2, 3, 3, 2, 4), s),
        bad_inputs=(
            BadInput([(2, 3, 3, 2), (2, 3, 3, 2)], named=(0,)),
            BadInput([(2, 3, 3, 2, 4), (2, 3, 3, 3)]),
            BadInput([(2, 3, 3, 2, 3), (2, 3, 3, 2)], named=(0,)),
            BadInput([(2, 1, 1, 2, 4), (2, 1, 1, 2)], named=(0,)),
        ),
    ),
    "ClassMatrixCapsule": Entry(
        LAYER,
        config=dict(num_classes=2, routing_iterations=1),
        inputs=lambda s: _matrix_inputs((2, 2, 2, 2, 4), s),
        bad_inputs=(
            BadInput([(2, 2, 2, 2), (2, 2, 2, 2)], named=(0,)),
            BadInput([(2, 2, 2, 2, 4), (2, 2, 2, 3)]),
            BadInput([(2, 2, 2, 2, 3), (2, 2, 2, 2)], named=(0,)),
        ),
    ),
    "BaseRoutingCapsule": Entry(
        BASE,
        config=dict(num_capsules=3, capsule_dim=4),
        not_applicable={
            check: "abstract: `routing_op` is the subclasses' (swept)"
            for check in CHECKS
            if check != "bad_arguments"
        },
    ),
    "BaseMatrixCapsule": Entry(
        BASE,
        config=dict(capsule_types=2, routing_iterations=1),
        not_applicable={
            check: "abstract: the routing is the subclasses' (swept)"
            for check in CHECKS
            if check != "bad_arguments"
        },
    ),
    # --- Losses --------------------------------------------------------------
    "MarginLoss": Entry(
        LOSS,
        inputs=lambda s: (_one_hot(4, 3), _scaled(_uniform(4, 3), s)),
        bad_inputs=(
            BadInput([(2, 3), (2, 4)]),
            BadInput([(3, 3), (2, 3)]),
            BadInput([(2, 3), (2, 3, 1)]),
        ),
    ),
    "SpreadLoss": Entry(
        LOSS,
        inputs=lambda s: (_one_hot(4, 3), _scaled(_uniform(4, 3), s)),
        bad_inputs=(
            BadInput([(2, 3), (2, 4)]),
            BadInput([(3, 3), (2, 3)]),
            BadInput([(2, 3), (2, 3, 1)]),
        ),
    ),
    "ReconstructionLoss": Entry(
        LOSS,
        inputs=lambda s: (
            _uniform(2, 4, 4, 1, seed=1),
            _scaled(_uniform(2, 4, 4, 1), s),
        ),
        bad_inputs=(
            BadInput([(2, 4, 4, 1), (2, 16)]),
            BadInput([(2, 4), (3, 4)]),
        ),
    ),
    # --- Models --------------------------------------------------------------
    "CapsNet": Entry(
        MODEL,
        config=SMALL_CAPSNET,
        inputs=lambda s: _scaled(_uniform(2, *IMAGE), s),
        bad_inputs=IMAGE_BAD_INPUTS,
        bad_arguments=(({"num_classes": 1}, "num_classes"),),
    ),
    "EfficientCapsNet": Entry(
        MODEL,
        config=SMALL_EFFICIENT_CAPSNET,
        inputs=lambda s: _scaled(_uniform(2, *IMAGE), s),
        bad_inputs=IMAGE_BAD_INPUTS,
        bad_arguments=(({"num_classes": 1}, "num_classes"),),
    ),
    "MatrixCapsNet": Entry(
        MODEL,
        config=SMALL_MATRIX_CAPSNET,
        inputs=lambda s: _scaled(_uniform(2, 6, 6, 1), s),
        bad_inputs=(BadInput((2, 7, 6, 1)), BadInput((2, 6, 6))),
        bad_arguments=(({"num_classes": 1}, "num_classes"),),
    ),
    "CapsuleClassifier": Entry(
        BASE,
        config=dict(image_shape=IMAGE, num_classes=2),
        not_applicable={
            check: "abstract: the encoder is the subclasses' (swept)"
            for check in CHECKS
            if check != "bad_arguments"
        },
    ),
    "BaseCapsuleClassifier": Entry(
        BASE,
        config=dict(
            image_shape=IMAGE,
            num_classes=2,
            capsule_dim=4,
            use_decoder=True,
            decoder_units=(8,),
        ),
        not_applicable={
            check: "abstract: the encoder is the subclasses' (swept)"
            for check in CHECKS
            if check != "bad_arguments"
        },
    ),
    # --- Callbacks -----------------------------------------------------------
    "SpreadMarginSchedule": Entry(
        CALLBACK,
        config=dict(initial_margin=0.2, final_margin=0.9, epochs=3),
        bad_arguments=(({"loss": "spread_loss"}, "loss"),),
        not_applicable={
            "bad_inputs": "a callback takes no tensors",
            "symbolic_bad_inputs": "a callback takes no tensors",
            "extreme_inputs": "a callback takes no tensors",
            "saving": "Keras saves no callbacks in .keras files",
        },
    ),
    # --- Inverted dot-product attention -----------------------
    "InvertedAttentionCapsule": Entry(
        LAYER,
        config=dict(num_capsules=3, capsule_dim=4, matrix_pose=True),
        inputs=lambda s: _scaled(_normal(2, 5, 4), s),
        bad_inputs=(BadInput((2, 8)), BadInput((2, 5, 4, 1)), BadInput((2, 5, 3))),
    ),
    "ConvInvertedAttentionCapsule": Entry(
        LAYER,
        config=dict(capsule_types=2, capsule_dim=4, kernel_size=2, matrix_pose=True),
        inputs=lambda s: _scaled(_normal(2, 3, 3, 2, 4), s),
        bad_inputs=(
            BadInput((2, 3, 3, 2)),
            BadInput((2, 1, 3, 2, 4)),
            BadInput((2, 3, 3, 2, 3)),
        ),
    ),
    "LayerNormPrimaryCapsule": Entry(
        LAYER,
        config=dict(capsule_types=2, capsule_dim=4, kernel_size=2),
        inputs=lambda s: _scaled(_uniform(2, 4, 4, 3), s),
        bad_inputs=(BadInput((2, 4, 4)), BadInput((2, 1, 4, 3))),
    ),
    "BaseInvertedAttentionCapsule": Entry(
        BASE,
        config=dict(capsule_dim=4),
        not_applicable={
            check: "abstract: the kernel shape and routing are the subclasses'"
            for check in CHECKS
            if check != "bad_arguments"
        },
    ),
    "InvertedAttentionCapsNet": Entry(
        MODEL,
        config=dict(
            image_shape=IMAGE,
            num_classes=2,
            stem_filters=4,
            stage_filters=(4,),
            stage_blocks=(1,),
            stage_strides=(2,),
            primary_capsule_types=2,
            conv_capsule_types=(2,),
            conv_capsule_kernel_sizes=(2,),
            conv_capsule_strides=(1,),
            capsule_dim=4,
        ),
        inputs=lambda s: _scaled(_uniform(2, *IMAGE), s),
        bad_inputs=IMAGE_BAD_INPUTS,
        bad_arguments=(({"num_classes": 1}, "num_classes"),),
    ),
}

# Constructor arguments of the base classes (`keras.layers.Layer`, `Loss`,
# `Model`): Keras checks them.
KERAS_ARGUMENTS = {"name", "dtype", "reduction", "trainable", "autocast"}
BAD_INTS = (0, -1, 2.5, 2.0, True, "2", None)
BAD_FLOATS = (-1.0, float("nan"), float("inf"), "0.5", True, None)
BAD_STRINGS = ("not-a-choice", 3)


def constructor_arguments(cls: type, entry: Entry) -> dict[str, Any]:
    """The value of each named constructor argument, as the entry makes it."""
    values = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (
            parameter.VAR_POSITIONAL,
            parameter.VAR_KEYWORD,
        ):
            continue
        if name in entry.config:
            values[name] = entry.config[name]
        elif parameter.default is not parameter.empty:
            values[name] = parameter.default
    return values


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and bool(value) and all(map(_is_int, value))


def bad_values(name: str, value: Any) -> tuple[Any, ...]:
    """Wrong values of the kind of `value`, an argument's valid value."""
    if name in KERAS_ARGUMENTS or name.endswith(
        ("_initializer", "_regularizer", "_constraint")
    ):
        return ()
    if isinstance(value, bool) or value is None:
        return ()
    if _is_int(value):
        return BAD_INTS
    if isinstance(value, float):
        return BAD_FLOATS
    if isinstance(value, str):
        return BAD_STRINGS
    if _is_int_tuple(value):
        rest = value[1:]
        return ((0, *rest), (-1, *rest), (2.5, *rest), "3")
    return ()


def derived_bad_arguments(
    cls: type, entry: Entry
) -> list[tuple[dict[str, Any], str, str | None]]:
    """`(overrides, argument, xfail reason)` for every bad constructor call."""
    cases = []
    parameters = inspect.signature(cls.__init__).parameters
    for name, value in constructor_arguments(cls, entry).items():
        if name in entry.skip_arguments:
            continue
        for bad in bad_values(name, value):
            if bad is None and parameters[name].default is None:
                continue  # `None` is this argument's default: valid
            cases.append(({name: bad}, name, entry.xfail_arguments.get(name)))
    for overrides, name in entry.bad_arguments:
        label = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        cases.append((overrides, name, entry.xfail_arguments.get(label)))
    return cases


def with_numpy_integers(value: Any) -> Any:
    """`value` with every Python int, alone or in a tuple, a NumPy integer."""
    if _is_int(value):
        return np.int64(value)
    if _is_int_tuple(value):
        return tuple(np.int32(v) for v in value)
    return value
