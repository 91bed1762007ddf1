"""`examples/matrix_capsnet_mnist.py`: a tiny run end to end, and bad input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_capsules  # noqa: F401  (registers the classes saved models name)
from tests.examples._example_runs import (
    BACKEND,
    REPO_ROOT,
    error_lines,
    example_module,
    log_rows,
    output_of,
    run_example,
    write_npz,
)
from tests.visualization.png import assert_png_with_content

EXAMPLE = REPO_ROOT / "examples" / "matrix_capsnet_mnist.py"
ACCURACY_LINE = re.compile(r"^test accuracy: (0\.\d{4}|1\.0000)$")
# Three training steps of the small model: the whole pipeline, not accuracy.
TRAIN_SAMPLES, TEST_SAMPLES, BATCH_SIZE = 96, 48, 32


def tiny_command(data: Path, output_dir: Path, *options: str) -> list[str]:
    return [
        sys.executable, str(EXAMPLE),
        "--backend", BACKEND,
        "--data", str(data),
        "--epochs", "1",
        "--train-samples", str(TRAIN_SAMPLES),
        "--test-samples", str(TEST_SAMPLES),
        "--batch-size", str(BATCH_SIZE),
        "--output-dir", str(output_dir),
        *options,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def example_run(tmp_path_factory, mnist_path):
    output_dir = tmp_path_factory.mktemp("matrix_capsnet_mnist")
    result = run_example(tiny_command(mnist_path, output_dir), timeout=600)
    assert result.returncode == 0, output_of(result)
    return output_dir, result.stdout


@pytest.mark.slow
def test_tiny_run_prints_the_accuracy_and_writes_its_outputs(example_run):
    output_dir, stdout = example_run
    last = stdout.strip().splitlines()[-1]
    assert ACCURACY_LINE.match(last), stdout[-2000:]
    for name in ("metrics.json", "training_log.csv", "matrix_capsnet.keras"):
        assert (output_dir / name).stat().st_size > 0, name
    assert_png_with_content(output_dir / "history.png", 300, 150)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert f"{metrics['test_accuracy']:.4f}" == last.split()[-1]


@pytest.mark.slow
def test_metrics_are_sane_and_name_the_run(example_run, mnist_path):
    output_dir, _ = example_run
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert "not the paper's smallNORB" in metrics["dataset"]
    assert metrics["backend"] == BACKEND and metrics["epochs"] == 1
    assert (metrics["train_samples"], metrics["test_samples"]) == (96, 48)
    assert metrics["image_shape"] == [28, 28, 1]
    assert metrics["parameters"] == 68_444  # The paper's small model, 10 classes.
    (accuracy,) = metrics["test_accuracy_per_epoch"]
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    # The last epoch's evaluation and the final one see the same weights.
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    (seconds,) = metrics["epoch_seconds"]
    assert seconds > 0 and metrics["seconds_per_epoch"] == seconds
    assert metrics["train_images_per_second"] == pytest.approx(96 / seconds)
    assert metrics["test_images_per_second"] > 0
    assert "CPU cores" in metrics["machine"]
    command = metrics["command"]
    assert "matrix_capsnet_mnist.py" in command and str(mnist_path) in command
    assert f"--backend {BACKEND}" in command


@pytest.mark.slow
def test_training_log_has_the_margin_and_the_test_metrics(example_run):
    output_dir, _ = example_run
    (row,) = log_rows(output_dir)
    assert row["epoch"] == "0" and float(row["epoch_seconds"]) > 0
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(row)
    assert float(row["spread_margin"]) == pytest.approx(0.2)
    assert float(row["learning_rate"]) == pytest.approx(3e-3)
    assert np.isfinite(float(row["loss"]))


@pytest.mark.slow
def test_saved_model_reloads_with_the_same_accuracy(example_run, mnist_path):
    output_dir, _ = example_run
    model = keras.saving.load_model(output_dir / "matrix_capsnet.keras")
    assert type(model).__name__ == "MatrixCapsNet"
    with np.load(mnist_path) as data:
        images = data["x_test"][:TEST_SAMPLES, ..., None].astype("float32") / 255.0
        labels = data["y_test"][:TEST_SAMPLES]
    activations = model.predict(images, batch_size=BATCH_SIZE, verbose=0)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    accuracy = float(np.mean(np.argmax(activations, axis=-1) == labels))
    assert accuracy == pytest.approx(metrics["test_accuracy"])


def test_defaults_are_the_recipe():
    args = example_module(EXAMPLE).parse_args([])
    assert (args.model, args.epochs, args.batch_size) == ("small", 10, 24)
    assert (args.lr, args.lr_decay, args.final_inverse_temperature) == (3e-3, 1.0, 0.1)


@pytest.mark.parametrize(
    "argv",
    [["--epochs", "0"], ["--batch-size", "0"], ["--train-samples", "0"],
     ["--lr", "0"], ["--final-inverse-temperature", "-1"], ["--model", "huge"],
     ["--backend", "numpy"]],
)  # fmt: skip
def test_bad_options_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as error:
        example_module(EXAMPLE).parse_args(argv)
    assert error.value.code == 2
    assert capsys.readouterr().err.startswith("usage: ")


def _data_file(directory: Path, case: str) -> Path:
    path = directory / "data.npz"
    if case == "text":
        path.write_text("x_train,y_train\n0,7\n")
    elif case == "no_y_test":
        write_npz(path, y_test=None)
    elif case == "tiny_images":
        rng = np.random.default_rng(0)
        write_npz(
            path,
            x_train=rng.integers(0, 256, (20, 8, 8), dtype="uint8"),
            x_test=rng.integers(0, 256, (10, 8, 8), dtype="uint8"),
        )
    elif case == "good":
        write_npz(path)
    return path


@pytest.mark.parametrize(
    "case, options, message",
    [
        ("missing", [], "data.npz: no such file"),
        ("text", [], "data.npz: not a readable .npz file"),
        ("no_y_test", [], "data.npz: missing key(s) y_test"),
        ("tiny_images", [], "image_shape`: it is too small"),
        ("good", ["--train-samples", "21"], "--train-samples 21 is more than the 20"),
    ],
)  # fmt: skip
def test_bad_data_is_one_error_line_and_exit_code_2(
    case, options, message, tmp_path, capsys
):
    path = _data_file(tmp_path, case)
    output_dir = tmp_path / "out"
    argv = ["--data", str(path), "--output-dir", str(output_dir), *options]
    assert example_module(EXAMPLE).main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert out == "" and not output_dir.exists()


@pytest.mark.slow
@pytest.mark.backend_independent("the script's data checks")
def test_bad_data_on_the_command_line_exits_2_without_a_traceback(tmp_path):
    path = _data_file(tmp_path, "text")
    result = run_example(tiny_command(path, tmp_path / "out"), timeout=600)
    assert result.returncode == 2, output_of(result)
    assert "Traceback" not in result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "not a readable .npz file" in lines[0], result.stderr
    assert "backend:" not in result.stdout
