"""Set-up for the robustness tests."""

from __future__ import annotations

import keras
import pytest


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """As the root conftest's fixture of this name, without its `gc.collect()`.

    A full collection costs ~0.3 s per test once TensorFlow, PyTorch and JAX
    are imported; these many small tests only need float32 and fresh names.
    """
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)
    yield
    keras.config.set_dtype_policy("float32")
