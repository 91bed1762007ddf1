"""`benchmarks/benchmark.py --smoke` runs end to end and writes well-formed results.

Only the current backend's Keras contender and its hand-written baseline run,
on tiny batches, so this checks the plumbing, not the speed. The routing and
CapsNet benches here; Efficient-CapsNet and the matrix capsules in
`test_benchmark_twins.py`.
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
BENCHMARK = REPO_ROOT / "benchmarks" / "benchmark.py"


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("benchmark")
    backend = keras.backend.backend()
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--smoke",
            "--backends",
            backend,
            "--benches",
            "routing,capsnet",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, (
        completed.stdout[-2000:] + completed.stderr[-4000:]
    )
    assert (output / "results.png").stat().st_size > 0
    assert "| bench |" in (output / "results.md").read_text()
    return json.loads((output / "results.json").read_text())


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


pytestmark = pytest.mark.slow


def test_run_metadata(smoke_result):
    assert smoke_result["schema_version"] == 1
    assert smoke_result["settings"]["smoke"] is True
    assert smoke_result["date"]
    machine = smoke_result["machine"]
    assert machine["cpu_model"] and machine["logical_cpus"] >= 1
    versions = smoke_result["versions"]
    assert {"python", "numpy", "keras"} <= set(versions)
    assert keras.backend.backend() in versions
    assert set(smoke_result["method"]) == {"timing", "memory"}


def test_every_bench_and_phase_has_keras_and_a_baseline(smoke_result):
    backend = keras.backend.backend()
    seen = {(r["bench"], r["phase"], r["contender"]) for r in smoke_result["rows"]}
    for bench, phase in (
        ("routing", "train"),
        ("capsnet", "train"),
        ("capsnet", "infer"),
    ):
        # On JAX the default ("auto") Keras CapsNet uses the space-to-depth
        # convolution, whose hand-written twin is `jax-s2d`.
        baseline = "torch"
        if backend == "jax":
            baseline = "jax-s2d" if bench == "capsnet" else "jax"
        assert (bench, phase, "keras") in seen
        assert (bench, phase, baseline) in seen
    assert all(r["process"] == backend for r in smoke_result["rows"])


def test_numbers_are_positive(smoke_result):
    for row in smoke_result["rows"]:
        assert _positive(row["images_per_s"]), row
        assert _positive(row["step_ms"]), row
        ratio = row["vs_jax"] if keras.backend.backend() == "jax" else row["vs_torch"]
        assert _positive(ratio), row
    for record in smoke_result["memory"]:
        assert _positive(record["rss_before_steps_mb"]), record
        assert math.isfinite(record["peak_rss_delta_mb"]), record
    capsnet = [r for r in smoke_result["timing"] if r["bench"] == "capsnet"]
    assert {r["params"] for r in capsnet} == {8_215_568}


def test_targets_are_reported(smoke_result):
    for target in smoke_result["targets"]:
        assert set(target) == {"target", "contender", "value", "threshold", "met"}
        assert isinstance(target["met"], bool)
