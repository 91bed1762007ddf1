"""A small CapsNet, its fixed batch, and the save / load-predict-step workers.

Used in-process by the tests and as a worker in a subprocess whose backend is
fixed by `KERAS_BACKEND`:

    KERAS_BACKEND=jax python -m tests.parity._capsnet load MODEL BATCH OUT

`load` restores a `.keras` file saved under any backend, predicts on the
fixed batch, takes one SGD step on it and writes the predictions, the loss
and the weight updates to `OUT` (an `.npz`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_capsules  # noqa: E402

BACKENDS = ("tensorflow", "torch", "jax")
IMAGE_SHAPE = (12, 12, 1)
NUM_CLASSES = 3
BATCH_SIZE = 8
LEARNING_RATE = 0.1
RECONSTRUCTION_WEIGHT = 0.5
OUTPUTS = ("lengths", "reconstruction")


def fixed_batch(
    batch_size: int = BATCH_SIZE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1) and one-hot labels, the same on every backend."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 1.0, (batch_size, *IMAGE_SHAPE)).astype("float32")
    labels = np.eye(NUM_CLASSES, dtype="float32")[
        rng.integers(0, NUM_CLASSES, batch_size)
    ]
    return images, labels


def build_capsnet(seed: int = 7, routing_stddev: float = 0.3) -> keras.Model:
    """Conv2D 8@3x3 -> PrimaryCapsule(4, 4, 3, strides=2) -> RoutingCapsule(3, 8).

    Two outputs: the capsule lengths and a reconstruction of the image by a
    Dense decoder that sees the capsule of the label (`Mask`). The routing
    kernel is initialised wider than the default so that the lengths and
    the gradients are far from zero.
    """
    keras.utils.set_random_seed(seed)
    images = keras.Input(IMAGE_SHAPE, name="images")
    labels = keras.Input((NUM_CLASSES,), name="labels")
    features = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(images)
    primary = keras_capsules.PrimaryCapsule(4, 4, 3, strides=2, name="primary")(
        features
    )
    digits = keras_capsules.RoutingCapsule(
        NUM_CLASSES,
        8,
        routing_iterations=3,
        kernel_initializer=keras.initializers.RandomNormal(stddev=routing_stddev),
        name="digits",
    )(primary)
    lengths = keras_capsules.Length(name="lengths")(digits)
    masked = keras_capsules.Mask(name="mask")([digits, labels])
    hidden = keras.layers.Dense(16, activation="relu", name="decoder_hidden")(masked)
    pixels = keras.layers.Dense(
        int(np.prod(IMAGE_SHAPE)), activation="sigmoid", name="decoder_pixels"
    )(hidden)
    reconstruction = keras.layers.Reshape(IMAGE_SHAPE, name="reconstruction")(pixels)
    return keras.Model([images, labels], [lengths, reconstruction], name="capsnet")


def compile_for_step(model: keras.Model, jit_compile: bool | str = "auto") -> None:
    """Plain SGD on the margin loss plus a weighted reconstruction MSE."""
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE),
        loss={"lengths": keras_capsules.MarginLoss(), "reconstruction": "mse"},
        loss_weights={"lengths": 1.0, "reconstruction": RECONSTRUCTION_WEIGHT},
        jit_compile=jit_compile,
    )


def targets(images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    return {"lengths": labels, "reconstruction": images}


def save(directory: Path) -> tuple[Path, Path]:
    """Builds, compiles and saves the CapsNet under this process's backend.

    Writes `capsnet_<backend>.keras` and `capsnet_<backend>.npz` (the fixed
    batch and the saver's own predictions on it) and returns both paths.
    """
    backend = keras.backend.backend()
    directory = Path(directory)
    model = build_capsnet()
    compile_for_step(model)
    images, labels = fixed_batch()
    lengths, reconstruction = model.predict(
        [images, labels], batch_size=BATCH_SIZE, verbose=0
    )
    model_path = directory / f"capsnet_{backend}.keras"
    batch_path = directory / f"capsnet_{backend}.npz"
    model.save(model_path)
    np.savez(
        batch_path,
        images=images,
        labels=labels,
        lengths=lengths,
        reconstruction=reconstruction,
    )
    return model_path, batch_path


def load_predict_step(model_path: Path, batch_path: Path, out_path: Path) -> None:
    """Loads a saved CapsNet, predicts, takes one SGD step, records it all.

    The model is loaded with its saved compile config (checked and recorded,
    so the round trip of `MarginLoss` is covered), then recompiled with the
    same loss and optimizer and `jit_compile="auto"` for this backend: a
    file saved under JAX carries `jit_compile=True`, which on PyTorch would
    silently turn on `torch.compile`.
    """
    batch = np.load(batch_path)
    images, labels = batch["images"], batch["labels"]
    model = keras.saving.load_model(model_path)
    restored = {
        "optimizer": type(model.optimizer).__name__,
        "learning_rate": float(np.asarray(model.optimizer.learning_rate)),
        "losses": {
            name: (
                loss.get_config() | {"class_name": type(loss).__name__}
                if isinstance(loss, keras.losses.Loss)
                else str(loss)
            )
            for name, loss in dict(model.loss).items()
        },
    }
    compile_for_step(model)
    lengths, reconstruction = model.predict(
        [images, labels], batch_size=BATCH_SIZE, verbose=0
    )
    before = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_weights}
    loss = model.train_on_batch(
        [images, labels], targets(images, labels), return_dict=True
    )
    arrays = {
        f"update:{v.path}": keras.ops.convert_to_numpy(v) - before[v.path]
        for v in model.trainable_weights
    }
    info = {
        "backend": keras.backend.backend(),
        "framework_version": framework_version(),
        "keras_version": keras.__version__,
        "loss": {name: float(value) for name, value in loss.items()},
        "restored_compile": restored,
    }
    np.savez(
        out_path,
        lengths=lengths,
        reconstruction=reconstruction,
        info=np.array(json.dumps(info)),
        **arrays,
    )


def framework_version() -> str:
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}[backend]
    return __import__(module).__version__


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "load":
        print("usage: python -m tests.parity._capsnet load MODEL BATCH OUT")
        return 2
    load_predict_step(*(Path(arg) for arg in argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
