"""Shared test set-up. The backend is fixed per process by KERAS_BACKEND."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST = REPO_ROOT.parent / "shared" / "data" / "mnist.npz"


def pytest_report_header(config: pytest.Config) -> str:
    return f"keras {keras.__version__}, backend: {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32 and a fresh name scope.

    `free_memory=False` skips a full garbage collection that costs ~0.3 s
    per test once TensorFlow, PyTorch and JAX are imported.
    """
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    path = Path(os.environ.get("MNIST_PATH", DEFAULT_MNIST))
    if not path.exists():
        pytest.skip(f"MNIST not found at {path}: set MNIST_PATH to an mnist.npz")
    return path
