"""Benchmarks keras_capsules against hand-written PyTorch and JAX CapsNets.

For each Keras backend (TensorFlow, PyTorch, JAX), one subprocess times the
Keras contenders and the hand-written baselines in turn, A B C A B C ...,
and keeps the best of `--repeats` timings of `--steps` steps each. Peak
memory is measured apart, one fresh subprocess per contender, bench and
phase, as the rise of peak RSS over the RSS after imports and model build
(smoke runs measure it in the timing process, to check the code only).
Writes `results.json`, `results.md` and `results.png` into `--output`.

    python benchmarks/benchmark.py                  # full run, CPU
    python benchmarks/benchmark.py --smoke          # seconds, for CI
    python benchmarks/benchmark.py --backends jax --benches routing
    python benchmarks/benchmark.py --benches efficient-capsnet,matrix-capsnet

See benchmarks/README.md for the method and the results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import report  # noqa: E402

BACKENDS = ("tensorflow", "torch", "jax", "jax-noynn")
# Processes that are a backend plus environment settings. XLA on CPU fuses
# dots with their elementwise consumers into YNNPACK kernels by default;
# for the routing they ran ~2x slower than XLA's own (README).
PROCESS_SETTINGS = {
    "jax-noynn": ("jax", {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}),
}

# Each backend's Keras contenders; the hand-written baselines run beside
# them in the same process, so every ratio compares interleaved timings.
# `common.runs` says which contender runs on which bench: Efficient-CapsNet
# and the matrix capsules have a PyTorch twin only, timed in every process.
DEFAULT_CONTENDERS = {
    "tensorflow": (
        "keras", "keras-jit", "keras-jit-s2d", "keras-stopgrad", "keras-bf16", "torch",
    ),
    "torch": (
        "keras", "keras-jit", "keras-stopgrad", "keras-bf16", "keras-s2d", "torch",
    ),
    # No bf16 for JAX: bfloat16 is emulated on this CPU (slower, README).
    # On JAX the default `keras` is the space-to-depth convolution ("auto").
    "jax": ("keras", "keras-direct", "keras-stopgrad", "jax", "jax-s2d", "torch"),
    "jax-noynn": ("keras", "jax", "jax-s2d", "torch"),
}  # fmt: skip
SMOKE_CONTENDERS = {
    "tensorflow": ("keras", "torch"),
    "torch": ("keras", "torch"),
    # `jax-s2d` is the hand-written twin of the default ("auto") Keras
    # CapsNet on JAX; it has no routing-only bench, `jax` has. `torch` is
    # the only twin of Efficient-CapsNet and of the matrix capsules.
    "jax": ("keras", "jax", "jax-s2d", "torch"),
    "jax-noynn": ("keras", "jax", "jax-s2d", "torch"),
}
# glibc returns every block over 32 MiB to the kernel on free, so each big
# eager op pays ~9000 page faults for fresh zeroed pages (3x slower at these
# sizes, see README). Keeping freed memory in the heap helps every framework
# alike; `--malloc system` measures without it.
TUNED_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repeats; best kept"
    )
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="images per step for every bench (default: each bench's own, "
        f"{common.BATCH_SIZES})",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny run to check the plumbing"
    )
    parser.add_argument("--output", type=Path, default=REPO / "docs/assets/benchmarks")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--benches", default=",".join(common.BENCHES))
    parser.add_argument(
        "--contenders",
        action="append",
        default=[],
        metavar="BACKEND=NAME,NAME",
        help="replace a backend's contenders, e.g. torch=keras,keras-jit,torch",
    )
    parser.add_argument("--malloc", choices=("tuned", "system"), default="tuned")
    parser.add_argument(
        "--capsnet-source", choices=("model", "layers"), default="model"
    )
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600, help="per subprocess, s")
    args = parser.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    args.benches = [b for b in args.benches.split(",") if b]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}")
    unknown = set(args.benches) - set(common.BENCHES)
    if unknown:
        parser.error(f"unknown benches {sorted(unknown)}; known: {common.BENCHES}")
    args.batches = {
        bench: args.batch or common.BATCH_SIZES[bench] for bench in args.benches
    }
    if args.smoke:
        # One step each (that step compiles); batch 2, since XLA's CPU
        # gradient of the strided primary-capsule convolution is slow.
        args.steps, args.repeats, args.warmup, args.memory_steps = 1, 1, 0, 1
        args.batches = {bench: min(size, 2) for bench, size in args.batches.items()}
    plan = dict(SMOKE_CONTENDERS if args.smoke else DEFAULT_CONTENDERS)
    for item in args.contenders:
        backend, _, names = item.partition("=")
        plan[backend] = tuple(names.split(","))
    args.plan = {backend: plan[backend] for backend in args.backends}
    return args


def machine(device: str) -> dict:
    info = {
        "platform": platform.platform(),
        "logical_cpus": os.cpu_count(),
        "device": device,
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ]
        info["cpu_model"] = models[0] if models else platform.processor()
        meminfo = Path("/proc/meminfo").read_text().split()
        info["memory_gib"] = round(
            int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1
        )
    except (OSError, ValueError):
        info["cpu_model"] = platform.processor()
    info["load_average_at_start"] = (
        os.getloadavg() if hasattr(os, "getloadavg") else None
    )
    return info


def worker_env(backend: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    backend, settings = PROCESS_SETTINGS.get(backend, (backend, {}))
    env.update(settings)
    env["KERAS_BACKEND"] = backend
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), str(HERE), env.get("PYTHONPATH", "")) if p
    )
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["JAX_PLATFORMS"] = "cpu"
    if args.malloc == "tuned":
        env.update(TUNED_MALLOC)
    return env


def run_worker(backend: str, args: argparse.Namespace, worker_args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "result.json"
        command = [
            sys.executable,
            str(HERE / "worker.py"),
            "--batches",
            ",".join(f"{bench}={size}" for bench, size in args.batches.items()),
            "--device",
            args.device,
            "--capsnet-source",
            args.capsnet_source,
            "--output",
            str(output),
            *worker_args,
        ]
        completed = subprocess.run(
            command,
            env=worker_env(backend, args),
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
        if completed.returncode != 0 or not output.exists():
            raise RuntimeError(
                f"worker failed ({backend}): {' '.join(command)}\n{completed.stderr[-4000:]}"
            )
        return json.loads(output.read_text())


def memory_tasks(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(process backend, contender:bench:phase); each baseline measured once."""
    tasks, seen = [], set()
    for backend, contenders in args.plan.items():
        for name in contenders:
            owner = backend if name.startswith("keras") else ""
            for bench in args.benches:
                for phase in common.PHASES[bench]:
                    if not common.runs(name, bench, phase):
                        continue
                    if (owner, name, bench, phase) not in seen:
                        seen.add((owner, name, bench, phase))
                        tasks.append((backend, f"{name}:{bench}:{phase}"))
    return tasks


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    result = {
        "schema_version": 1,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(args.device),
        "settings": {
            key: getattr(args, key)
            for key in (
                "device",
                "batches",
                "steps",
                "repeats",
                "warmup",
                "memory_steps",
                "smoke",
                "malloc",
                "capsnet_source",
                "benches",
                "plan",
            )
        },
        "method": report.METHOD,
        "versions": {},
        "timing": [],
        "memory": [],
    }
    benches = ",".join(args.benches)
    # Smoke runs measure memory inside the timing process (one process per
    # backend instead of one per task): a check of the code, not numbers.
    inline = ["--memory-inline"] if args.smoke and not args.no_memory else []
    for backend, contenders in args.plan.items():
        print(f"[timing] {backend}: {', '.join(contenders)}", flush=True)
        out = run_worker(backend, args, [
            "--mode", "timing", "--benches", benches,
            "--contenders", ",".join(contenders), "--steps", str(args.steps),
            "--repeats", str(args.repeats), "--warmup", str(args.warmup),
            "--memory-steps", str(args.memory_steps), *inline,
        ])  # fmt: skip
        result["versions"].update(out["versions"])
        for record in out["records"]:
            record["process"] = backend
            memory = record.pop("memory", None)
            if memory is not None:
                memory["process"] = backend
                result["memory"].append(memory)
            result["timing"].append(record)
    if not args.no_memory and not inline:
        for backend, task in memory_tasks(args):
            print(f"[memory] {backend}: {task}", flush=True)
            # A baseline alone in its process: nothing else is imported.
            out = run_worker(backend, args, [
                "--mode", "memory", "--tasks", task,
                "--memory-steps", str(args.memory_steps), "--warmup", str(args.warmup),
            ])  # fmt: skip
            for record in out["records"]:
                record["process"] = backend
                result["memory"].append(record)
    result["rows"] = report.rows(result)
    result["targets"] = report.targets(result)
    result["seconds"] = time.perf_counter() - started
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_at_end"] = os.getloadavg()
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    table = report.markdown(result)
    (args.output / "results.md").write_text(table)
    print(table)
    if not args.no_chart:
        report.chart(result, args.output / "results.png")
    print(
        f"wrote {args.output}/results.json, results.md"
        + ("" if args.no_chart else ", results.png")
    )
    return result


if __name__ == "__main__":
    main()
