"""CapsNet: the paper's size, other image shapes, masking, saving."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_capsules.losses import MarginLoss, ReconstructionLoss
from keras_capsules.models import CapsNet

# Narrow enough to train in well under a second on a CPU.
SMALL = dict(
    input_shape=(20, 20, 1),
    num_classes=3,
    conv_filters=8,
    primary_capsules=4,
    primary_capsule_dim=4,
    capsule_dim=6,
    decoder_units=(16,),
)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _data(count=4, shape=(20, 20, 1), num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(count, *shape)).astype("float32")
    labels = np.eye(num_classes, dtype="float32")[rng.integers(0, num_classes, count)]
    return images, labels


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_paper_mnist_capsnet_has_8215568_trainable_parameters():
    model = CapsNet()
    # conv 20,992 + primary 5,308,672 + routing 1,474,560 + decoder 1,411,344
    assert _trainable_count(model) == 8_215_568
    assert model.non_trainable_weights == []
    assert tuple(model.class_capsule.kernel.shape) == (1152, 10, 8, 16)


def test_colour_images_and_five_classes():
    model = CapsNet(input_shape=(32, 32, 3), num_classes=5)
    # conv 62,464 + primary 5,308,672 + routing 2048*5*8*16 + decoder
    # (80*512+512) + (512*1024+1024) + (1024*3072+3072)
    assert _trainable_count(model) == 10_397_440
    assert model.compute_output_shape((None, 32, 32, 3)) == (
        (None, 5),
        (None, 32, 32, 3),
    )


def test_non_square_colour_images_run():
    # Narrow layers keep this fast; the shapes are what is under test.
    model = CapsNet(**{**SMALL, "input_shape": (24, 17, 3), "num_classes": 5})
    lengths, reconstructions = model(_data(4, (24, 17, 3), 5)[0])
    assert tuple(lengths.shape) == (4, 5)
    assert tuple(reconstructions.shape) == (4, 24, 17, 3)
    lengths = _numpy(lengths)
    assert np.all((lengths >= 0) & (lengths < 1))


def test_training_masks_by_labels_inference_by_longest_capsule():
    model = CapsNet(**SMALL)
    # Long capsules and a steep decoder, so that which capsule reaches the
    # decoder shows clearly in its output (at initialisation capsules are
    # near zero and the decoder's output near 0.5 whatever it sees).
    rng = np.random.default_rng(1)
    for kernel in (model.primary_capsule.kernel, model.class_capsule.kernel):
        kernel.assign(rng.normal(size=kernel.shape).astype("float32"))
    for layer in model.decoder.layers[:-1]:
        layer.kernel.assign(layer.kernel * 10.0)
    images, _ = _data()
    capsules = _numpy(model.encode(images))
    predicted = np.argmax(np.linalg.norm(capsules, axis=-1), axis=-1)
    wrong = np.eye(3, dtype="float32")[(predicted + 1) % 3]

    _, trained = model((images, wrong), training=True)
    _, inferred = model((images, wrong), training=False)
    _, unlabelled = model(images, training=True)

    np.testing.assert_allclose(
        _numpy(trained), _numpy(model.decode(capsules, wrong)), atol=1e-6
    )
    np.testing.assert_allclose(
        _numpy(inferred), _numpy(model.decode(capsules)), atol=1e-6
    )
    np.testing.assert_allclose(_numpy(unlabelled), _numpy(inferred), atol=1e-6)
    assert np.abs(_numpy(trained) - _numpy(inferred)).max() > 0.1


def test_coupling_is_a_distribution_over_classes():
    model = CapsNet(**SMALL)
    images, _ = _data()
    capsules, coupling = model.encode(images, return_coupling=True)
    np.testing.assert_allclose(
        _numpy(capsules), _numpy(model.encode(images)), atol=1e-5
    )
    assert tuple(coupling.shape) == (4, 3, 16)
    np.testing.assert_allclose(_numpy(coupling).sum(axis=1), 1.0, atol=1e-5)


def test_without_decoder_outputs_lengths_only():
    model = CapsNet(**SMALL, decoder=False)
    assert model.decoder is None
    lengths = model(_data()[0])
    assert tuple(lengths.shape) == (4, 3)
    assert model.get_config()["decoder"] is False
    with pytest.raises(ValueError, match="decoder=False"):
        model.decode(np.zeros((1, 3, 6), "float32"))


def test_fit_lowers_the_loss_and_the_saved_model_loads(tmp_path):
    keras.utils.set_random_seed(0)
    model = CapsNet(**SMALL)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=[MarginLoss(), ReconstructionLoss()],
        metrics=[[keras.metrics.CategoricalAccuracy(name="accuracy")], []],
    )
    images, labels = _data(16)
    history = model.fit(
        (images, labels), (labels, images), batch_size=8, epochs=4, verbose=0
    )
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert {"lengths_loss", "reconstructions_loss", "lengths_accuracy"} <= set(
        history.history
    )

    path = tmp_path / "capsnet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert isinstance(loaded, CapsNet)
    assert loaded.get_config() == model.get_config()
    # Eager calls at the batch size of the other tests: no new compilation
    # on JAX.
    for training in (False, True):
        inputs = (images[:4], labels[:4])
        for expected, actual in zip(
            model(inputs, training=training),
            loaded(inputs, training=training),
            strict=True,
        ):
            np.testing.assert_allclose(_numpy(actual), _numpy(expected), atol=1e-6)
    # The compiled losses come back too, so training can resume.
    assert loaded.compiled
    assert [type(loss) for loss in loaded.loss] == [MarginLoss, ReconstructionLoss]
    assert loaded.optimizer.iterations.numpy() == 8


def test_config_round_trip():
    model = CapsNet(**SMALL, routing_iterations=2, stop_gradient_on_agreement=True)
    config = model.get_config()
    clone = CapsNet.from_config(config)
    assert clone.get_config() == config
    assert _trainable_count(clone) == _trainable_count(model)


@pytest.mark.slow
def test_loads_after_import_keras_capsules_alone(tmp_path):
    path = tmp_path / "capsnet.keras"
    CapsNet(**SMALL).save(path)
    code = (
        "import sys, keras, keras_capsules\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "print(type(model).__name__)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("CapsNet")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (28, 28)}, "input_shape"),
        ({"input_shape": (28, 28, 0)}, "input_shape"),
        ({"input_shape": (16, 28, 1)}, "at least 17x17"),
        ({"num_classes": 0}, "num_classes"),
        ({"routing_iterations": 0}, "routing_iterations"),
        ({"capsule_dim": 2.5}, "capsule_dim"),
        ({"decoder_units": (512, 0)}, "decoder_units"),
        ({"decoder_units": 512}, "decoder_units"),
    ],
)
def test_invalid_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CapsNet(**{**SMALL, **kwargs})


def test_wrong_inputs_are_reported():
    model = CapsNet(**SMALL)
    with pytest.raises(ValueError, match=r"images.shape=\(2, 20, 20, 3\)"):
        model(np.zeros((2, 20, 20, 3), "float32"))
    with pytest.raises(ValueError, match=r"labels.shape=\(2, 4\)"):
        model((np.zeros((2, 20, 20, 1), "float32"), np.zeros((2, 4), "float32")))


def test_space_to_depth_primary_convolution_is_the_same_model(tmp_path):
    images, _ = _data(shape=(21, 20, 1))
    small = {**SMALL, "input_shape": (21, 20, 1)}
    direct = CapsNet(**small)
    s2d = CapsNet(**small, primary_conv_implementation="space_to_depth")
    assert s2d.get_config()["primary_conv_implementation"] == "space_to_depth"
    s2d.set_weights(direct.get_weights())
    expected = direct.predict(images, verbose=0)
    got = s2d.predict(images, verbose=0)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    path = str(tmp_path / "s2d.keras")
    s2d.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.primary_capsule.conv_implementation == "space_to_depth"


def test_bad_primary_conv_implementation_is_named():
    with pytest.raises(
        ValueError,
        match="`primary_conv_implementation`.*primary_conv_implementation='fft'",
    ):
        CapsNet(**SMALL, primary_conv_implementation="fft")
