"""Bad arguments and bad shapes raise a ValueError that names them.

Never a backend-internal error (TensorFlow's InvalidArgumentError, a torch
RuntimeError, a JAX TypeError): the message is part of the interface, so
each case matches the argument's name or the shapes received. These are the
exact messages; `test_registry_sweep.py` runs the generic checks on every
component the package has.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

import keras_capsules
from keras_capsules import ops as capsule_ops

BAD_COUNTS = [0, -1, 2.0, 2.5, True, False, None, "4", np.float32(3.0)]
BAD_PAIRS = [0, -3, 3.0, True, None, "3", (3,), (3, 3, 3), (3, 0), (3, -1), (3, 2.0)]


def zeros(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype="float32")


def invalid_value(argument: str) -> str:
    return rf"Received an invalid value for `{argument}`.*Received: {argument}="


# --- Constructor arguments -------------------------------------------------


@pytest.mark.parametrize("value", BAD_COUNTS, ids=repr)
@pytest.mark.parametrize("argument", ["capsule_types", "capsule_dim"])
def test_primary_capsule_rejects_bad_counts(argument: str, value) -> None:
    kwargs = {"capsule_types": 4, "capsule_dim": 4, "kernel_size": 3, argument: value}
    with pytest.raises(ValueError, match=invalid_value(argument)):
        keras_capsules.PrimaryCapsule(**kwargs)


@pytest.mark.parametrize("value", BAD_PAIRS, ids=repr)
@pytest.mark.parametrize("argument", ["kernel_size", "strides"])
def test_primary_capsule_rejects_bad_windows(argument: str, value) -> None:
    kwargs = {"capsule_types": 4, "capsule_dim": 4, "kernel_size": 3, argument: value}
    with pytest.raises(ValueError, match=invalid_value(argument)):
        keras_capsules.PrimaryCapsule(**kwargs)


@pytest.mark.parametrize("value", ["full", "causal", "", None, 3, ("same",)], ids=repr)
def test_primary_capsule_rejects_bad_padding(value) -> None:
    with pytest.raises(ValueError, match=invalid_value("padding")):
        keras_capsules.PrimaryCapsule(4, 4, 3, padding=value)


def test_primary_capsule_rejects_bad_data_format() -> None:
    with pytest.raises(ValueError, match=invalid_value("data_format")):
        keras_capsules.PrimaryCapsule(4, 4, 3, data_format="NHWC")


@pytest.mark.parametrize("value", BAD_COUNTS, ids=repr)
@pytest.mark.parametrize(
    "argument", ["num_capsules", "capsule_dim", "routing_iterations"]
)
def test_routing_capsule_rejects_bad_counts(argument: str, value) -> None:
    kwargs = {"num_capsules": 3, "capsule_dim": 8, argument: value}
    with pytest.raises(ValueError, match=invalid_value(argument)):
        keras_capsules.RoutingCapsule(**kwargs)


@pytest.mark.parametrize("value", [0, -1, 1.0, True])
def test_dynamic_routing_rejects_bad_iterations(value) -> None:
    with pytest.raises(ValueError, match=invalid_value("routing_iterations")):
        capsule_ops.dynamic_routing(zeros(2, 5, 4), zeros(5, 3, 4, 2), value)


@pytest.mark.parametrize(
    "inputs_shape, kernel_shape",
    [((2, 5, 4), (6, 3, 4, 2)), ((2, 5, 4), (5, 3, 3, 2)), ((5, 4), (5, 3, 4, 2))],
)
def test_dynamic_routing_rejects_mismatched_shapes(inputs_shape, kernel_shape) -> None:
    received = re.escape(f"inputs.shape={inputs_shape}, kernel.shape={kernel_shape}")
    with pytest.raises(ValueError, match=rf"`dynamic_routing`.*{received}"):
        capsule_ops.dynamic_routing(zeros(*inputs_shape), zeros(*kernel_shape))


@pytest.mark.parametrize("argument", ["m_plus", "m_minus", "down_weight"])
@pytest.mark.parametrize("value", [-0.1, "0.9", None, True])
def test_margin_loss_rejects_bad_margins(argument: str, value) -> None:
    with pytest.raises(ValueError, match=invalid_value(argument)):
        keras_capsules.MarginLoss(**{argument: value})


@pytest.mark.parametrize("function", [capsule_ops.squash, capsule_ops.capsule_length])
@pytest.mark.parametrize("value", [0.0, -1e-7, float("nan")])
def test_ops_reject_bad_epsilon(function, value) -> None:
    with pytest.raises(ValueError, match=invalid_value("epsilon")):
        function(zeros(2, 4), epsilon=value)


# NumPy integers for every integer argument of every component: the
# registry sweep (`test_registry_sweep.py::test_numpy_integers_are_stored_as_ints`).


# --- Shapes ----------------------------------------------------------------


@pytest.mark.parametrize("symbolic", [False, True], ids=["eager", "symbolic"])
@pytest.mark.parametrize("shape", [(2, 12, 12), (2, 3, 12, 12, 1), (2, 12)])
def test_primary_capsule_rejects_wrong_rank(shape, symbolic: bool) -> None:
    layer = keras_capsules.PrimaryCapsule(4, 4, 3)
    inputs = keras.Input(shape[1:]) if symbolic else zeros(*shape)
    with pytest.raises(ValueError, match=rf"expected ndim=4, found ndim={len(shape)}"):
        layer(inputs)


@pytest.mark.parametrize(
    "image, kernel_size, strides",
    [((4, 4), 5, 1), ((4, 9), (5, 3), 1), ((9, 4), (3, 5), 2), ((1, 1), 2, 1)],
)
def test_primary_capsule_rejects_images_smaller_than_the_kernel(
    image, kernel_size, strides
) -> None:
    layer = keras_capsules.PrimaryCapsule(4, 4, kernel_size, strides=strides)
    pattern = (
        r"kernel_size=\(\d+, \d+\).*Received: input_shape=\((None|2), \d+, \d+, 1\)"
    )
    with pytest.raises(ValueError, match=pattern):
        layer(zeros(2, *image, 1))
    with pytest.raises(ValueError, match=pattern):
        keras_capsules.PrimaryCapsule(4, 4, kernel_size, strides=strides)(
            keras.Input((*image, 1))
        )


def test_primary_capsule_same_padding_accepts_small_images() -> None:
    layer = keras_capsules.PrimaryCapsule(
        4, 4, 5, padding="same", kernel_initializer="zeros"
    )
    capsules = layer(keras.Input((4, 4, 1)))
    assert tuple(capsules.shape) == (None, 4 * 4 * 4, 4)


def test_primary_capsule_rejects_unknown_channels() -> None:
    with pytest.raises(ValueError, match=r"channel dimension.*\(None, 12, 12, None\)"):
        keras_capsules.PrimaryCapsule(4, 4, 3)(keras.Input((12, 12, None)))


def test_primary_capsule_rejects_other_channels_after_build() -> None:
    layer = keras_capsules.PrimaryCapsule(4, 4, 3, kernel_initializer="zeros")
    layer.build((None, 12, 12, 1))
    with pytest.raises(ValueError, match=r"axis -1.*value 1.*\(2, 12, 12, 2\)"):
        layer(zeros(2, 12, 12, 2))


@pytest.mark.parametrize("symbolic", [False, True], ids=["eager", "symbolic"])
@pytest.mark.parametrize("shape", [(2, 8), (2, 5, 8, 1)])
def test_routing_capsule_rejects_wrong_rank(shape, symbolic: bool) -> None:
    layer = keras_capsules.RoutingCapsule(3, 8)
    inputs = keras.Input(shape[1:]) if symbolic else zeros(*shape)
    with pytest.raises(ValueError, match=rf"expected ndim=3, found ndim={len(shape)}"):
        layer(inputs)


@pytest.mark.parametrize("shape", [(None, 8), (5, None), (None, None)])
def test_routing_capsule_rejects_unknown_capsules(shape) -> None:
    with pytest.raises(ValueError, match=re.escape(f"input_shape={(None, *shape)}")):
        keras_capsules.RoutingCapsule(3, 8)(keras.Input(shape))


def test_routing_capsule_after_primary_capsule_on_unknown_image_size() -> None:
    # Unknown image size -> unknown capsule count -> no routing weights.
    capsules = keras_capsules.PrimaryCapsule(4, 4, 3)(keras.Input((None, None, 1)))
    with pytest.raises(
        ValueError, match=r"number and the dimension.*\(None, None, 4\)"
    ):
        keras_capsules.RoutingCapsule(3, 8)(capsules)


def test_routing_capsule_rejects_other_capsule_count_after_build() -> None:
    layer = keras_capsules.RoutingCapsule(3, 8, kernel_initializer="zeros")
    layer.build((None, 5, 4))
    with pytest.raises(ValueError, match=r"axis 1.*value 5.*\(2, 6, 4\)"):
        layer(zeros(2, 6, 4))


def test_length_rejects_rank_1() -> None:
    with pytest.raises(ValueError, match=r"min_ndim=2, found ndim=1"):
        keras_capsules.Length()(zeros(4))


@pytest.mark.parametrize("symbolic", [False, True], ids=["eager", "symbolic"])
def test_length_rejects_rank_2(symbolic: bool) -> None:
    # (batch, capsule_dim) is lengths or flattened capsules passed by mistake
    # far more often than one capsule per example.
    inputs = keras.Input((4,)) if symbolic else zeros(2, 4)
    batch = "None" if symbolic else "2"
    with pytest.raises(
        ValueError,
        match=rf"`Length` expects capsules of shape \(batch, num_capsules, "
        rf"capsule_dim\).*Received: input_shape=\({batch}, 4\)",
    ):
        keras_capsules.Length()(inputs)


def test_length_checks_the_rank_after_build() -> None:
    layer = keras_capsules.Length()
    layer(zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"min_ndim=3, found ndim=2"):
        layer(zeros(2, 4))


@pytest.mark.parametrize("labels_shape", [(2, 4), (2, 2), (3, 3), (2, 3, 1), (2,)])
def test_mask_rejects_wrong_labels(labels_shape) -> None:
    received = re.escape(f"labels.shape={labels_shape}")
    with pytest.raises(ValueError, match=rf"one-hot labels of shape.*{received}"):
        keras_capsules.Mask()([zeros(2, 3, 4), zeros(*labels_shape)])


@pytest.mark.parametrize("labels_shape", [(4,), (2,), (3, 1), ()])
def test_mask_rejects_wrong_symbolic_labels(labels_shape) -> None:
    received = re.escape(f"labels.shape={(None, *labels_shape)}")
    with pytest.raises(ValueError, match=rf"one-hot labels of shape.*{received}"):
        keras_capsules.Mask()([keras.Input((3, 4)), keras.Input(labels_shape)])


@pytest.mark.parametrize("shape", [(2, 12), (2, 3, 4, 1)])
def test_mask_rejects_wrong_capsule_rank(shape) -> None:
    with pytest.raises(ValueError, match=re.escape(f"capsules.shape={shape}")):
        keras_capsules.Mask()(zeros(*shape))


def test_mask_rejects_three_inputs() -> None:
    with pytest.raises(ValueError, match=r"Received 3 inputs"):
        keras_capsules.Mask()([zeros(2, 3, 4), zeros(2, 3), zeros(2, 3)])


LOSS_SHAPES = [
    ((2, 3), (2, 4)),
    ((3, 3), (2, 3)),
    ((2, 3), (2, 3, 1)),
    ((1, 3), (2, 3)),
]


@pytest.mark.parametrize("true_shape, pred_shape", LOSS_SHAPES)
def test_margin_loss_rejects_shape_mismatch(true_shape, pred_shape) -> None:
    shapes = re.escape(f"y_true.shape={true_shape}, y_pred.shape={pred_shape}")
    with pytest.raises(ValueError, match=shapes):
        keras_capsules.MarginLoss()(zeros(*true_shape), zeros(*pred_shape))
    # The functional form, public in `keras_capsules.ops`, checks too
    # instead of failing inside the backend or silently broadcasting.
    with pytest.raises(ValueError, match=shapes):
        capsule_ops.margin_loss(zeros(*true_shape), zeros(*pred_shape))


@pytest.mark.parametrize(
    "true_shape, pred_shape",
    [((2, 12, 12, 1), (2, 144)), ((2, 4), (3, 4)), ((1, 4), (2, 4))],
)
def test_reconstruction_loss_rejects_shape_mismatch(true_shape, pred_shape) -> None:
    shapes = re.escape(f"y_true.shape={true_shape}, y_pred.shape={pred_shape}")
    with pytest.raises(ValueError, match=shapes):
        keras_capsules.losses.ReconstructionLoss()(
            zeros(*true_shape), zeros(*pred_shape)
        )
    with pytest.raises(ValueError, match=shapes):
        capsule_ops.reconstruction_loss(zeros(*true_shape), zeros(*pred_shape))


def test_margin_loss_shape_mismatch_in_fit() -> None:
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss=keras_capsules.MarginLoss())
    with pytest.raises(ValueError, match=r"y_true.shape=\((None|4), 4\)"):
        model.fit(zeros(4, 5), zeros(4, 4), verbose=0)
