"""Shared test set-up. The backend is fixed per process by KERAS_BACKEND."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST = REPO_ROOT.parent / "shared" / "data" / "mnist.npz"
# `make test` runs the suite once per backend. A test marked
# `backend_independent` checks what no backend changes (a script's options,
# checkpoint files and logs, packaging): it runs in this backend's run only.
ONCE_BACKEND = "torch"


def pytest_report_header(config: pytest.Config) -> str:
    return f"keras {keras.__version__}, backend: {keras.backend.backend()}"


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    # A test named `*float64*` is a float64 test: `make test` runs them again
    # on JAX with x64 enabled, in their own process (`pytest -m float64`).
    for item in items:
        if "float64" in item.name:
            item.add_marker(pytest.mark.float64)


def _jax_without_x64() -> bool:
    if keras.backend.backend() != "jax":
        return False
    import jax

    return not jax.config.jax_enable_x64


def pytest_runtest_setup(item: pytest.Item) -> None:
    once = item.get_closest_marker("backend_independent")
    if once and keras.backend.backend() != ONCE_BACKEND:
        why = once.args[0] if once.args else "no backend changes what it checks"
        pytest.skip(
            f"backend-independent ({why}): runs once, in the "
            f"KERAS_BACKEND={ONCE_BACKEND} run of `make test`"
        )
    if item.get_closest_marker("float64") and _jax_without_x64():
        pytest.skip(
            "float64 on JAX needs x64, off in this process: `make test` runs "
            "the float64 tests with JAX_ENABLE_X64=1 (pytest -m float64)"
        )


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
