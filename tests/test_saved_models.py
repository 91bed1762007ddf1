"""Models saved by keras-capsules 0.1.0 load and compute what they computed.

`tests/fixtures/*_v0_1_0.keras` were saved on TensorFlow before the ops
package, the routing base class and the argument renames
(tests/fixtures/README.md). Every backend loads them with no
`custom_objects` and no deprecation warning (their configs carry the old
argument names), and reproduces the saved outputs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_capsules
from keras_capsules.losses import MarginLoss

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def saved() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "outputs_v0_1_0.npz") as outputs:
        return dict(outputs)


def _load(name: str) -> keras.Model:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.saving.load_model(FIXTURES / name)
    old_names = [
        str(w.message)
        for w in caught
        if issubclass(w.category, FutureWarning) and "deprecated" in str(w.message)
    ]
    assert not old_names, f"loading {name} warned: {old_names}"
    return model


def assert_close_to_saved(actual: np.ndarray, expected: np.ndarray, what: str):
    # float32 on another backend and another convolution: 1e-5 of the
    # largest saved value, plus a relative 1e-4.
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(
        actual, expected, rtol=1e-4, atol=1e-5 * scale, err_msg=what
    )


def test_capsnet_v0_1_0_loads_with_its_old_argument_names(saved):
    model = _load("capsnet_v0_1_0.keras")
    assert type(model) is keras_capsules.models.CapsNet
    assert model.image_shape == (20, 20, 1)
    assert model.use_decoder is True
    assert model.primary_capsule_types == 4
    assert model.primary_capsule.capsule_types == 4
    assert model.primary_conv_implementation == "direct"  # as saved

    # v0.1's `predict(images)` gave both outputs; now the class scores, and
    # the reconstructions (of the longest capsule, as then) by `decode`.
    lengths = model.predict(saved["capsnet_images"], verbose=0)
    reconstructions = keras.ops.convert_to_numpy(
        model.decode(model.encode(saved["capsnet_images"]))
    )

    assert_close_to_saved(lengths, saved["capsnet_lengths"], "lengths")
    assert_close_to_saved(
        reconstructions, saved["capsnet_reconstructions"], "reconstructions"
    )


def test_capsnet_v0_1_0_saves_again_under_the_new_names(saved, tmp_path):
    model = _load("capsnet_v0_1_0.keras")
    config = model.get_config()
    assert {"image_shape", "use_decoder", "primary_capsule_types"} <= set(config)
    assert not {"input_shape", "decoder", "primary_capsules"} & set(config)
    model.save(tmp_path / "capsnet.keras")
    reloaded = keras.saving.load_model(tmp_path / "capsnet.keras")
    lengths = reloaded.predict(saved["capsnet_images"], verbose=0)
    assert_close_to_saved(lengths, saved["capsnet_lengths"], "lengths after resave")


def test_functional_model_of_v0_1_0_layers_loads_compiled(saved):
    model = _load("layers_v0_1_0.keras")
    primary = model.get_layer("primary")
    routed = model.get_layer("routed")
    assert isinstance(primary, keras_capsules.PrimaryCapsule)
    assert primary.capsule_types == 2
    assert "num_capsules" not in primary.get_config()
    assert isinstance(routed, keras_capsules.RoutingCapsule)
    assert routed.routing_iterations == 2
    assert isinstance(model.loss, MarginLoss)

    lengths = model.predict(saved["layers_images"], verbose=0)

    assert_close_to_saved(lengths, saved["layers_lengths"], "lengths")
    # The coupling of the old layer is there for the asking.
    features = keras.Model(model.input, primary.output).predict(
        saved["layers_images"], verbose=0
    )
    _, coupling = routed(features, return_coupling=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(coupling).sum(axis=1), 1.0, atol=1e-5
    )


def test_functional_model_of_v0_1_0_layers_trains_on(saved):
    model = _load("layers_v0_1_0.keras")
    images = saved["layers_images"]
    labels = np.eye(3, dtype="float32")[[0, 2]]
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    logs = model.train_on_batch(images, labels, return_dict=True)
    assert np.isfinite(logs["loss"])
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
