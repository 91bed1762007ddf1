"""Loading never runs code: crafted `.keras` files with a `Lambda` are refused.

`tests/_crafted.py` writes a model of the package's layers (or wrapping one
of its models) followed by a `Lambda` whose function creates a marker file.
Keras's `load_model` refuses it in safe mode, its default, without running
the function; with `safe_mode=False` the same file runs it, which shows the
file is a real threat and that the refusal test can fail.
"""

from __future__ import annotations

from pathlib import Path

import keras
import pytest

import keras_capsules
from tests._crafted import write_lambda_keras_file
from tests.robustness.sweep_entries import SMALL_CAPSNET

SAFE_MODE_ERROR = r"Lambda(.|\n)*safe_mode"


def _inner(kind: str):
    if kind == "layers":
        return None
    return keras_capsules.models.CapsNet(**SMALL_CAPSNET)


@pytest.fixture(params=["layers", "CapsNet"])
def crafted(request, tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code_ran"
    path = write_lambda_keras_file(
        tmp_path / "crafted.keras", marker, inner=_inner(request.param)
    )
    assert not marker.exists()
    return path, marker


def test_load_model_refuses_a_lambda_in_safe_mode(crafted) -> None:
    path, marker = crafted
    for kwargs in ({}, {"safe_mode": True}):  # the default, and explicitly
        with pytest.raises(ValueError, match=SAFE_MODE_ERROR):
            keras.saving.load_model(path, **kwargs)
        assert not marker.exists(), f"load_model(**{kwargs}) ran the Lambda's code"


def test_the_crafted_file_runs_code_when_loaded_unsafely(crafted) -> None:
    # What the refusal protects against: unsafe loading runs the bytecode.
    path, marker = crafted
    keras.saving.load_model(path, safe_mode=False)
    assert marker.exists()
