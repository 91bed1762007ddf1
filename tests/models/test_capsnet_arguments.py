"""CapsNet's constructor: renamed arguments, NumPy integers, errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from keras_capsules.models import CapsNet
from tests.models.test_capsnet import SMALL

# Old name -> (new name, value), as of keras-capsules 0.1.0.
RENAMED = {
    "input_shape": ("image_shape", (20, 20, 1)),
    "decoder": ("use_decoder", False),
    "primary_capsules": ("primary_capsule_types", 2),
}


def _without(names):
    return {k: v for k, v in SMALL.items() if k not in names}


def _config(model):
    # Without the name, which differs between two models of one session.
    return {k: v for k, v in model.get_config().items() if k != "name"}


@pytest.mark.parametrize("old", RENAMED)
def test_old_keyword_warns_and_gives_the_same_model(old):
    new, value = RENAMED[old]
    with pytest.warns(FutureWarning, match=rf"`CapsNet\({old}=\.\.\.\)`.*`{new}`"):
        model = CapsNet(**_without([new]), **{old: value})
    expected = CapsNet(**_without([new]), **{new: value})
    assert _config(model) == _config(expected)
    assert getattr(model, new) == getattr(expected, new)
    assert old not in model.get_config()


def test_all_old_keywords_at_once():
    old = {name: value for name, (_, value) in RENAMED.items()}
    new = {name: value for name, value in RENAMED.values()}
    with pytest.warns(FutureWarning) as records:
        model = CapsNet(**_without(new), **old)
    assert len([r for r in records if r.category is FutureWarning]) == 3
    assert _config(model) == _config(CapsNet(**_without(new), **new))


@pytest.mark.parametrize("old", RENAMED)
def test_old_and_new_keyword_together_are_rejected(old):
    new, value = RENAMED[old]
    with pytest.raises(ValueError, match=rf"Pass `{new}` only.*{old}="):
        CapsNet(**{**SMALL, new: value}, **{old: value})


def test_new_keywords_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        CapsNet(**SMALL)


def test_old_config_loads_silently():
    config = CapsNet(**SMALL).get_config()
    old_config = dict(config)
    for old, (new, _) in RENAMED.items():
        old_config[old] = old_config.pop(new)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model = CapsNet.from_config(old_config)
    assert model.get_config() == config


def test_numpy_integers_are_integers():
    # Sizes often come out of NumPy (array shapes, `np.prod`): accepted and
    # stored as Python ints, so that the config stays JSON.
    model = CapsNet(
        image_shape=np.array([20, 20, 1]),
        num_classes=np.int64(3),
        routing_iterations=np.int32(2),
        conv_filters=np.int64(8),
        conv_kernel_size=np.int16(9),
        primary_capsule_types=np.int64(4),
        primary_capsule_dim=np.int64(4),
        primary_kernel_size=np.int64(9),
        primary_strides=np.int64(2),
        capsule_dim=np.int64(6),
        decoder_units=np.array([16]),
    )
    config = model.get_config()
    assert config["image_shape"] == (20, 20, 1)
    for name in (
        "num_classes",
        "routing_iterations",
        "conv_filters",
        "conv_kernel_size",
        "primary_capsule_types",
        "primary_capsule_dim",
        "primary_kernel_size",
        "primary_strides",
        "capsule_dim",
    ):
        assert type(config[name]) is int, (name, type(config[name]))
    for name in ("image_shape", "decoder_units"):
        assert all(type(size) is int for size in config[name]), config[name]
    json.dumps(config)
    assert _config(model) == _config(CapsNet(**{**SMALL, "routing_iterations": 2}))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_shape": (28, 28)}, "`image_shape`.*Received: image_shape="),
        ({"image_shape": (28, 28, 0)}, "`image_shape`.*Received: image_shape="),
        ({"image_shape": (16, 28, 1)}, "at least 17x17"),
        ({"num_classes": 0}, "`num_classes`.*Received: num_classes=0"),
        ({"num_classes": np.float32(3)}, "`num_classes`"),
        ({"routing_iterations": 0}, "`routing_iterations`"),
        ({"capsule_dim": 2.5}, "`capsule_dim`"),
        ({"primary_capsule_types": 0}, "`primary_capsule_types`"),
        ({"decoder_units": (512, 0)}, "`decoder_units`"),
        ({"decoder_units": 512}, "`decoder_units`"),
        (
            {"primary_conv_implementation": "fft"},
            "`primary_conv_implementation`.*primary_conv_implementation='fft'",
        ),
    ],
)
def test_invalid_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CapsNet(**{**SMALL, **kwargs})


def test_invalid_old_keyword_is_named_by_its_new_name():
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="`image_shape`"):
        CapsNet(**_without(["image_shape"]), input_shape=(28, 28))
