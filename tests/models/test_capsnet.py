"""CapsNet: the model harness, the paper's size, masking, coupling, saving."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_capsules.losses import MarginLoss, ReconstructionLoss
from keras_capsules.models import CapsNet
from tests import numpy_reference
from tests.model_harness import run_float64_test, run_model_test

# Narrow enough to train in well under a second on a CPU.
SMALL = dict(
    image_shape=(20, 20, 1),
    num_classes=3,
    conv_filters=8,
    primary_capsule_types=4,
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


def test_model_contract(tmp_path):
    images, labels = _data()
    run_model_test(
        CapsNet,
        SMALL,
        input_data=(images, labels),
        tmp_path=tmp_path,
        train_data=((images, labels), (labels, images)),
        # The paper's weight on the reconstruction: the harness's Adam step
        # moves the decoder's kernels however small their gradients are.
        loss=[MarginLoss(), ReconstructionLoss()],
        expected_output_shape=[(4, 3), (4, 20, 20, 1)],
        precision_policies=("mixed_float16", "mixed_bfloat16"),
    )


def test_model_contract_without_decoder(tmp_path):
    images, labels = _data()
    run_model_test(
        CapsNet,
        {**SMALL, "use_decoder": False, "routing_iterations": 2},
        input_data=images,
        tmp_path=tmp_path,
        train_data=(images, labels),
        loss=MarginLoss(),
        expected_output_shape=(4, 3),
    )


def test_float64_stays_float64():
    run_float64_test(CapsNet, SMALL, _data(), skip=pytest.skip)


def test_float64_matches_the_numpy_reference():
    """Every step in float64: equal to the float64 NumPy model to ~1e-12.

    A float32 step anywhere (a layer or a container casting its inputs)
    would show as errors of ~1e-7.
    """
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("float64 on JAX needs x64 (JAX_ENABLE_X64=1), off here")
    model = CapsNet(**SMALL, dtype="float64")
    rng = np.random.default_rng(5)
    for weight in model.weights:  # wide weights, so every nonlinearity acts
        weight.assign(rng.normal(scale=0.5, size=weight.shape))
    images, labels = _data()
    lengths, reconstructions = model((images, labels))
    assert _numpy(lengths).dtype == np.float64
    assert _numpy(reconstructions).dtype == np.float64

    conv_kernel, conv_bias = (_numpy(w) for w in model.conv.weights)
    primary_kernel, primary_bias = (_numpy(w) for w in model.primary_capsule.weights)
    features = np.maximum(
        numpy_reference.conv2d_valid(images, conv_kernel, conv_bias, stride=1), 0.0
    )
    primary = numpy_reference.squash(
        numpy_reference.conv2d_valid(features, primary_kernel, primary_bias, 2).reshape(
            len(images), -1, SMALL["primary_capsule_dim"]
        )
    )
    capsules, _ = numpy_reference.dynamic_routing(
        primary, _numpy(model.class_capsule.kernel), 3
    )
    hidden_kernel, hidden_bias, image_kernel, image_bias = (
        _numpy(w) for w in model.decoder.weights
    )
    masked = (capsules * labels[..., None]).reshape(len(images), -1)
    hidden = np.maximum(masked @ hidden_kernel + hidden_bias, 0.0)
    pixels = 1.0 / (1.0 + np.exp(-(hidden @ image_kernel + image_bias)))

    assert np.ptp(numpy_reference.length(capsules)) > 0.1  # not all saturated
    np.testing.assert_allclose(
        _numpy(lengths), numpy_reference.length(capsules), rtol=1e-10, atol=1e-12
    )
    # Keras's own `Dense` multiplies float64 in float32 on PyTorch
    # (`keras.ops.matmul` takes Keras's 32-bit `result_type` outside
    # TensorFlow), so there the decoder has float32 precision.
    tolerance = 1e-6 if keras.backend.backend() == "torch" else 1e-10
    np.testing.assert_allclose(
        _numpy(reconstructions),
        pixels.reshape(images.shape),
        rtol=tolerance,
        atol=tolerance / 100,
    )


def test_paper_mnist_capsnet_has_8215568_trainable_parameters():
    model = CapsNet()
    # conv 20,992 + primary 5,308,672 + routing 1,474,560 + decoder 1,411,344
    assert _trainable_count(model) == 8_215_568
    assert model.non_trainable_weights == []
    assert tuple(model.class_capsule.kernel.shape) == (1152, 10, 8, 16)


def test_colour_images_and_five_classes():
    model = CapsNet(image_shape=(32, 32, 3), num_classes=5)
    # conv 62,464 + primary 5,308,672 + routing 2048*5*8*16 + decoder
    # (80*512+512) + (512*1024+1024) + (1024*3072+3072)
    assert _trainable_count(model) == 10_397_440
    assert model.compute_output_shape((None, 32, 32, 3)) == (None, 5)
    assert model.compute_output_shape([(None, 32, 32, 3), (None, 5)]) == (
        (None, 5),
        (None, 32, 32, 3),
    )


def test_non_square_colour_images_run():
    # Narrow layers keep this fast; the shapes are what is under test.
    model = CapsNet(**{**SMALL, "image_shape": (24, 17, 3), "num_classes": 5})
    images = _data(4, (24, 17, 3), 5)[0]
    lengths = model(images)
    reconstructions = model.decode(model.encode(images))
    assert tuple(lengths.shape) == (4, 5)
    assert tuple(reconstructions.shape) == (4, 24, 17, 3)
    lengths = _numpy(lengths)
    assert np.all((lengths >= 0) & (lengths < 1))


def _model_with_distinct_capsules():
    """A CapsNet whose decoder output shows which capsule it was given.

    Long capsules and a steep decoder: at initialisation capsules are near
    zero and the decoder's output near 0.5 whatever it sees. Seeded, so the
    decoder's initial weights, and its rounding, do not depend on the tests
    that ran before.
    """
    keras.utils.set_random_seed(1)
    model = CapsNet(**SMALL)
    rng = np.random.default_rng(1)
    for kernel in (model.primary_capsule.kernel, model.class_capsule.kernel):
        kernel.assign(rng.normal(size=kernel.shape).astype("float32"))
    for layer in model.decoder.layers[:-1]:
        layer.kernel.assign(layer.kernel * 10.0)
    images, _ = _data()
    capsules = _numpy(model.encode(images))
    predicted = np.argmax(np.linalg.norm(capsules, axis=-1), axis=-1)
    wrong = np.eye(3, dtype="float32")[(predicted + 1) % 3]
    return model, images, capsules, wrong


def test_labels_choose_the_decoded_capsule_whatever_training_says():
    model, images, capsules, wrong = _model_with_distinct_capsules()
    by_labels = _numpy(model.decode(capsules, wrong))
    by_length = _numpy(model.decode(capsules))
    assert np.abs(by_labels - by_length).max() > 0.1  # the check below can fail

    lengths = _numpy(model.class_scores(capsules))
    for training in (True, False, None):
        _, labelled = model((images, wrong), training=training)
        np.testing.assert_allclose(_numpy(labelled), by_labels, atol=1e-6)
        # On images alone the call gives the class scores.
        scores = model(images, training=training)
        np.testing.assert_allclose(_numpy(scores), lengths, atol=1e-6)


def test_labels_choose_the_decoded_capsule_in_predict_and_evaluate():
    model, images, capsules, wrong = _model_with_distinct_capsules()
    by_labels = _numpy(model.decode(capsules, wrong))
    by_length = _numpy(model.decode(capsules))

    assert np.abs(by_labels - by_length).max() > 0.1  # the checks below can fail

    # `predict` runs a compiled graph (jax.jit on JAX), `decode` eagerly: the
    # decoder's sums, amplified 10x per layer here, may round in another
    # order, a few float32 ulps of outputs near 0.5 (1.3e-6 measured on JAX).
    _, predicted = model.predict((images, wrong), batch_size=4, verbose=0)
    np.testing.assert_allclose(predicted, by_labels, atol=1e-5)
    predicted = model.predict(images, batch_size=4, verbose=0)
    np.testing.assert_allclose(
        predicted, _numpy(model.class_scores(capsules)), atol=1e-5
    )

    loss = ReconstructionLoss()
    model.compile(loss=[MarginLoss(), loss])
    logs = model.evaluate(
        (images, wrong), (wrong, images), batch_size=4, verbose=0, return_dict=True
    )
    expected = float(_numpy(loss(images, by_labels)))
    np.testing.assert_allclose(logs["reconstructions_loss"], expected, rtol=1e-4)
    # Not vacuous: masking by length would be 10x the tolerance away.
    assert abs(float(_numpy(loss(images, by_length))) - expected) > 1e-3 * expected


def test_coupling_comes_from_the_same_routing_pass(monkeypatch):
    model = CapsNet(**SMALL)
    images, _ = _data()
    expected = _numpy(model.encode(images))
    layer = model.class_capsule
    calls = []
    routing_op = layer.routing_op

    def counted(*args):
        calls.append(1)
        return routing_op(*args)

    monkeypatch.setattr(layer, "routing_op", counted)
    capsules, coupling = model.encode(images, return_coupling=True)
    assert len(calls) == 1, "encode(return_coupling=True) routed more than once"
    np.testing.assert_allclose(_numpy(capsules), expected, atol=1e-6)
    assert tuple(coupling.shape) == (4, 3, 16)
    np.testing.assert_allclose(_numpy(coupling).sum(axis=1), 1.0, atol=1e-5)


def test_without_decoder_outputs_lengths_only():
    model = CapsNet(**SMALL, use_decoder=False)
    assert model.decoder is None
    lengths = model(_data()[0])
    assert tuple(lengths.shape) == (4, 3)
    assert model.get_config()["use_decoder"] is False
    with pytest.raises(ValueError, match="use_decoder=False"):
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
    assert clone.class_capsule.stop_gradient_on_agreement
    assert clone.class_capsule.routing_iterations == 2
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


def test_wrong_inputs_are_reported():
    model = CapsNet(**SMALL)
    with pytest.raises(ValueError, match=r"images.shape=\(2, 20, 20, 3\)"):
        model(np.zeros((2, 20, 20, 3), "float32"))
    with pytest.raises(ValueError, match=r"labels.shape=\(2, 4\)"):
        model((np.zeros((2, 20, 20, 1), "float32"), np.zeros((2, 4), "float32")))


def test_primary_convolution_implementations_are_the_same_model(tmp_path):
    images, _ = _data(shape=(21, 20, 1))
    small = {**SMALL, "image_shape": (21, 20, 1)}
    auto = CapsNet(**small)
    # "auto" is the default and stays "auto" in the config, so a saved model
    # picks the fastest computation of the backend that loads it.
    assert auto.get_config()["primary_conv_implementation"] == "auto"
    assert auto.primary_capsule.conv_implementation == "auto"
    expected = auto.predict(images, verbose=0)
    for implementation in ("direct", "space_to_depth"):
        model = CapsNet(**small, primary_conv_implementation=implementation)
        assert model.get_config()["primary_conv_implementation"] == implementation
        model.set_weights(auto.get_weights())
        got = model.predict(images, verbose=0)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    path = str(tmp_path / "s2d.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.primary_capsule.conv_implementation == "space_to_depth"
