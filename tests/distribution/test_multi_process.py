"""Data parallelism on each backend's own engine equals one process.

Two processes on 127.0.0.1 (one for `MirroredStrategy`, over two logical
CPU devices) train a small CapsNet and a small EfficientCapsNet for
`STEPS` steps on global batches of `GLOBAL_BATCH` images split between
them; this process trains the same models from the same weights on the
whole batches. The test checks that the weights of every process equal
the single-process ones, that all processes hold the same weights, and
that each took the same number of optimizer steps.
"""

from __future__ import annotations

import json
import time

import keras
import pytest

from tests.distribution import capsule_runs as runs
from tests.distribution import processes

pytestmark = pytest.mark.slow

# Data parallelism computes the same sums in another order (each process
# sums its half of the batch, then the halves are added), and float32
# addition is not associative: the gradients differ by a few ulps, which
# Adam's normalisation can raise to a few 1e-6 in a weight after 3 steps.
# A wrong reduction (a sum instead of a mean, a missing or doubled
# replica, unsynchronised weights) moves weights by ~1e-3 or more.
TOLERANCE = 1e-5
# Every process applies the same all-reduced gradients to the same
# weights: they agree to the bit.
BETWEEN_PROCESSES = 0.0
TIMEOUT = 240


def backend_only(backend: str):
    return pytest.mark.skipif(
        keras.backend.backend() != backend,
        reason=f"runs in the {backend} leg of the matrix (KERAS_BACKEND={backend}); "
        f"this run's backend is {keras.backend.backend()}",
    )


def run_and_compare(tmp_path, engine: str, processes_count: int, ports: int):
    started = time.perf_counter()
    reference = {
        name: runs.train_reference(name, engine, tmp_path) for name in runs.MODELS
    }
    reference_seconds = time.perf_counter() - started
    chosen = processes.free_ports(ports)
    commands = [
        processes.worker_command(engine, rank, processes_count, chosen, tmp_path)
        for rank in range(processes_count)
    ]
    logs = [tmp_path / f"{engine}_rank{rank}.log" for rank in range(processes_count)]
    started = time.perf_counter()
    with processes.workers(commands, logs, processes.worker_env()) as running:
        outputs = processes.wait_all(running, logs, TIMEOUT)
    distributed_seconds = time.perf_counter() - started
    reports = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    summary = {"engine": engine, "reference_seconds": reference_seconds}
    summary["distributed_seconds"] = distributed_seconds
    for name in runs.MODELS:
        expected, expected_steps = reference[name]
        results = [
            runs.load_arrays(runs.result_path(tmp_path, name, rank))
            for rank in range(processes_count)
        ]
        to_reference = [runs.max_difference(w, expected) for w, _ in results]
        between = [runs.max_difference(w, results[0][0]) for w, _ in results]
        moved = runs.max_difference(
            expected, runs.load_arrays(runs.initial_weights_path(tmp_path, name))[0]
        )
        summary[name] = {
            "max_difference_to_one_process": max(to_reference),
            "max_difference_between_processes": max(between),
            "max_weight_update": moved,
            "steps": [int(extra["iterations"]) for _, extra in results],
            "images_per_second": [
                report[name]["images_per_second"] for report in reports
            ],
        }
        print(json.dumps(summary[name]))
        assert moved > 1e-4, f"{name}: training did not move the weights"
        assert all(
            int(extra["iterations"]) == expected_steps == runs.STEPS
            for _, extra in results
        ), summary[name]
        assert max(between) <= BETWEEN_PROCESSES, summary[name]
        assert max(to_reference) < TOLERANCE, summary[name]
    print(json.dumps({k: v for k, v in summary.items() if "seconds" in k}))
    return summary


# The launch commands of docs/distributed.md are the tests' own, with these
# ports and folder in place of those chosen at run time.
DOCS = processes.ROOT / "docs" / "distributed.md"
DOCS_PORTS, DOCS_WORKDIR = [12355, 12356], "runs/dp"


@pytest.mark.parametrize(
    "engine, processes_count, ports",
    [("jax", 2, 1), ("torch", 2, 1), ("tf-multi-worker", 2, 2), ("tf-mirrored", 1, 0)],
)
def test_docs_show_the_launch_commands_the_tests_run(engine, processes_count, ports):
    page = DOCS.read_text()
    for rank in range(processes_count):
        command = processes.worker_command(
            engine, rank, processes_count, DOCS_PORTS[:ports], DOCS_WORKDIR
        )
        shown = " ".join(
            ["python", "tests/distribution/multi_process_worker.py", *command[2:]]
        )
        assert shown in page, f"docs/distributed.md does not show: {shown}"


@backend_only("jax")
def test_jax_distributed_data_parallel(tmp_path):
    run_and_compare(tmp_path, "jax", processes_count=2, ports=1)


@backend_only("torch")
def test_torch_distributed_data_parallel(tmp_path):
    run_and_compare(tmp_path, "torch", processes_count=2, ports=1)


@backend_only("tensorflow")
def test_tensorflow_multi_worker_mirrored_strategy(tmp_path):
    run_and_compare(tmp_path, "tf-multi-worker", processes_count=2, ports=2)


@backend_only("tensorflow")
def test_tensorflow_mirrored_strategy_on_logical_devices(tmp_path):
    run_and_compare(tmp_path, "tf-mirrored", processes_count=1, ports=0)
