"""Starting worker processes on localhost and always reaping them.

Every worker starts in a session (process group) of its own, so that
`reap` can kill it together with whatever it started (TensorFlow's and
gloo's threads die with it; a launcher's children too). `workers` is a
context manager: the processes are killed on the way out, whether the
test passed, failed or timed out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "distribution" / "multi_process_worker.py"


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 now.

    The sockets are held until all are chosen, so the ports differ; another
    program could still take one before the worker binds it (unlikely on a
    test machine; the test then fails with the worker's error).
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker: this one, without what would pick devices."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("TF_CONFIG", "XLA_FLAGS", "KERAS_BACKEND", "JAX_ENABLE_X64")
    }
    env.update(PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", **extra)
    # One thread pool per process: two processes on two cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Starts `command` in a new session, its output (both streams) to `log`."""
    with open(log, "wb") as output:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def reap(process: subprocess.Popen) -> None:
    """Kills `process` and its process group, if still there, and waits for it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)


@contextlib.contextmanager
def workers(
    commands: list[list[str]], logs: list[Path], env: dict[str, str]
) -> Iterator[list[subprocess.Popen]]:
    processes = []
    try:
        for command, log in zip(commands, logs):
            processes.append(start(command, log, env))
        yield processes
    finally:
        for process in processes:
            reap(process)


def wait_all(
    processes: list[subprocess.Popen], logs: list[Path], timeout: float
) -> list[str]:
    """Waits for every process; returns their outputs.

    Fails the test, with the outputs' ends, as soon as one exits non-zero
    (its partners would wait for it forever) or when `timeout` seconds
    pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        codes = [process.poll() for process in processes]
        failed = [code for code in codes if code not in (None, 0)]
        if failed or all(code == 0 for code in codes):
            break
        if time.monotonic() > deadline:
            raise AssertionError(
                f"workers still running after {timeout:.0f} s:\n" + tails(logs)
            )
        time.sleep(0.2)
    if failed:
        raise AssertionError(f"a worker failed (exit codes {codes}):\n" + tails(logs))
    return [log.read_text(errors="replace") for log in logs]


def tails(logs: list[Path], characters: int = 3000) -> str:
    return "\n".join(
        f"--- {log.name} ---\n{log.read_text(errors='replace')[-characters:]}"
        for log in logs
        if log.exists()
    )


def worker_command(engine: str, rank: int, processes: int, ports: list[int], workdir):
    return [
        sys.executable,
        str(WORKER),
        engine,
        "--rank",
        str(rank),
        "--processes",
        str(processes),
        *[f"--port={port}" for port in ports],
        "--workdir",
        str(workdir),
    ]
