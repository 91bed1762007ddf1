"""The MNIST example end to end, in a subprocess, on a tiny slice."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_capsules
from tests.examples._example_runs import (
    BACKEND,
    EXAMPLE,
    PRIMARY_CONV,
    STEPS_PER_EPOCH,
    checkpoint_arrays,
    checkpointed_epochs,
    error_lines,
    example_env,
    example_module,
    log_rows,
    logged_epochs,
    optimizer_steps,
    output_of,
    run_example,
    tiny_command,
    wait_until,
    write_npz,
)
from tests.visualization.png import assert_png_with_content

# One cross-backend pair per backend run; the three runs close the cycle.
OTHER_BACKEND = {"tensorflow": "torch", "torch": "jax", "jax": "tensorflow"}[BACKEND]
ACCURACY_LINE = re.compile(r"^test accuracy: (0\.\d{4}|1\.0000)$")
RESUMING_LINE = re.compile(
    r"^resuming from the checkpoint in (?P<backup>.+): .*"
    r"continuing with epoch (?P<epoch>\d+)"
)
# verbose=2's line at the end of an epoch, e.g. `2/2 - 4s - 2s/step - loss: ...`.
EPOCH_SUMMARY = re.compile(r"^\d+/\d+ - \d+m?s - ")


def _test_images(mnist_path: Path, count: int) -> np.ndarray:
    with np.load(mnist_path) as data:
        return data["x_test"][:count, ..., None].astype("float32") / 255.0


def _epoch_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if "Epoch " in line]


def _epoch_summaries(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if EPOCH_SUMMARY.match(line)]


# Tiny slices, one training step: the point is the whole pipeline, not the
# accuracy. A small batch also keeps JAX quick, whose CPU backward pass of
# the stride-2 convolution is slow; JAX runs the space-to-depth form of it
# (`PRIMARY_CONV`), the other backends the direct one.
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
        command, capture_output=True, text=True, env=example_env(BACKEND), timeout=300
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
    assert set(metrics["history"]) >= {"loss", "accuracy", "val_accuracy"}


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
    lengths = model.predict(_test_images(mnist_path, 8), verbose=0)
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
    lengths = model.predict(images, verbose=0)
    reconstructions = keras.ops.convert_to_numpy(model.decode(model.encode(images)))
    code = (
        "import sys, numpy as np, keras, keras_capsules\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "images = np.load(sys.argv[2])\n"
        "lengths = model.predict(images, verbose=0)\n"
        "reconstructions = keras.ops.convert_to_numpy(\n"
        "    model.decode(model.encode(images)))\n"
        "np.savez(sys.argv[3], lengths=lengths, reconstructions=reconstructions,\n"
        "         backend=keras.backend.backend())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(output_dir / "capsnet.keras"),
         str(tmp_path / "images.npy"), str(tmp_path / "other.npz")],
        capture_output=True, text=True, env=example_env(OTHER_BACKEND), timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    other = np.load(tmp_path / "other.npz")
    assert str(other["backend"]) == OTHER_BACKEND
    np.testing.assert_allclose(other["lengths"], lengths, atol=1e-4)
    np.testing.assert_allclose(other["reconstructions"], reconstructions, atol=1e-4)


def test_random_shift_moves_content_by_at_most_max_shift():
    example = example_module()
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
    example = example_module()
    args = example.parse_args(["--batch-size", "4", "--seed", "3"])
    images = np.random.default_rng(0).uniform(size=(10, 8, 8, 1)).astype("float32")
    labels = np.eye(3, dtype="float32")[np.arange(10) % 3]
    batches = example.shifted_batches(images, labels, args)
    assert len(batches) == 3
    x, y = batches[2]
    assert x.shape == (2, 8, 8, 1) and y.shape == (2, 3)
    again = example.shifted_batches(images, labels, args)[0][0]
    np.testing.assert_array_equal(batches[0][0], again)
    # Split over 4 devices, the last batch of 2 cannot be: it is left out.
    assert len(example.shifted_batches(images, labels, args, devices=4)) == 2
    split = example.shifted_batches(images[:7], labels[:7], args, devices=2)
    assert len(split) == 2 and len(split[1][0]) == 2


@pytest.mark.parametrize(
    "argv", [["--epochs", "0"], ["--shift", "-1"], ["--backend", "numpy"]]
)
def test_bad_options_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as error:
        example_module().parse_args(argv)
    assert error.value.code == 2


@pytest.mark.skipif(BACKEND == "jax", reason="data parallelism is set up on JAX")
def test_data_parallel_is_refused_off_jax(capsys):
    code = example_module().main(["--data-parallel", "--data", "unused.npz"])
    assert code == 2
    message = capsys.readouterr().err
    assert "JAX" in message and BACKEND in message and "--backend jax" in message


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution is JAX-only here")
def test_data_parallel_shards_over_all_devices():
    example = example_module()
    devices = len(keras.distribution.list_devices())
    try:
        assert example.set_up_data_parallel(batch_size=devices * 4) == devices
        distribution = keras.distribution.distribution()
        assert isinstance(distribution, keras.distribution.DataParallel)
    finally:
        keras.distribution.set_distribution(None)


@pytest.mark.slow
def test_training_log_has_a_row_per_epoch_with_timing_and_test_metrics(example_run):
    output_dir, _ = example_run
    (row,) = log_rows(output_dir)
    assert row["epoch"] == "0" and float(row["epoch_seconds"]) > 0
    assert {"loss", "val_loss", "val_accuracy", "learning_rate"} <= set(row)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["epoch_seconds"] == [float(row["epoch_seconds"])]
    assert checkpointed_epochs(output_dir) == 1


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, mnist_path):
    """A run of 2 epochs killed in the second, then run again to its end."""
    output_dir = tmp_path_factory.mktemp("resumed")
    command = tiny_command(mnist_path, output_dir, "--epochs", "2")
    killed_log = output_dir.parent / f"{output_dir.name}_killed.log"
    with killed_log.open("w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=example_env(BACKEND)
        )
        try:
            # The checkpoint is written before the log's row; waiting for both
            # leaves no race with the first epoch's end.
            wait_until(
                lambda: checkpointed_epochs(output_dir) and logged_epochs(output_dir),
                process,
                "checkpoint and log row of the first epoch",
                timeout=300,
            )
        finally:
            process.kill()
            process.wait()
    # The second epoch lasts far longer than the 20 ms poll: the kill lands in it.
    killed_in_epoch_2 = (
        checkpointed_epochs(output_dir) == 1
        and logged_epochs(output_dir) == [0]
        and not (output_dir / "capsnet.keras").exists()
    )
    assert killed_in_epoch_2, killed_log.read_text()[-3000:]
    result = run_example(command)
    assert result.returncode == 0, output_of(result)
    return output_dir, result.stdout


@pytest.mark.slow
@pytest.mark.backend_independent("the example's checkpoints, logs and error lines")
def test_rerun_after_a_kill_continues_with_the_next_epoch(resumed_run):
    output_dir, stdout = resumed_run
    resuming = [line for line in stdout.splitlines() if line.startswith("resuming")]
    assert len(resuming) == 1, stdout
    match = RESUMING_LINE.match(resuming[0])
    assert match, resuming[0]
    assert match["backup"] == str(output_dir / "backup") and match["epoch"] == "2"
    assert _epoch_lines(stdout) == ["Epoch 2/2"]
    assert logged_epochs(output_dir) == [0, 1]
    assert checkpointed_epochs(output_dir) == 2
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(metrics["history"]["loss"]) == 2


@pytest.mark.slow
@pytest.mark.backend_independent("the example's checkpoints, logs and error lines")
def test_resumed_run_takes_the_steps_of_an_uninterrupted_one(resumed_run):
    output_dir, _ = resumed_run
    # The optimizer's state is in the checkpoint: its step count goes on.
    assert optimizer_steps(output_dir) == 2 * STEPS_PER_EPOCH


def _copy_checkpoint_and_log(source: Path, output_dir: Path) -> Path:
    """A copy of a run's resumable state, for a test to run on without changing it."""
    shutil.copytree(source / "backup", output_dir / "backup")
    shutil.copy(source / "training_log.csv", output_dir)
    return output_dir


@pytest.mark.slow
@pytest.mark.backend_independent("the example's checkpoints, logs and error lines")
def test_fresh_starts_over(resumed_run, mnist_path, tmp_path):
    output_dir = _copy_checkpoint_and_log(resumed_run[0], tmp_path / "run")
    # One epoch: had it resumed, the run would find its 2 epochs done and
    # train none, keeping the log's 2 rows and the 4 optimizer steps.
    command = tiny_command(mnist_path, output_dir, "--epochs", "1", "--fresh")
    result = run_example(command)
    assert result.returncode == 0, output_of(result)
    assert "resuming" not in result.stdout
    assert len(_epoch_summaries(result.stdout)) == 1
    assert logged_epochs(output_dir) == [0]
    assert checkpointed_epochs(output_dir) == 1
    assert optimizer_steps(output_dir) == STEPS_PER_EPOCH


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory, mnist_path):
    """The first epoch at the usual learning rate, the second at 1e30.

    Adam's first step at 1e30 moves every weight by ~1e30; the forward pass
    of the next step overflows, and its loss is NaN, on every backend.
    """
    output_dir = tmp_path_factory.mktemp("nan")
    command = tiny_command(
        mnist_path, output_dir, "--epochs", "2", "--lr-decay", "1e33"
    )
    return output_dir, run_example(command)


@pytest.mark.slow
@pytest.mark.backend_independent("the example's checkpoints, logs and error lines")
def test_nan_loss_stops_training_with_one_error_line(nan_run):
    output_dir, result = nan_run
    assert result.returncode == 1, output_of(result)
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: the loss became NaN")
    assert str(output_dir / "backup") in lines[0]
    assert "Traceback" not in result.stderr
    assert "test accuracy" not in result.stdout
    assert not (output_dir / "capsnet.keras").exists()


@pytest.mark.slow
@pytest.mark.backend_independent("the example's checkpoints, logs and error lines")
def test_nan_loss_keeps_the_checkpoint_of_the_last_good_epoch(nan_run):
    output_dir, _ = nan_run
    assert checkpointed_epochs(output_dir) == 1
    # After the step at 1e30 the weights would be ~1e30, then NaN.
    arrays = [a for a in checkpoint_arrays(output_dir) if a.dtype.kind in "fiu"]
    assert arrays and all(np.all(np.abs(a) < 1e6) for a in arrays)
    # The log, like the checkpoint, ends with the last good epoch.
    assert logged_epochs(output_dir) == [0]


@pytest.mark.slow
@pytest.mark.backend_independent("the example's checkpoints, logs and error lines")
def test_redirected_output_has_one_line_per_epoch(example_run, nan_run):
    for stdout, epochs in ((example_run[1], 1), (nan_run[1].stdout, 2)):
        # No progress bar: it redraws its line with "\r" at every step.
        assert "\r" not in stdout and "━" not in stdout
        assert len(_epoch_summaries(stdout)) == epochs, stdout
    # Keras heads each epoch with `Epoch n/N` when there are several.
    assert _epoch_lines(nan_run[1].stdout) == ["Epoch 1/2", "Epoch 2/2"]


def _data_file(directory: Path, case: str) -> Path:
    """A `--data` file that is bad in the way `case` names (`good` is not)."""
    path = directory / "data.npz"
    if case == "missing":
        return path
    if case == "text":
        path.write_text("x_train,y_train\n0,7\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "npy":
        path = directory / "data.npy"
        np.save(path, np.zeros((20, 28, 28), "uint8"))
    else:
        changes = {
            "no_y_test": {"y_test": None},
            "flat_x_train": {"x_train": np.zeros((20, 784), "uint8")},
        }
        write_npz(path, **changes.get(case, {}))
        if case == "truncated":
            path.write_bytes(path.read_bytes()[:200])
    return path


@pytest.mark.parametrize(
    "case, options, message",
    [
        ("missing", [], "data.npz: no such file"),
        ("no_y_test", [], "data.npz: missing key(s) y_test; expected x_train"),
        ("flat_x_train", [], "expected x_train of shape (N, height, width)"),
        ("text", [], "data.npz: not a readable .npz file"),
        ("empty", [], "data.npz: not a readable .npz file"),
        ("truncated", [], "data.npz: not a readable .npz file"),
        ("npy", [], "data.npy: holds one array (.npy), not an .npz"),
        ("good", ["--train-samples", "21"], "--train-samples 21 is more than the 20"),
        ("good", ["--test-samples", "11"], "--test-samples 11 is more than the 10"),
    ],
)  # fmt: skip
def test_bad_data_is_one_error_line_and_exit_code_2(
    case, options, message, tmp_path, capsys
):
    path = _data_file(tmp_path, case)
    output_dir = tmp_path / "out"
    argv = ["--data", str(path), "--output-dir", str(output_dir), *options]
    assert example_module().main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert out == "" and not output_dir.exists()


@pytest.mark.parametrize(
    "option", ["--epochs", "--batch-size", "--train-samples", "--test-samples"]
)
def test_non_positive_counts_are_usage_errors(option, capsys):
    with pytest.raises(SystemExit) as error:
        example_module().main([option, "0"])
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and err.endswith(
        f"error: {option} must be positive\n"
    )


@pytest.mark.slow
@pytest.mark.backend_independent("the example's checkpoints, logs and error lines")
def test_bad_data_on_the_command_line_exits_2_without_a_traceback(tmp_path):
    path = _data_file(tmp_path, "text")
    result = run_example(tiny_command(path, tmp_path / "out", "--epochs", "1"))
    assert result.returncode == 2, output_of(result)
    assert "Traceback" not in result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "not a readable .npz file" in lines[0], result.stderr
    assert "backend:" not in result.stdout
