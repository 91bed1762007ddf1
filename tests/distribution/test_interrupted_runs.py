"""Killed training runs resume: each epoch is trained and logged exactly once.

One process: `examples/capsnet_mnist.py` on a tiny generated data set,
killed at seeded random moments and once while it writes its checkpoint,
rerun with the same command after every kill. Two processes:
`MultiWorkerMirroredStrategy` with `keras.callbacks.BackupAndRestore`, one
worker killed mid-run, both rerun (`interrupted_worker.py`).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import time

import keras
import numpy as np
import pytest

from tests.distribution import processes

pytestmark = pytest.mark.slow

ROOT = processes.ROOT
EPOCHS = 3


def backend_only(backend: str, why: str):
    return pytest.mark.skipif(
        keras.backend.backend() != backend,
        reason=f"runs in the {backend} leg of the matrix only ({why}); this "
        f"run's backend is {keras.backend.backend()}",
    )


def logged_epochs(log_path) -> list[int]:
    if not log_path.exists():
        return []
    with log_path.open() as log:
        return [int(row["epoch"]) for row in csv.DictReader(log)]


def logged_losses(log_path) -> list[float]:
    with log_path.open() as log:
        return [float(row["loss"]) for row in csv.DictReader(log)]


def tiny_mnist(path) -> None:
    """16 training and 8 test images of 20x20 pixels (CapsNet's smallest)."""
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (16, 20, 20), dtype="uint8"),
        y_train=rng.integers(0, 3, 16),
        x_test=rng.integers(0, 256, (8, 20, 20), dtype="uint8"),
        y_test=rng.integers(0, 3, 8),
    )


def example_command(data, output_dir) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "examples" / "capsnet_mnist.py"),
        "--backend",
        "torch",
        "--data",
        str(data),
        "--train-samples",
        "16",
        "--test-samples",
        "8",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "8",
        "--output-dir",
        str(output_dir),
    ]


def run_until(command, log, env, kill_when, timeout=180) -> tuple[int, str, float]:
    """Runs `command` until it exits or `kill_when(seconds)` says to kill it.

    Returns the exit code (`-SIGKILL` when killed), the output and the
    seconds it ran. The process group is always reaped.
    """
    with processes.workers([command], [log], env) as (process,):
        started = time.monotonic()
        while process.poll() is None:
            seconds = time.monotonic() - started
            if kill_when(seconds):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                break
            if seconds > timeout:
                raise AssertionError(processes.tails([log]))
            time.sleep(0.01)
        seconds = time.monotonic() - started
    return process.returncode, log.read_text(errors="replace"), seconds


@backend_only("torch", "the example's checkpointing is the same on every backend")
def test_killed_example_resumes_and_trains_each_epoch_once(tmp_path):
    data = tmp_path / "tiny.npz"
    tiny_mnist(data)
    # One thread: the same sums in the same order in every run, so that an
    # interrupted run's losses can be compared with an uninterrupted one's.
    env = processes.worker_env(OMP_NUM_THREADS="1")

    reference_dir = tmp_path / "uninterrupted"
    code, output, duration = run_until(
        example_command(data, reference_dir), tmp_path / "ref.log", env, lambda s: False
    )
    assert code == 0, output[-3000:]
    expected_losses = logged_losses(reference_dir / "training_log.csv")
    assert logged_epochs(reference_dir / "training_log.csv") == list(range(EPOCHS))

    output_dir = tmp_path / "interrupted"
    backup = output_dir / "backup"
    command = example_command(data, output_dir)
    rng = np.random.default_rng(26)
    # Four kills at random moments of a whole run's length, and one as soon
    # as a checkpoint starts being written (the pending weights file exists).
    moments = list(rng.uniform(0.1, 1.0, size=4) * duration) + ["checkpoint"]
    rng.shuffle(moments)
    report = []
    for attempt, moment in enumerate([*moments, None]):
        if moment == "checkpoint":

            def kill_when(seconds):
                return (backup / "pending.weights.h5").exists()
        elif moment is None:

            def kill_when(seconds):
                return False
        else:

            def kill_when(seconds, moment=float(moment)):
                return seconds >= moment

        code, output, seconds = run_until(
            command, tmp_path / f"run{attempt}.log", env, kill_when
        )
        resumed = [line for line in output.splitlines() if line.startswith("resuming")]
        report.append(
            {
                "kill": moment
                if moment is None or moment == "checkpoint"
                else round(float(moment), 1),
                "exit": code,
                "seconds": round(seconds, 1),
                "resumed": resumed,
                "logged_epochs": logged_epochs(output_dir / "training_log.csv"),
            }
        )
        # Killed, or finished: never failed on what an earlier kill left.
        assert code in (0, -signal.SIGKILL), output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        if code == 0 and moment is not None:
            # Finished before the kill: what it logged is complete; the
            # next attempt starts a new run.
            assert logged_epochs(output_dir / "training_log.csv") == list(range(EPOCHS))
            for path in output_dir.iterdir():
                if path.is_file():
                    path.unlink()
            for path in backup.iterdir():
                path.unlink()
    print(json.dumps(report, indent=1))
    killed_writing = [run for run in report if run["kill"] == "checkpoint"]
    assert killed_writing[0]["exit"] == -signal.SIGKILL, report
    assert code == 0
    assert logged_epochs(output_dir / "training_log.csv") == list(range(EPOCHS))
    # Each epoch trained once, from the weights of the epoch before: the
    # same losses as the uninterrupted run (one thread, same batches; the
    # CSV holds them to 7 significant digits).
    np.testing.assert_allclose(
        logged_losses(output_dir / "training_log.csv"), expected_losses, rtol=1e-5
    )


INTERRUPTED_WORKER = ROOT / "tests" / "distribution" / "interrupted_worker.py"
WORKER_EPOCHS = 4


def two_workers(workdir, ports=None) -> list[list[str]]:
    """The launch commands of the two workers, by default on two ports free now."""
    ports = [f"--port={port}" for port in ports or processes.free_ports(2)]
    return [
        [sys.executable, str(INTERRUPTED_WORKER), "--rank", str(rank), *ports]
        + ["--workdir", str(workdir), "--epochs", str(WORKER_EPOCHS)]
        for rank in (0, 1)
    ]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_workers(workdir, name, env, timeout=240) -> list[dict]:
    workdir.mkdir(exist_ok=True)
    logs = [workdir / f"{name}_rank{rank}.log" for rank in (0, 1)]
    with processes.workers(two_workers(workdir), logs, env) as running:
        outputs = processes.wait_all(running, logs, timeout)
    return [json_lines(output) for output in outputs]


@backend_only(
    "tensorflow",
    "MultiWorkerMirroredStrategy is TensorFlow's; one backend keeps CI short",
)
def test_killed_worker_of_multi_worker_run_resumes(tmp_path):
    from tests.distribution import capsule_runs as runs

    env = processes.worker_env()
    uninterrupted = run_workers(tmp_path / "uninterrupted", "run", env)
    expected_steps = WORKER_EPOCHS * runs.STEPS
    assert [lines[-1]["steps"] for lines in uninterrupted] == [expected_steps] * 2
    expected = runs.load_arrays(uninterrupted[0][-1]["weights"])[0]
    ends = [line["time"] for line in uninterrupted[0] if "epoch_end" in line]
    epoch_seconds = float(np.median(np.diff(ends)))

    workdir = tmp_path / "interrupted"
    rng = np.random.default_rng(26)
    victim = int(rng.integers(0, 2))
    logs = [workdir / f"killed_rank{rank}.log" for rank in (0, 1)]
    workdir.mkdir()
    with processes.workers(two_workers(workdir), logs, env) as running:
        # Kill the victim at a random moment of its second or third epoch,
        # once the chief's checkpoint holds the first.
        deadline = time.monotonic() + 240
        while not (workdir / "backup" / "training_metadata.json").exists() or not any(
            line.get("epoch_end") == 0 for line in json_lines(logs[victim].read_text())
        ):
            assert all(p.poll() is None for p in running), processes.tails(logs)
            assert time.monotonic() < deadline, processes.tails(logs)
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.0, 1.5)) * epoch_seconds)
        os.killpg(running[victim].pid, signal.SIGKILL)
        # Its partner cannot go on without it; a scheduler would stop the
        # job. The `workers` context kills it.
        time.sleep(1.0)
    killed_at = [
        [
            line["epoch_end"]
            for line in json_lines(log.read_text())
            if "epoch_end" in line
        ]
        for log in logs
    ]
    finished = max(max(epochs, default=-1) for epochs in killed_at) + 1
    assert finished < WORKER_EPOCHS, f"the run ended before the kill: {killed_at}"

    resumed = run_workers(workdir, "resumed", env)
    report = {
        "victim": victim,
        "epochs_before_kill": killed_at,
        "resumed_from": [lines[-1]["initial_epoch"] for lines in resumed],
        "epochs_after": [
            [line["epoch_end"] for line in lines if "epoch_end" in line]
            for lines in resumed
        ],
        "steps": [lines[-1]["steps"] for lines in resumed],
    }
    print(json.dumps(report))
    # Both continue after the last epoch the chief's checkpoint holds: the
    # last finished one, or the one before where the kill fell between the
    # end of an epoch and its checkpoint.
    start = report["resumed_from"][0]
    assert report["resumed_from"] == [start, start], report
    assert 1 <= start and finished - 1 <= start <= finished, report
    assert report["epochs_after"] == [list(range(start, WORKER_EPOCHS))] * 2, report
    assert report["steps"] == [expected_steps] * 2, report
    final = [runs.load_arrays(lines[-1]["weights"])[0] for lines in resumed]
    assert runs.max_difference(final[0], final[1]) == 0.0
    # The same weights as the uninterrupted run: the restored optimizer
    # continues exactly; the tolerance is the multi-process test's.
    from tests.distribution.test_multi_process import TOLERANCE

    assert runs.max_difference(final[0], expected) < TOLERANCE


def test_docs_show_the_launch_commands_the_test_runs():
    page = (ROOT / "docs" / "distributed.md").read_text()
    for command in two_workers("runs/resume", ports=[12355, 12356]):
        shown = " ".join(
            ["python", "tests/distribution/interrupted_worker.py", *command[2:]]
        )
        assert shown in page, f"docs/distributed.md does not show: {shown}"
