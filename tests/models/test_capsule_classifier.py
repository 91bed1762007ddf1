"""Capsule models used like any Keras classifier (`CapsuleClassifier`)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_capsules.models import (
    CapsNet,
    CapsuleClassifier,
    EfficientCapsNet,
    MatrixCapsNet,
    TrainingRecipe,
    list_presets,
)
from keras_capsules.ops import margin_loss, reconstruction_loss
from tests.classifier_harness import run_classifier_test
from tests.models import test_capsnet, test_efficient_capsnet

# The small configurations of the models' own tests.
SMALL_CAPSNET = test_capsnet.SMALL
SMALL_EFFICIENT = test_efficient_capsnet.SMALL
SMALL_MATRIX = dict(
    image_shape=(24, 24, 1),
    num_classes=3,
    conv_filters=4,
    primary_capsule_types=2,
    conv_capsule_types=(2, 2),
    routing_iterations=2,
)
MODELS = {
    "capsnet": (CapsNet, SMALL_CAPSNET),
    "efficient_capsnet": (EfficientCapsNet, SMALL_EFFICIENT),
    "matrix_capsnet": (MatrixCapsNet, SMALL_MATRIX),
}


def _data(config: dict, count: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((count, *config["image_shape"])).astype("float32")
    labels = np.arange(count) % config["num_classes"]
    return images, labels


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_keeps_the_classifier_contract(name, tmp_path):
    model_cls, config = MODELS[name]
    images, labels = _data(config)
    run_classifier_test(model_cls, config, images, labels, tmp_path)


def test_every_model_is_a_capsule_classifier_with_a_recipe():
    for model_cls, _ in MODELS.values():
        assert issubclass(model_cls, CapsuleClassifier)
        assert isinstance(model_cls.recipe, TrainingRecipe)
        assert model_cls.recipe.source


def test_the_loss_is_margin_plus_weighted_reconstruction_of_the_true_class():
    images, labels = _data(SMALL_CAPSNET)
    model = CapsNet(**SMALL_CAPSNET)
    # Fresh capsules are too short for the decoder to tell them apart:
    # longer capsules and a steeper decoder make the masked class show.
    for layer, factor in ((model.class_capsule, 30.0), (model.decoder, 30.0)):
        for variable in layer.trainable_variables:
            variable.assign(variable * factor)
    weight = 0.5  # large, so that a wrong reconstruction term shows
    model.compile(optimizer="sgd", reconstruction_weight=weight)
    loss = model.evaluate(images, labels, batch_size=6, verbose=0, return_dict=True)

    one_hot = np.eye(3, dtype="float32")[labels]
    capsules = model.encode(images)
    lengths = keras.ops.convert_to_numpy(model.class_scores(capsules))
    margin = np.mean(keras.ops.convert_to_numpy(margin_loss(one_hot, lengths)))
    true_class = keras.ops.convert_to_numpy(
        reconstruction_loss(images, model.decode(capsules, one_hot))
    )
    predicted_class = keras.ops.convert_to_numpy(
        reconstruction_loss(images, model.decode(capsules))
    )
    expected = margin + weight * np.mean(true_class)
    np.testing.assert_allclose(loss["loss"], expected, rtol=1e-4)
    # The decoder sees the labelled capsule, not the longest one.
    assert abs(np.mean(true_class) - np.mean(predicted_class)) > 1e-3


def test_training_encodes_each_batch_once():
    """`compute_loss` reuses the call's capsules instead of encoding again."""
    images, labels = _data(SMALL_CAPSNET)
    model = CapsNet(**SMALL_CAPSNET)
    counts = {"call": 0, "encode": 0}
    call, encode = model.call, model.encode

    def counted_call(*args, **kwargs):
        counts["call"] += 1
        return call(*args, **kwargs)

    def counted_encode(*args, **kwargs):
        counts["encode"] += 1
        return encode(*args, **kwargs)

    model.call, model.encode = counted_call, counted_encode
    # Eagerly, so that every step calls (not only every trace).
    model.compile(run_eagerly=True)
    # The first step builds the losses and metrics on a separate pass.
    model.fit(images, labels, batch_size=3, epochs=1, verbose=0)
    model.evaluate(images, labels, batch_size=3, verbose=0)
    counts.update(call=0, encode=0)
    model.fit(images, labels, batch_size=3, epochs=1, verbose=0)
    model.evaluate(images, labels, batch_size=3, verbose=0)
    assert counts["encode"] == counts["call"], counts


def test_integer_column_and_one_hot_labels_give_the_same_loss():
    images, labels = _data(SMALL_EFFICIENT)
    model = EfficientCapsNet(**SMALL_EFFICIENT)
    model.compile()
    one_hot = np.eye(3, dtype="float32")[labels]
    losses = [
        model.evaluate(images, y, batch_size=6, verbose=0, return_dict=True)
        for y in (labels, labels[:, None], one_hot)
    ]
    for logs in losses[1:]:
        np.testing.assert_allclose(logs["loss"], losses[0]["loss"], rtol=1e-5)
        assert logs["accuracy"] == losses[0]["accuracy"]


def test_multi_hot_labels_train():
    images, _ = _data(SMALL_CAPSNET)
    multi_hot = np.zeros((6, 3), "float32")
    multi_hot[np.arange(6), np.arange(6) % 3] = 1
    multi_hot[np.arange(6), (np.arange(6) + 1) % 3] = 1
    model = CapsNet(**SMALL_CAPSNET)
    model.compile()
    history = model.fit(images, multi_hot, batch_size=6, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_labels_of_a_wrong_shape_name_the_shape():
    images, _ = _data(SMALL_CAPSNET)
    model = CapsNet(**SMALL_CAPSNET)
    model.compile()
    with pytest.raises(ValueError, match=r"labels.shape=\(6, 5\)"):
        model.fit(images, np.zeros((6, 5), "float32"), batch_size=6, verbose=0)


def test_num_classes_below_two_is_refused():
    for model_cls, config in MODELS.values():
        with pytest.raises(ValueError, match="num_classes=1"):
            model_cls(**{**config, "num_classes": 1})


def test_the_v0_1_call_on_images_and_labels_warns_and_still_works():
    images, labels = _data(SMALL_CAPSNET)
    one_hot = np.eye(3, dtype="float32")[labels]
    model = CapsNet(**SMALL_CAPSNET)
    with pytest.warns(FutureWarning, match="deprecated"):
        lengths, reconstructions = model((images, one_hot))
    assert tuple(lengths.shape) == (6, 3)
    assert tuple(reconstructions.shape) == (6, 20, 20, 1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reconstructions),
        keras.ops.convert_to_numpy(model.decode(model.encode(images), one_hot)),
        atol=1e-6,
    )


def test_a_users_schedule_replaces_the_recipes():
    images, labels = _data(SMALL_CAPSNET)
    model = CapsNet(**SMALL_CAPSNET)
    model.compile()
    constant = keras.callbacks.LearningRateScheduler(lambda epoch: 0.01)
    history = model.fit(
        images, labels, epochs=2, batch_size=6, verbose=0, callbacks=[constant]
    )
    np.testing.assert_allclose(history.history["learning_rate"], [0.01, 0.01])


def test_matrix_capsnet_compile_grows_the_spread_margin():
    images, labels = _data(SMALL_MATRIX)
    model = MatrixCapsNet(**SMALL_MATRIX)
    model.compile()
    history = model.fit(images, labels, epochs=3, batch_size=6, verbose=0)
    np.testing.assert_allclose(history.history["spread_margin"], [0.2, 0.55, 0.9])


def test_recipe_learning_rates():
    recipe = EfficientCapsNet.recipe
    assert recipe.learning_rate_at(0) == pytest.approx(5e-4)
    assert recipe.learning_rate_at(1) == pytest.approx(5e-4 * 0.97)
    assert recipe.learning_rate_at(149) == pytest.approx(5e-5)
    assert CapsNet.recipe.learning_rate_at(2) == pytest.approx(1e-3 * 0.81)


def test_from_preset_refuses_another_class_and_unknown_names(tmp_path):
    model = CapsNet(**SMALL_CAPSNET)
    model.save_to_preset(tmp_path / "capsnet")
    with pytest.raises(ValueError, match="holds a `CapsNet`"):
        EfficientCapsNet.from_preset(str(tmp_path / "capsnet"))
    assert type(CapsuleClassifier.from_preset(str(tmp_path / "capsnet"))) is CapsNet
    with pytest.raises(ValueError, match="no_such_preset"):
        CapsNet.from_preset("no_such_preset")


def test_from_preset_overrides_the_config(tmp_path):
    model = CapsNet(**SMALL_CAPSNET)
    model.save_to_preset(tmp_path / "capsnet")
    revived = CapsNet.from_preset(str(tmp_path / "capsnet"), dtype="mixed_bfloat16")
    assert revived.dtype_policy.name == "mixed_bfloat16"
    metadata = json.loads((tmp_path / "capsnet" / "metadata.json").read_text())
    assert metadata["class_name"] == "CapsNet"
    assert metadata["parameters"] == model.count_params()


def test_a_preset_that_names_code_is_refused(tmp_path):
    """A crafted preset whose config holds a `Lambda` layer does not load."""
    model = CapsNet(**SMALL_CAPSNET)
    folder = tmp_path / "crafted"
    model.save_to_preset(folder)
    lambda_layer = keras.saving.serialize_keras_object(
        keras.layers.Lambda(lambda x: x * 2)
    )
    (folder / "config.json").write_text(json.dumps(lambda_layer))
    with pytest.raises(ValueError, match="(?i)lambda|safe_mode|unsafe"):
        CapsuleClassifier.from_preset(str(folder))


def test_list_presets_gives_metadata():
    for name, metadata in list_presets().items():
        assert metadata["class_name"], name
        assert 0.0 < metadata["test_accuracy"] <= 1.0, name
        assert metadata["command"], name


def test_the_shipped_efficient_capsnet_preset_reaches_its_published_accuracy():
    """No training: the preset's weights give its metadata's test accuracy."""
    import os
    from pathlib import Path

    path = Path(os.environ.get("MNIST_PATH", ""))
    if not path.is_file():
        pytest.skip(f"MNIST not found at MNIST_PATH={str(path)!r}")
    with np.load(path) as data:
        images = data["x_test"][..., None].astype("float32") / 255.0
        labels = data["y_test"]
    published = list_presets()["efficient_capsnet_mnist"]
    model = EfficientCapsNet.from_preset("efficient_capsnet_mnist")
    model.compile()
    logs = model.evaluate(images, labels, batch_size=500, verbose=0, return_dict=True)
    assert published["test_samples"] == len(images) == 10_000
    assert logs["accuracy"] == pytest.approx(published["test_accuracy"], abs=1e-4)
    assert logs["accuracy"] >= 0.995
