"""`benchmarks/method_table.py --smoke` runs on the current backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "method_table.py"


@pytest.mark.slow
def test_smoke_run_measures_every_asked_model(tmp_path):
    backend = keras.backend.backend()
    env = {**os.environ, "KERAS_BACKEND": backend}
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--smoke",
            "--models",
            "CapsNet,EfficientCapsNet",
            "--output",
            str(tmp_path),
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    seconds = time.perf_counter() - start
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["settings"]["smoke"] is True
    assert data["settings"]["backends"] == [backend]
    assert not data["errors"]
    assert [row["model"] for row in data["models"]] == ["CapsNet", "EfficientCapsNet"]
    for row in data["models"]:
        measured = row["backends"][backend]
        assert measured["train_images_per_s"] > 0, row
        assert measured["infer_images_per_s"] > 0, row
        assert row["trainable_weights"] > 0
        assert "batch" in row["recipe"]
        assert 0.0 <= row["accuracy"]["test_accuracy"] <= 1.0
    assert (tmp_path / "method_table.png").exists()
    print(f"smoke run: {seconds:.0f} s")


def test_a_smoke_run_is_never_published():
    sys.path.insert(0, str(REPO / "scripts" / "docs"))
    import method_table_results

    published = REPO / method_table_results.METRICS
    if published.exists():
        assert not json.loads(published.read_text())["settings"]["smoke"]
