"""Shapes, synthetic data, timing and memory helpers shared by every benchmark.

Nothing here imports a deep-learning framework, so the orchestrator can use
it without fixing a Keras backend.
"""

from __future__ import annotations

import gc
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# The paper's MNIST CapsNet: 1152 primary capsules of 8D routed to 10 of 16D.
BATCH_SIZE = 100
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
INPUT_CAPSULES = 1152
INPUT_CAPSULE_DIM = 8
CAPSULE_DIM = 16
ROUTING_ITERATIONS = 3
# The matrix-capsnet bench is the paper's network as the published results
# and the PyTorch twin (torch_matrix_capsnet.py) compute it: 3 EM
# iterations, lambda_final 1.0 (MatrixCapsNet's defaults are 2 and 0.1).
MATRIX_CAPSNET_ROUTING = {"routing_iterations": 3, "final_inverse_temperature": 1.0}
CONV_FILTERS = 256
PRIMARY_CAPSULES = 32
KERNEL_SIZE = 9
DECODER_UNITS = (512, 1024)
# Sabour et al. scale the decoder's sum of squared errors down by 0.0005.
RECONSTRUCTION_WEIGHT = 0.0005
LEARNING_RATE = 1e-3
CAPSNET_PARAMS = 8_215_568

# Efficient-CapsNet (Mazzia et al. 2021) with its decoder: 161,824 trainable
# weights (the paper's count), 576 batch-normalization statistics and the
# 512-1024-784 decoder's 1,411,344; Keras's `count_params` counts all three.
EFFICIENT_CAPSNET_PARAMS = 1_573_744
# The smallNORB matrix-capsule network (Hinton et al. 2018), A=B=C=D=32.
MATRIX_CAPSNET_PARAMS = 316_394

BENCHES = ("routing", "capsnet", "efficient-capsnet", "matrix-capsnet")
PHASES = {
    "routing": ("train",),
    "capsnet": ("train", "infer"),
    "efficient-capsnet": ("train",),
    "matrix-capsnet": ("train",),
}
# Images per step unless `--batch` is given: Sabour et al.'s 100 for the
# CapsNet, the authors' recipe's 16 for Efficient-CapsNet (as
# examples/capsnet_mnist.py), and 16 for the matrix capsules, whose EM
# routing keeps vote-sized tensors of every iteration for the backward pass.
BATCH_SIZES = {
    "routing": BATCH_SIZE,
    "capsnet": BATCH_SIZE,
    "efficient-capsnet": 16,
    "matrix-capsnet": 16,
}
# Benches whose only baseline is a hand-written PyTorch twin, with the
# Keras options measured on them (the others change nothing there).
TWIN_BENCH_OPTIONS = {
    "efficient-capsnet": ("jit", "nojit"),
    "matrix-capsnet": ("nojit",),
}
IMAGE_SHAPES = {"matrix-capsnet": (32, 32, 1)}  # smallNORB crops
CLASSES = {"matrix-capsnet": 5}
# Adam's learning rate: Efficient-CapsNet's recipe uses 5e-4.
LEARNING_RATES = {"efficient-capsnet": 5e-4}
SPREAD_MARGIN = 0.2  # the spread loss's first margin (Hinton et al. 2018)


def image_shape(bench: str) -> tuple[int, int, int]:
    return IMAGE_SHAPES.get(bench, IMAGE_SHAPE)


def num_classes(bench: str) -> int:
    return CLASSES.get(bench, NUM_CLASSES)


def learning_rate(bench: str) -> float:
    return LEARNING_RATES.get(bench, LEARNING_RATE)


def squash_numpy(x: np.ndarray) -> np.ndarray:
    """Squashed vectors, so the routing inputs look like real primary capsules."""
    squared = np.sum(x**2, axis=-1, keepdims=True)
    return x * (squared / (1.0 + squared) / np.sqrt(np.maximum(squared, 1e-14)))


def synthetic_batch(
    bench: str, batch_size: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """One fixed batch of float32 inputs and one-hot labels.

    Throughput does not depend on the values, so one batch reused every
    step keeps data loading out of the measurement for every contender.
    """
    rng = np.random.default_rng(seed)
    classes = num_classes(bench)
    labels = np.eye(classes, dtype="float32")[rng.integers(0, classes, batch_size)]
    if bench == "routing":
        capsules = rng.normal(size=(batch_size, INPUT_CAPSULES, INPUT_CAPSULE_DIM))
        return {"inputs": squash_numpy(capsules).astype("float32"), "labels": labels}
    images = rng.uniform(size=(batch_size, *image_shape(bench))).astype("float32")
    return {"inputs": images, "labels": labels}


# --- memory -------------------------------------------------------------------


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    """Current resident set size, from /proc (falls back to the peak so far)."""
    kib = _status_kib("VmRSS")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size since start or since the last `reset_peak_rss`."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (VmHWM), Linux >= 4.0.

    Lets the steady-state peak of the measured steps be read apart from the
    transient peak of the first step (JIT compilation, lazy allocations).
    Returns False where /proc/self/clear_refs cannot be written.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def collect_garbage() -> None:
    gc.collect()
    gc.collect()


# --- timing -------------------------------------------------------------------


def runs(contender: str, bench: str, phase: str) -> bool:
    """Whether a contender is measured for a bench and phase.

    `stop_gradient_on_agreement` only changes the backward pass of the
    routing, so it is measured on the routing layer's train step, where it
    is not drowned by the convolutions. Efficient-CapsNet and the matrix
    capsules are measured against their PyTorch twins only, with the
    options of `TWIN_BENCH_OPTIONS`.
    """
    if bench in TWIN_BENCH_OPTIONS:
        if not contender.startswith("keras"):
            return contender == "torch"
        options = contender.split("-")[1:]
        return all(option in TWIN_BENCH_OPTIONS[bench] for option in options)
    if "stopgrad" in contender:
        return (bench, phase) == ("routing", "train")
    # The space-to-depth convolution only exists in the CapsNet.
    if "s2d" in contender:
        return bench == "capsnet"
    # XLA on CPU (TensorFlow's jit_compile) takes ~114 s per CapsNet train
    # step with the strided convolution: measured once (README), and here
    # with `s2d`, to keep a full run under an hour.
    if contender.endswith("-jit"):
        return bench == "routing"
    return True


@dataclass
class Contender:
    """One measured configuration: a step to call and a way to wait for it."""

    name: str
    step: Callable[[], object]
    sync: Callable[[object], None] = lambda result: None
    times: list[float] = field(default_factory=list)
    steps: int = 1

    def run(self, steps: int) -> float:
        """Seconds per step over `steps` calls, waiting for the last result."""
        start = time.perf_counter()
        result = None
        for _ in range(steps):
            result = self.step()
        self.sync(result)
        return (time.perf_counter() - start) / steps


def alternate(
    contenders: Sequence[Contender],
    steps: int,
    repeats: int,
    warmup: int = 1,
    block_seconds: float = 8.0,
) -> dict[str, dict[str, float | list[float]]]:
    """Times the contenders in turn, A B C A B C ..., `repeats` times.

    Alternating spreads any slow spell of a shared machine over every
    contender instead of one; the best repeat is the least disturbed one.
    Each repeat runs `steps` steps, or fewer for a contender whose last
    warm-up step shows that `steps` would take over `block_seconds` (XLA's
    CPU CapsNet train step takes over a minute), but at least one.
    """
    for contender in contenders:
        contender.steps = steps
        for index in range(warmup):
            seconds = contender.run(1)
            if index == warmup - 1:
                contender.steps = max(1, min(steps, round(block_seconds / seconds)))
    for _ in range(repeats):
        for contender in contenders:
            collect_garbage()
            contender.times.append(contender.run(contender.steps))
    results = {}
    for contender in contenders:
        best = min(contender.times)
        results[contender.name] = {
            "best_step_s": best,
            "median_step_s": float(np.median(contender.times)),
            "step_s": contender.times,
            "steps_per_repeat": contender.steps,
        }
    return results


def environment_threads() -> dict[str, str]:
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "TF_NUM_INTRAOP_THREADS")
    return {key: os.environ[key] for key in keys if key in os.environ}
