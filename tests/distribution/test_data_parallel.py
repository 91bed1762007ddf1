"""keras.distribution.DataParallel over two virtual CPU devices (JAX)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution is JAX-only; this test runs in the jax leg of the matrix",
)
def test_batch_is_sharded_and_training_matches_one_device():
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tests" / "distribution" / "data_parallel_worker.py"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=2))
    assert len(report["devices"]) == 2, report["devices"]
    assert report["num_devices"] == 2
    assert report["shard_shape"] == [4, 12, 12, 1], report["shard_shape"]
    rows = sorted(tuple(r[0]) for r in report["batch_rows_per_device"].values())
    assert rows == [(0, 4), (4, 8)], report["batch_rows_per_device"]
    assert report["max_weight_update"] > 1e-4, "training did not move the weights"
    assert report["max_weight_difference"] < 1e-5, report
