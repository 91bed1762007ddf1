"""The routing formulations and options tried for issue 7, timed A/B like benchmark.py.

    python benchmarks/levers.py                       # every backend
    python benchmarks/levers.py --backends jax --steps 3 --repeats 3

Each backend runs in its own subprocess, where Keras routing-layer train
steps with each formulation below alternate with the hand-written PyTorch
routing. Results are printed and written to `--output` (JSON). The numbers
quoted in benchmarks/README.md come from this script.

Formulations of `RoutingCapsule.call` (all the same math):

- `uhat-einsum`: the first implementation: `u_hat = einsum("bid,ijde->bjie")`,
  then both contractions as einsums on `u_hat`;
- `factored-einsum`: `u_hat` never formed (see `keras_capsules.ops.dynamic_routing`),
  contractions with the regrouped kernel written as einsums;
- `factored-matmul-ike`: the same with pre-transposed operands and `matmul`,
  the kernel viewed as `(J, I * D, E)`;
- `factored-matmul`: the same with the kernel viewed as `(J, E, I * D)`,
  so every kernel gradient is a plain GEMM: what `RoutingCapsule` now runs.
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

PLAN = {
    # (formulation, Keras variant) pairs per backend; see keras_candidates.
    "tensorflow": [
        ("uhat-einsum", "keras"),
        ("uhat-einsum", "keras-jit"),
        ("factored-einsum", "keras"),
        ("factored-einsum", "keras-jit"),
        ("factored-matmul-ike", "keras"),
        ("factored-matmul-ike", "keras-jit"),
        ("factored-matmul", "keras"),
        ("factored-matmul", "keras-jit"),
        ("factored-matmul", "keras-bf16"),
    ],
    "torch": [
        ("uhat-einsum", "keras"),
        ("factored-einsum", "keras"),
        ("factored-matmul-ike", "keras"),
        ("factored-matmul", "keras"),
        ("factored-matmul", "keras-jit"),
        ("factored-matmul", "keras-bf16"),
    ],
    "jax": [
        ("uhat-einsum", "keras"),
        ("factored-einsum", "keras"),
        ("factored-matmul-ike", "keras"),
        ("factored-matmul", "keras"),
        ("factored-matmul", "keras-bf16"),
    ],
}


def _formulations():
    from keras import ops

    from keras_capsules import ops as capsule_ops

    def uhat_einsum(inputs, kernel, iterations, stop_gradient):
        # Procedure 1 on the prediction vectors u_hat, the paper's form (the
        # package's routing before it stopped forming u_hat).
        predictions = capsule_ops.capsule_predictions(inputs, kernel)
        agreement_predictions = (
            ops.stop_gradient(predictions) if stop_gradient else predictions
        )
        outputs = capsule_ops.squash(ops.mean(predictions, axis=2))
        logits = None
        for _ in range(1, iterations):
            agreement = ops.einsum("bjie,bje->bji", agreement_predictions, outputs)
            logits = agreement if logits is None else logits + agreement
            coupling = ops.softmax(logits, axis=1)
            outputs = capsule_ops.squash(
                ops.einsum("bji,bjie->bje", coupling, predictions)
            )
        return outputs

    def factored_einsum(inputs, kernel, iterations, stop_gradient):
        num_inputs, num_outputs, input_dim, output_dim = kernel.shape
        flat = num_inputs * input_dim
        kernel_j = ops.reshape(
            ops.transpose(kernel, (1, 0, 2, 3)), (num_outputs, flat, output_dim)
        )
        inputs_flat = ops.reshape(inputs, (-1, flat))
        outputs = capsule_ops.squash(
            ops.einsum("bk,jke->jbe", inputs_flat, kernel_j) / num_outputs
        )
        logits = None
        for _ in range(1, iterations):
            projected = ops.einsum("jbe,jke->jbk", outputs, kernel_j)
            projected = ops.reshape(projected, (num_outputs, -1, num_inputs, input_dim))
            agreement = ops.sum(projected * inputs, axis=-1)
            logits = agreement if logits is None else logits + agreement
            coupling = ops.softmax(logits, axis=0)
            weighted = ops.reshape(
                ops.expand_dims(coupling, -1) * inputs, (num_outputs, -1, flat)
            )
            outputs = capsule_ops.squash(ops.einsum("jbk,jke->jbe", weighted, kernel_j))
        return ops.transpose(outputs, (1, 0, 2))

    def factored_matmul_ike(inputs, kernel, iterations, stop_gradient):
        # The kernel as (J, I*D, E): its gradients are (I*D, B) x (B, E)
        # GEMMs, which XLA on CPU ran as slow transposed products.
        num_inputs, num_outputs, input_dim, output_dim = kernel.shape
        flat = num_inputs * input_dim
        kernel_j = ops.reshape(
            ops.transpose(kernel, (1, 0, 2, 3)), (num_outputs, flat, output_dim)
        )
        kernel_flat = ops.reshape(
            ops.transpose(kernel, (0, 2, 1, 3)), (flat, num_outputs * output_dim)
        )
        kernel_t = ops.transpose(kernel_j, (0, 2, 1))
        uniform = ops.matmul(ops.reshape(inputs, (-1, flat)), kernel_flat)
        uniform = ops.reshape(uniform / num_outputs, (-1, num_outputs, output_dim))
        outputs = capsule_ops.squash(ops.transpose(uniform, (1, 0, 2)))
        logits = None
        for _ in range(1, iterations):
            projected = ops.matmul(outputs, kernel_t)
            projected = ops.reshape(projected, (num_outputs, -1, num_inputs, input_dim))
            agreement = ops.sum(projected * inputs, axis=-1)
            logits = agreement if logits is None else logits + agreement
            coupling = ops.softmax(logits, axis=0)
            weighted = ops.reshape(
                ops.expand_dims(coupling, -1) * inputs, (num_outputs, -1, flat)
            )
            outputs = capsule_ops.squash(ops.matmul(weighted, kernel_j))
        return ops.transpose(outputs, (1, 0, 2))

    return {
        "uhat-einsum": uhat_einsum,
        "factored-einsum": factored_einsum,
        "factored-matmul-ike": factored_matmul_ike,
        "factored-matmul": capsule_ops.dynamic_routing,
    }


def worker(args: argparse.Namespace) -> None:
    import torch  # noqa: F401  (before TensorFlow, see worker.py)

    # isort: split
    import keras
    import keras_candidates
    import torch_capsnet

    from keras_capsules.layers import RoutingCapsule

    formulations = _formulations()
    batch = common.synthetic_batch("routing", args.batch)
    runners = []
    only = [name for name in args.only.split(",") if name]
    for formulation, variant in PLAN[keras.backend.backend()]:
        if only and f"{formulation} {variant}" not in only and formulation not in only:
            continue

        class Routing(RoutingCapsule):
            route = staticmethod(formulations[formulation])

            def call(self, inputs):
                kernel = keras.ops.cast(self.kernel, self.compute_dtype)
                return self.route(
                    inputs,
                    kernel,
                    self.routing_iterations,
                    self.stop_gradient_on_agreement,
                )

        keras_candidates.RoutingCapsule = Routing
        contender = keras_candidates.KerasContender("routing", variant, batch)
        name = f"{formulation} {variant}"
        runners.append(common.Contender(name, contender.train_step))
    keras_candidates.RoutingCapsule = RoutingCapsule
    baseline = torch_capsnet.Trainer("routing", batch)
    runners.append(common.Contender("torch (hand-written)", baseline.train_step))
    timings = common.alternate(runners, args.steps, args.repeats, args.warmup)
    torch_best = timings["torch (hand-written)"]["best_step_s"]
    for timing in timings.values():
        timing["vs_torch"] = torch_best / timing["best_step_s"]
    Path(args.output).write_text(json.dumps(timings, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="tensorflow,torch,jax")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=common.BATCH_SIZE)
    parser.add_argument("--malloc", choices=("tuned", "system"), default="tuned")
    parser.add_argument("--output", default=str(HERE / "levers.json"))
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated formulations to keep, e.g. uhat-einsum",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import benchmark

    results = {}
    for backend in args.backends.split(","):
        env = benchmark.worker_env(
            backend, argparse.Namespace(device="cpu", **vars(args))
        )
        out = Path(args.output).with_suffix(f".{backend}.json")
        command = [
            sys.executable, __file__, "--worker", "--steps", str(args.steps),
            "--repeats", str(args.repeats), "--warmup", str(args.warmup),
            "--batch", str(args.batch), "--output", str(out), "--only", args.only,
        ]  # fmt: skip
        subprocess.run(command, env=env, check=True)
        results[backend] = json.loads(out.read_text())
        os.remove(out)
        for name, timing in results[backend].items():
            print(
                f"{backend:10s} {name:32s} {args.batch / timing['best_step_s']:8.1f} "
                f"images/s  {timing['vs_torch']:.2f}x torch",
                flush=True,
            )
    Path(args.output).write_text(
        json.dumps({"settings": vars(args), "results": results}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
