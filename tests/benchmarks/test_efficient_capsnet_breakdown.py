"""`benchmarks/efficient_capsnet_breakdown.py` times every form on the current backend.

Tiny batches, one step: this checks the plumbing and that each form removes
the part it names, not the speed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BREAKDOWN = REPO_ROOT / "benchmarks" / "efficient_capsnet_breakdown.py"
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

pytestmark = pytest.mark.slow


def test_breakdown_times_keras_and_the_twin_in_every_form(tmp_path):
    backend = keras.backend.backend()
    output = tmp_path / "breakdown.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(BREAKDOWN),
            "--backends",
            backend,
            "--batch",
            "2",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    milliseconds = json.loads(output.read_text())["milliseconds"][backend]
    forms = ("full", "sgd", "no-batch-norm", "no-decoder")
    assert set(milliseconds) == {
        f"{framework}|{form}" for framework in ("keras", "torch") for form in forms
    }
    assert all(math.isfinite(ms) and ms > 0 for ms in milliseconds.values())
    rows = [line for line in completed.stdout.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(forms)


def test_twin_forms_drop_the_weights_of_the_parts_they_remove():
    import torch_efficient_capsnet as twin

    def weights(model) -> int:
        return sum(p.numel() for p in model.parameters())

    full = weights(twin.EfficientCapsNet())
    # gamma and beta of 32 + 64 + 64 + 128 channels.
    assert full - weights(twin.EfficientCapsNet(batch_norm=False)) == 2 * 288
    # 160-512-1024-784 with biases.
    decoder = 160 * 512 + 512 + 512 * 1024 + 1024 + 1024 * 784 + 784
    assert full - weights(twin.EfficientCapsNet(decoder=False)) == decoder
