"""One benchmark process: a fixed Keras backend, several contenders, JSON out.

Run by `benchmark.py`, one process per backend for timings and one per
(contender, bench, phase) for memory; not meant to be run by hand, though
it can be (`python benchmarks/worker.py --help`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# The backend is fixed per process, before Keras is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import common  # noqa: E402


def _import_frameworks(contenders: list[str]) -> None:
    # PyTorch before TensorFlow: importing them the other way round can
    # crash (the reason Keras's own test set-up imports torch first).
    if "torch" in contenders or os.environ.get("KERAS_BACKEND") == "torch":
        import torch  # noqa: F401
    if any(name.startswith("keras") for name in contenders):
        import keras  # noqa: F401


def make_contender(name: str, bench: str, batch: dict, args: argparse.Namespace):
    """The object with `train_step`, `infer_step`, `sync`, `num_params`."""
    if name == "torch":
        if bench == "efficient-capsnet":
            import torch_efficient_capsnet as torch_twin
        elif bench == "matrix-capsnet":
            import torch_matrix_capsnet as torch_twin
        else:
            import torch_capsnet as torch_twin

        return torch_twin.Trainer(bench, batch, device=args.device)
    if name in ("jax", "jax-s2d"):
        import jax_capsnet

        return jax_capsnet.Trainer(
            bench, batch, device=args.device, space_to_depth=name == "jax-s2d"
        )
    import keras_candidates

    return keras_candidates.KerasContender(bench, name, batch, args.capsnet_source)


def label(name: str) -> str:
    """`keras-stopgrad` -> `keras[torch]-stopgrad`: the backend in the name."""
    if not name.startswith("keras"):
        return f"{name} (hand-written)"
    import keras

    return name.replace("keras", f"keras[{keras.backend.backend()}]", 1)


def release(contenders: dict) -> None:
    contenders.clear()
    if "keras" in sys.modules:
        import keras

        keras.backend.clear_session()
    common.collect_garbage()


def batch_size(bench: str, args: argparse.Namespace) -> int:
    """`--batches` for this bench, else `--batch`, else the bench's default."""
    return args.batches.get(bench) or args.batch or common.BATCH_SIZES[bench]


def check_same_weights(bench: str, built: dict) -> None:
    """Every contender of a bench trains the same number of weights."""
    counts = {name: contender.num_params() for name, contender in built.items()}
    if len(set(counts.values())) > 1:
        raise RuntimeError(
            f"The contenders of bench {bench!r} differ in weight count: {counts}"
        )


def run_timing(args: argparse.Namespace) -> list[dict]:
    records = []
    for bench in args.benches:
        images = batch_size(bench, args)
        batch = common.synthetic_batch(bench, images)
        built = {
            name: make_contender(name, bench, batch, args)
            for name in args.contenders
            if any(common.runs(name, bench, phase) for phase in common.PHASES[bench])
        }
        check_same_weights(bench, built)
        runners = []
        for name, contender in built.items():
            for phase in common.PHASES[bench]:
                if not common.runs(name, bench, phase):
                    continue
                step = (
                    contender.train_step if phase == "train" else contender.infer_step
                )
                runners.append(
                    common.Contender(f"{name}|{phase}", step, contender.sync)
                )
        timings = common.alternate(runners, args.steps, args.repeats, args.warmup)
        for key, timing in timings.items():
            name, phase = key.split("|")
            contender = built[name]
            record = {
                "bench": bench,
                "phase": phase,
                "contender": name,
                "label": label(name),
                "params": contender.num_params(),
                "batch": images,
                **timing,
                "images_per_s": images / timing["best_step_s"],
            }
            if hasattr(contender, "resolved_jit_compile"):
                record["jit_compile"] = contender.resolved_jit_compile
                record["conv_implementation"] = contender.resolved_conv_implementation
            records.append(record)
            if args.memory_inline:
                # Smoke runs: the same code on the already compiled
                # contender, which checks the plumbing, not the numbers.
                memory = measure_memory(contender, name, bench, phase, args)
                records[-1]["memory"] = memory
        release(built)
    return records


def _device_peak(name: str, reset: bool) -> int | None:
    """Framework-reported peak accelerator memory (bytes); None on CPU."""
    backend = os.environ.get("KERAS_BACKEND")
    framework = name.split("-")[0] if not name.startswith("keras") else backend
    try:
        if framework == "torch":
            import torch

            if reset:
                torch.cuda.reset_peak_memory_stats()
            return int(torch.cuda.max_memory_allocated())
        if framework == "tensorflow":
            import tensorflow as tf

            if reset:
                tf.config.experimental.reset_memory_stats("GPU:0")
            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        if framework == "jax":
            import jax

            # No reset in JAX: the peak includes the first step.
            return int(jax.devices()[0].memory_stats()["peak_bytes_in_use"])
    except Exception:  # noqa: BLE001 - a missing statistic is not an error
        return None
    return None


def measure_memory(
    contender, name: str, bench: str, phase: str, args: argparse.Namespace
) -> dict:
    """Peak RSS of a built contender's steps above its RSS before them.

    The first `warmup` steps compile (XLA, tf.function, torch.compile) and
    allocate lazily; their peak is reported apart. The kernel's peak-RSS
    mark is then reset and `memory_steps` more steps run:
    `peak_rss_delta_mb` is that steady-state peak minus the RSS before the
    first step (in a fresh process: after imports and model build).
    """
    step = contender.train_step if phase == "train" else contender.infer_step
    common.collect_garbage()
    built_rss = common.rss_bytes()
    common.reset_peak_rss()
    for _ in range(args.warmup):
        contender.sync(step())
    first_peak = common.peak_rss_bytes()
    was_reset = common.reset_peak_rss()
    _device_peak(name, reset=args.device == "gpu")
    for _ in range(args.memory_steps):
        contender.sync(step())
    peak = common.peak_rss_bytes() if was_reset else first_peak
    mib = 1024.0**2
    record = {
        "bench": bench,
        "phase": phase,
        "contender": name,
        "label": label(name),
        "batch": batch_size(bench, args),
        "rss_before_steps_mb": built_rss / mib,
        "peak_rss_delta_mb": (peak - built_rss) / mib,
        "first_steps_peak_rss_delta_mb": (first_peak - built_rss) / mib,
        "peak_reset": was_reset,
        "fresh_process": args.mode == "memory",
    }
    if args.device == "gpu":
        device_peak = _device_peak(name, reset=False)
        record["device_peak_mb"] = None if device_peak is None else device_peak / mib
    return record


def run_memory(args: argparse.Namespace) -> list[dict]:
    """One `contender:bench:phase` task, in a process of its own."""
    (task,) = args.tasks
    name, bench, phase = task.split(":")
    contender = make_contender(
        name, bench, common.synthetic_batch(bench, batch_size(bench, args)), args
    )
    return [measure_memory(contender, name, bench, phase, args)]


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    import numpy

    found["numpy"] = numpy.__version__
    for module in ("keras", "torch", "tensorflow", "jax", "jaxlib"):
        if module in sys.modules:
            found[module] = getattr(sys.modules[module], "__version__", "?")
    return found


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("timing", "memory"), default="timing")
    parser.add_argument("--benches", default=",".join(common.BENCHES))
    parser.add_argument(
        "--tasks", default="", help="memory mode: contender:bench:phase"
    )
    parser.add_argument("--contenders", default="", help="timing mode: comma-separated")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument(
        "--memory-inline",
        action="store_true",
        help="timing mode: also measure memory in this process (smoke runs)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--batch", type=int, default=None, help="every bench (default: its own)"
    )
    parser.add_argument("--batches", default="", help="per bench: BENCH=N,...")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--capsnet-source", choices=("model", "layers"), default="model"
    )
    parser.add_argument("--output", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    args.contenders = [name for name in args.contenders.split(",") if name]
    args.benches = args.benches.split(",")
    args.tasks = [task for task in args.tasks.split(",") if task]
    args.batches = {
        bench: int(size)
        for bench, _, size in (item.partition("=") for item in args.batches.split(","))
        if bench
    }
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    _import_frameworks(args.contenders or [task.split(":")[0] for task in args.tasks])
    start = time.perf_counter()
    records = run_timing(args) if args.mode == "timing" else run_memory(args)
    result = {
        "backend": os.environ.get("KERAS_BACKEND"),
        "mode": args.mode,
        "records": records,
        "versions": versions(),
        "seconds": time.perf_counter() - start,
    }
    with open(args.output, "w") as output:
        json.dump(result, output, indent=1)


if __name__ == "__main__":
    main()
