"""A CapsNet assembled from the public components, on MNIST shapes."""

from __future__ import annotations

import keras
import numpy as np

import keras_capsules
from tests.gradients import model_gradients


def build_mnist_capsnet() -> keras.Model:
    images = keras.Input((28, 28, 1), name="images")
    labels = keras.Input((10,), name="labels")
    features = keras.layers.Conv2D(256, 9, activation="relu")(images)
    primary = keras_capsules.PrimaryCapsule(32, 8, kernel_size=9, strides=2)(features)
    digits = keras_capsules.RoutingCapsule(10, 16, routing_iterations=3)(primary)
    lengths = keras_capsules.Length(name="lengths")(digits)
    masked = keras_capsules.Mask()([digits, labels])
    hidden = keras.layers.Dense(512, activation="relu")(masked)
    hidden = keras.layers.Dense(1024, activation="relu")(hidden)
    reconstruction = keras.layers.Dense(784, activation="sigmoid")(hidden)
    return keras.Model([images, labels], [lengths, reconstruction])


def test_paper_capsnet_has_8215568_trainable_parameters():
    model = build_mnist_capsnet()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 8_215_568
    assert model.non_trainable_weights == []


def test_paper_capsnet_gradients_are_finite_and_reach_every_weight():
    model = build_mnist_capsnet()
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 28, 28, 1)).astype("float32")
    images[1] = 0.0  # an all-zero image drives capsules towards zero length
    labels = np.eye(10, dtype="float32")[[3, 7]]
    margin = keras_capsules.MarginLoss()

    def loss_fn(targets, outputs):
        lengths, reconstruction = outputs
        squared_error = keras.ops.sum(
            keras.ops.square(reconstruction - keras.ops.reshape(targets[1], (2, -1))),
            -1,
        )
        return margin(targets[0], lengths) + 0.0005 * keras.ops.mean(squared_error)

    grads = model_gradients(model, loss_fn, [images, labels], (labels, images))
    assert len(grads) == len(model.trainable_weights)
    for weight, grad in zip(model.trainable_weights, grads):
        assert np.all(np.isfinite(grad)), f"non-finite gradient for {weight.path}"
        assert np.abs(grad).max() > 0, f"zero gradient for {weight.path}"


def _small_images(batch):
    return (
        np.random.default_rng(batch).uniform(size=(batch, 12, 12, 1)).astype("float32")
    )


def test_components_work_in_a_sequential_model_with_any_batch_size(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras_capsules.PrimaryCapsule(4, 4, kernel_size=3, strides=2),
            keras_capsules.RoutingCapsule(3, 8),
            keras_capsules.Length(),
        ]
    )
    assert model.output_shape == (None, 3)
    for batch in (1, 5, 2):
        lengths = keras.ops.convert_to_numpy(model(_small_images(batch)))
        assert lengths.shape == (batch, 3)
        assert np.all((lengths >= 0) & (lengths < 1))
    model.save(tmp_path / "sequential.keras")
    reloaded = keras.saving.load_model(tmp_path / "sequential.keras")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(_small_images(5))),
        keras.ops.convert_to_numpy(model(_small_images(5))),
        rtol=1e-5,
        atol=1e-6,
    )


class SubclassedCapsNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(8, 3, activation="relu")
        self.primary = keras_capsules.PrimaryCapsule(4, 4, kernel_size=3, strides=2)
        self.digits = keras_capsules.RoutingCapsule(3, 8)
        self.length = keras_capsules.Length()
        self.mask = keras_capsules.Mask()
        self.decoder = keras.layers.Dense(144, activation="sigmoid")

    def call(self, images):
        digits = self.digits(self.primary(self.conv(images)))
        return self.length(digits), self.decoder(self.mask(digits))


def test_components_work_in_a_subclassed_model_that_trains():
    model = SubclassedCapsNet()
    images = _small_images(6)
    labels = np.eye(3, dtype="float32")[[0, 1, 2, 0, 1, 2]]
    model.compile(optimizer="adam", loss=[keras_capsules.MarginLoss(), "mse"])
    history = model.fit(images, (labels, images.reshape(6, -1)), epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    lengths, reconstruction = model.predict(_small_images(7), batch_size=4, verbose=0)
    assert lengths.shape == (7, 3) and reconstruction.shape == (7, 144)
