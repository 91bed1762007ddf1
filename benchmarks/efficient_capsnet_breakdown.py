"""Where Efficient-CapsNet's train step spends its time: Keras against its PyTorch twin.

    python benchmarks/efficient_capsnet_breakdown.py
    python benchmarks/efficient_capsnet_breakdown.py --backends tensorflow --batch 64

For each Keras backend, one subprocess times the train step (forward,
backward, update) of `EfficientCapsNet` and of the hand-written PyTorch twin
(`torch_efficient_capsnet.py`) A/B, like `benchmark.py`, each in four forms:

- `full`: the benchmarked step (Adam, batch normalization, decoder);
- `sgd`: plain SGD instead of Adam, so `full - sgd` is Adam's own cost;
- `no-batch-norm`: the four batch normalizations removed (the Keras layers
  pass their inputs through), so `full - no-batch-norm` is their cost;
- `no-decoder`: no decoder and no reconstruction loss.

These forms are diagnostics, not models anyone trains: they tell which part
of the network makes the difference between the two frameworks. Results are
printed as a table and, with `--output`, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

BENCH = "efficient-capsnet"
VARIANTS = ("full", "sgd", "no-batch-norm", "no-decoder")
SGD_LEARNING_RATE = 1e-3
# benchmark.py's "tuned" glibc malloc; recorded, set them in the environment.
MALLOC_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="tensorflow,torch,jax")
    parser.add_argument("--batch", type=int, default=common.BATCH_SIZES[BENCH])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, help="JSON file for the results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be positive")
    return args


def keras_step(variant: str, batch: dict):
    import keras

    from keras_capsules.losses import MarginLoss, ReconstructionLoss
    from keras_capsules.models import EfficientCapsNet

    keras.utils.set_random_seed(0)
    with_decoder = variant != "no-decoder"
    model = EfficientCapsNet(use_decoder=with_decoder)
    if variant == "no-batch-norm":
        for layer in model.batch_norms:
            layer.call = lambda inputs, training=None, mask=None: inputs
    optimizer = (
        keras.optimizers.SGD(SGD_LEARNING_RATE)
        if variant == "sgd"
        else keras.optimizers.Adam(common.learning_rate(BENCH))
    )
    reconstruction = ReconstructionLoss(weight=common.RECONSTRUCTION_WEIGHT)
    model.compile(
        optimizer=optimizer,
        loss=[MarginLoss(), reconstruction] if with_decoder else MarginLoss(),
    )
    images = keras.ops.convert_to_tensor(batch["inputs"])
    labels = keras.ops.convert_to_tensor(batch["labels"])
    targets = (labels, images) if with_decoder else labels
    return lambda: model.train_on_batch((images, labels), targets)


def twin_step(variant: str, batch: dict):
    import torch
    import torch_efficient_capsnet as twin

    class Trainer(twin.Trainer):
        def make_model(self, channels_last: bool) -> torch.nn.Module:
            return twin.EfficientCapsNet(
                batch_norm=variant != "no-batch-norm",
                decoder=variant != "no-decoder",
            )

    torch.manual_seed(0)
    trainer = Trainer(BENCH, batch)
    if variant == "sgd":
        trainer.optimizer = torch.optim.SGD(
            trainer.model.parameters(), lr=SGD_LEARNING_RATE
        )
    return trainer.train_step


def worker(args: argparse.Namespace) -> dict:
    import torch  # noqa: F401  (before TensorFlow: see worker.py)

    batch = common.synthetic_batch(BENCH, args.batch)
    contenders = [
        common.Contender(f"{framework}|{variant}", make(variant, batch))
        for variant in VARIANTS
        for framework, make in (("keras", keras_step), ("torch", twin_step))
    ]
    timings = common.alternate(contenders, args.steps, args.repeats)
    return {name: result["best_step_s"] * 1e3 for name, result in timings.items()}


def table(backend: str, milliseconds: dict) -> list[str]:
    """Rows: each form's step, and the part it removes (full minus it)."""
    rows = []
    for variant in VARIANTS:
        keras_ms = milliseconds[f"keras|{variant}"]
        torch_ms = milliseconds[f"torch|{variant}"]
        ratio = torch_ms / keras_ms
        row = (
            f"| {backend} | {variant} | {keras_ms:.1f} | {torch_ms:.1f} | {ratio:.2f}x"
        )
        if variant == "full":
            row += " | – | – |"
        else:
            keras_part = milliseconds["keras|full"] - keras_ms
            torch_part = milliseconds["torch|full"] - torch_ms
            row += f" | {keras_part:.1f} | {torch_part:.1f} |"
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    import benchmark

    results = {"batch": args.batch, "machine": benchmark.machine("cpu")}
    results["malloc"] = {key: os.environ.get(key) for key in MALLOC_SETTINGS}
    results["milliseconds"] = {}
    lines = [
        f"Train step in ms, batch {args.batch}, "
        f"best of {args.repeats} x {args.steps} steps.",
        "",
        "| backend | form | Keras ms | PyTorch twin ms | × torch "
        "| part's ms, Keras | part's ms, twin |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for backend in args.backends.split(","):
        passed = sys.argv[1:] if argv is None else argv
        command = [sys.executable, __file__, "--worker", *passed]
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        milliseconds = json.loads(done.stdout.strip().splitlines()[-1])
        results["milliseconds"][backend] = milliseconds
        lines += table(backend, milliseconds)
    print("\n".join(lines))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
