"""Runs of the example scripts for their tests: modules, commands, logs, checkpoints.

Where a helper names no script, it is `examples/capsnet_mnist.py`.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "capsnet_mnist.py"
BACKEND = keras.backend.backend()
# JAX runs the space-to-depth form of PrimaryCapsule's stride-2 convolution,
# whose CPU backward pass is much faster there; the other backends the
# direct one, so both paths of the option run.
PRIMARY_CONV = "space_to_depth" if BACKEND == "jax" else "direct"
# Two training steps an epoch: enough for a NaN to appear mid-epoch.
TRAIN_SAMPLES, TEST_SAMPLES, BATCH_SIZE = 16, 8, 8
STEPS_PER_EPOCH = TRAIN_SAMPLES // BATCH_SIZE


def example_env(backend: str) -> dict[str, str]:
    return {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}


def example_module(path: Path = EXAMPLE) -> Any:
    """The example script at `path`, imported afresh, its `main` not run."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_command(data: Path, output_dir: Path, *options: str) -> list[str]:
    """The example on a tiny slice of `data`; `options` add to or override these."""
    return [
        sys.executable, str(EXAMPLE),
        "--backend", BACKEND,
        "--data", str(data),
        "--train-samples", str(TRAIN_SAMPLES),
        "--test-samples", str(TEST_SAMPLES),
        "--batch-size", str(BATCH_SIZE),
        "--primary-conv", PRIMARY_CONV,
        "--output-dir", str(output_dir),
        *options,
    ]  # fmt: skip


def run_example(
    command: list[str], timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=example_env(BACKEND),
        timeout=timeout,
    )


def output_of(result: subprocess.CompletedProcess) -> str:
    """The ends of a run's stdout and stderr, for an assertion message."""
    return result.stdout[-2000:] + result.stderr[-3000:]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def log_rows(output_dir: Path) -> list[dict[str, str]]:
    """The finished epochs in `training_log.csv`: whole lines only, no header."""
    path = output_dir / "training_log.csv"
    if not path.exists():
        return []
    text = path.read_text()
    # A line being written is not an epoch yet.
    text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(text.splitlines()))


def logged_epochs(output_dir: Path) -> list[int]:
    return [int(row["epoch"]) for row in log_rows(output_dir)]


def checkpointed_epochs(output_dir: Path) -> int:
    """Epochs in the checkpoint, from `BackupAndRestore`'s metadata; 0 if none."""
    path = output_dir / "backup" / "training_metadata.json"
    try:
        return json.loads(path.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        # Not written yet, or being written.
        return 0


def checkpoint_arrays(output_dir: Path) -> list[np.ndarray]:
    """Every array in the checkpoint: the weights and the optimizer's state."""
    arrays = []

    def collect(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            arrays.append(np.asarray(item[()]))

    with h5py.File(output_dir / "backup" / "latest.weights.h5", "r") as weights:
        weights.visititems(collect)
    return arrays


def optimizer_steps(output_dir: Path) -> int:
    model = keras.saving.load_model(output_dir / "capsnet.keras")
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def wait_until(
    condition: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended (code {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.02)


def write_npz(path: Path, **arrays: Any) -> Path:
    """A small MNIST-like `.npz`, 20 training and 10 test images; `arrays` replace
    its entries, and an entry given as `None` is left out."""
    rng = np.random.default_rng(0)
    data = {
        "x_train": rng.integers(0, 256, (20, 28, 28), dtype="uint8"),
        "y_train": np.arange(20) % 10,
        "x_test": rng.integers(0, 256, (10, 28, 28), dtype="uint8"),
        "y_test": np.arange(10),
        **arrays,
    }
    np.savez(path, **{key: value for key, value in data.items() if value is not None})
    return path
