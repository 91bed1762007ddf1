"""The MNIST example end to end, in a subprocess, on a tiny slice."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_capsules
from tests.visualization.png import assert_png_with_content

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "capsnet_mnist.py"
BACKEND = keras.backend.backend()
# One cross-backend pair per backend run; the three runs close the cycle.
OTHER_BACKEND = {"tensorflow": "torch", "torch": "jax", "jax": "tensorflow"}[BACKEND]
ACCURACY_LINE = re.compile(r"^test accuracy: (0\.\d{4}|1\.0000)$")


def _env(backend: str) -> dict[str, str]:
    return {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _example_module():
    spec = importlib.util.spec_from_file_location("capsnet_mnist", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _test_images(mnist_path: Path, count: int) -> np.ndarray:
    with np.load(mnist_path) as data:
        return data["x_test"][:count, ..., None].astype("float32") / 255.0


# Tiny slices, one training step: the point is the whole pipeline, not the
# accuracy. A small batch also keeps JAX quick, whose CPU backward pass of
# the stride-2 convolution is slow; JAX runs the space-to-depth form of it,
# the other backends the direct one, so both paths of the option run.
PRIMARY_CONV = "space_to_depth" if BACKEND == "jax" else "direct"


@pytest.fixture(scope="module")
def example_run(tmp_path_factory, mnist_path):
    output_dir = tmp_path_factory.mktemp("capsnet_mnist")
    command = [
        sys.executable, str(EXAMPLE),
        "--backend", BACKEND,
        "--data", str(mnist_path),
        "--epochs", "1",
        "--train-samples", "8",
        "--test-samples", "8",
        "--batch-size", "8",
        "--primary-conv", PRIMARY_CONV,
        "--output-dir", str(output_dir),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env=_env(BACKEND), timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return output_dir, result.stdout


@pytest.mark.slow
def test_prints_one_test_accuracy_line(example_run):
    output_dir, stdout = example_run
    lines = [line for line in stdout.splitlines() if line.startswith("test accuracy")]
    assert len(lines) == 1 and ACCURACY_LINE.match(lines[0]), lines
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert lines[0] == f"test accuracy: {metrics['test_accuracy']:.4f}"


@pytest.mark.slow
def test_writes_metrics(example_run):
    output_dir, _ = example_run
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["backend"] == BACKEND
    assert metrics["epochs"] == 1 and len(metrics["epoch_seconds"]) == 1
    assert metrics["train_samples"] == 8 and metrics["test_samples"] == 8
    assert metrics["parameters"] == 8_215_568
    assert metrics["seconds_per_epoch"] > 0 and metrics["train_images_per_second"] > 0
    assert metrics["args"]["batch_size"] == 8 and metrics["args"]["shift"] == 2
    assert metrics["args"]["primary_conv"] == PRIMARY_CONV
    assert set(metrics["history"]) >= {"loss", "lengths_loss", "lengths_accuracy"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, min_width, min_height",
    [("reconstructions.png", 600, 150), ("perturbations.png", 400, 600),
     ("history.png", 600, 250)],
)  # fmt: skip
def test_writes_pngs_with_content(example_run, name, min_width, min_height):
    output_dir, _ = example_run
    assert_png_with_content(output_dir / name, min_width, min_height)


@pytest.mark.slow
def test_saved_model_reloads_and_reproduces_the_accuracy(example_run, mnist_path):
    output_dir, _ = example_run
    model = keras.saving.load_model(output_dir / "capsnet.keras")
    assert isinstance(model, keras_capsules.models.CapsNet)
    with np.load(mnist_path) as data:
        labels = data["y_test"][:8]
    lengths, _ = model.predict(_test_images(mnist_path, 8), verbose=0)
    accuracy = float(np.mean(np.argmax(lengths, axis=-1) == labels))
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["test_accuracy"])


@pytest.mark.slow
def test_model_loads_under_another_backend_with_the_same_predictions(
    example_run, mnist_path, tmp_path
):
    output_dir, _ = example_run
    images = _test_images(mnist_path, 8)
    np.save(tmp_path / "images.npy", images)
    model = keras.saving.load_model(output_dir / "capsnet.keras")
    lengths, reconstructions = model.predict(images, verbose=0)
    code = (
        "import sys, numpy as np, keras, keras_capsules\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "lengths, reconstructions = model.predict(np.load(sys.argv[2]), verbose=0)\n"
        "np.savez(sys.argv[3], lengths=lengths, reconstructions=reconstructions,\n"
        "         backend=keras.backend.backend())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(output_dir / "capsnet.keras"),
         str(tmp_path / "images.npy"), str(tmp_path / "other.npz")],
        capture_output=True, text=True, env=_env(OTHER_BACKEND), timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    other = np.load(tmp_path / "other.npz")
    assert str(other["backend"]) == OTHER_BACKEND
    np.testing.assert_allclose(other["lengths"], lengths, atol=1e-4)
    np.testing.assert_allclose(other["reconstructions"], reconstructions, atol=1e-4)


def test_random_shift_moves_content_by_at_most_max_shift():
    example = _example_module()
    images = np.zeros((200, 12, 12, 1), "float32")
    images[:, 5, 6] = 1.0
    shifted = example.random_shift(images, 2, np.random.default_rng(0))
    assert shifted.shape == images.shape
    rows, columns = np.nonzero(shifted[..., 0])[1:]
    np.testing.assert_array_equal(shifted.sum(axis=(1, 2, 3)), 1.0)
    assert set(rows - 5) == {-2, -1, 0, 1, 2} and set(columns - 6) == {-2, -1, 0, 1, 2}
    # Content pushed over the border is dropped, not wrapped round.
    edge = np.zeros((50, 4, 4, 1), "float32")
    edge[:, 0, 0] = 1.0
    assert example.random_shift(edge, 2, np.random.default_rng(0)).sum() < 50
    assert example.random_shift(edge, 0, None) is edge


def test_batches_are_shifted_pairs_and_reproducible():
    example = _example_module()
    args = example.parse_args(["--batch-size", "4", "--seed", "3"])
    images = np.random.default_rng(0).uniform(size=(10, 8, 8, 1)).astype("float32")
    labels = np.eye(3, dtype="float32")[np.arange(10) % 3]
    batches = example.shifted_batches(images, labels, args)
    assert len(batches) == 3
    (x, y), (y_target, x_target) = batches[2]
    assert x.shape == (2, 8, 8, 1) and y.shape == (2, 3)
    assert x is x_target and y is y_target
    again = example.shifted_batches(images, labels, args)[0][0][0]
    np.testing.assert_array_equal(batches[0][0][0], again)
    # Split over 4 devices, the last batch of 2 cannot be: it is left out.
    assert len(example.shifted_batches(images, labels, args, devices=4)) == 2
    split = example.shifted_batches(images[:7], labels[:7], args, devices=2)
    assert len(split) == 2 and len(split[1][0][0]) == 2


@pytest.mark.parametrize(
    "argv", [["--epochs", "0"], ["--shift", "-1"], ["--backend", "numpy"]]
)
def test_bad_options_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as error:
        _example_module().parse_args(argv)
    assert error.value.code == 2


@pytest.mark.skipif(BACKEND == "jax", reason="data parallelism is set up on JAX")
def test_data_parallel_is_refused_off_jax(capsys):
    code = _example_module().main(["--data-parallel", "--data", "unused.npz"])
    assert code == 2
    message = capsys.readouterr().err
    assert "JAX" in message and BACKEND in message and "--backend jax" in message


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution is JAX-only here")
def test_data_parallel_shards_over_all_devices():
    example = _example_module()
    devices = len(keras.distribution.list_devices())
    try:
        assert example.set_up_data_parallel(batch_size=devices * 4) == devices
        distribution = keras.distribution.distribution()
        assert isinstance(distribution, keras.distribution.DataParallel)
    finally:
        keras.distribution.set_distribution(None)
