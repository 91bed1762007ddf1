"""One process of a data-parallel run of the tiny capsule models.

    python tests/distribution/multi_process_worker.py ENGINE --rank R \
        --processes N --port P [--port P2] --workdir DIR [--timed-epochs E]

ENGINE is the backend's own engine:

- `jax`: `jax.distributed.initialize` joins the processes (coordinator on
  127.0.0.1:P); `keras.distribution.DataParallel` over all their devices;
  `model.fit` on this process's share of every batch.
- `torch`: `torch.distributed` with gloo (rendezvous on 127.0.0.1:P), the
  model wrapped in `DistributedDataParallel`, `fit`'s step in a loop that
  calls the wrapper (`train_ddp`).
- `tf-multi-worker`: `tf.distribute.MultiWorkerMirroredStrategy`, one
  worker per process, the cluster (one port per worker) in `TF_CONFIG`,
  `fit`'s step in TensorFlow's custom loop (`capsule_runs.train_in_strategy`;
  Keras 3.15's `fit` fails under this strategy).
- `tf-mirrored`: `tf.distribute.MirroredStrategy` over 2 logical CPU
  devices of this one process (`--processes 1`), `model.fit`.

For each model of `capsule_runs.MODELS` it starts from the weights the
test wrote to DIR (without them, from the same seed in every process),
trains one epoch of `STEPS` global batches and writes its final weights
to DIR. The engine and the backend are chosen here, before Keras is
imported, whatever `KERAS_BACKEND` the caller has. Prints one JSON line:
each model's seconds and global images per second (compilation included),
and with `--timed-epochs` those of E more epochs (compilation excluded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BACKEND = {
    "jax": "jax",
    "torch": "torch",
    "tf-multi-worker": "tensorflow",
    "tf-mirrored": "tensorflow",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("engine", choices=sorted(BACKEND))
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--port", type=int, action="append", default=[])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument(
        "--timed-epochs",
        type=int,
        default=0,
        help="after the checked training, train this many more epochs and "
        "report their speed (compilation excluded)",
    )
    return parser.parse_args()


def set_up(args: argparse.Namespace):
    """Joins the processes; returns the `tf.distribute` strategy, or `None`."""
    if args.engine == "jax":
        import jax

        jax.distributed.initialize(
            f"127.0.0.1:{args.port[0]}",
            num_processes=args.processes,
            process_id=args.rank,
        )
        import keras

        devices = keras.distribution.list_devices()
        assert len(devices) == args.processes, devices
        distribution = keras.distribution.DataParallel(devices=devices)
        # Each process is given its own share of every batch (`local_rows`).
        distribution.auto_shard_dataset = False
        keras.distribution.set_distribution(distribution)
        return None
    if args.engine == "torch":
        import torch.distributed as dist

        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{args.port[0]}",
            rank=args.rank,
            world_size=args.processes,
        )
        return None
    import tensorflow as tf

    if args.engine == "tf-mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    replicas = 2 if args.engine == "tf-mirrored" else args.processes
    assert strategy.num_replicas_in_sync == replicas, strategy.num_replicas_in_sync
    return strategy


def train_ddp(model, images, labels, batch_size: int, epochs: int = 1) -> None:
    """Keras's torch `train_step`, with the forward pass through DDP.

    `model.fit` calls the model itself, never the DDP wrapper, so DDP's
    gradient all-reduce would not run; this loop calls the wrapper and
    otherwise does what `fit` does: the model's `compute_loss`, backward,
    the compiled Keras optimizer.
    """
    import torch

    ddp = torch.nn.parallel.DistributedDataParallel(model)
    weights = model.trainable_weights
    for start in list(range(0, len(images), batch_size)) * epochs:
        x = torch.as_tensor(images[start : start + batch_size])
        y = torch.as_tensor(labels[start : start + batch_size])
        scores = ddp(x, training=True)
        model.zero_grad()
        loss = model.compute_loss(x=x, y=y, y_pred=scores, training=True)
        model.optimizer.scale_loss(loss).backward()  # DDP averages the gradients
        with torch.no_grad():
            model.optimizer.apply([w.value.grad for w in weights], weights)


def main() -> None:
    args = parse_args()
    os.environ["KERAS_BACKEND"] = BACKEND[args.engine]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.engine == "tf-multi-worker":
        os.environ["TF_CONFIG"] = json.dumps(
            {
                "cluster": {"worker": [f"127.0.0.1:{port}" for port in args.port]},
                "task": {"type": "worker", "index": args.rank},
            }
        )
    args.workdir.mkdir(parents=True, exist_ok=True)
    strategy = set_up(args)
    scope = strategy.scope if strategy else contextlib.nullcontext
    import keras

    from tests.distribution import capsule_runs as runs

    report = {}
    for name in runs.MODELS:
        images, labels = runs.global_data(name)
        if args.engine in ("jax", "torch"):
            # Each process is fed its own share; the engine assembles the
            # global batch (JAX) or averages the gradients (DDP).
            rows = runs.local_rows(args.rank, args.processes)
            images, labels = images[rows], labels[rows]
            batch_size = runs.GLOBAL_BATCH // args.processes
        else:
            # tf.distribute splits each global batch over the replicas.
            batch_size = runs.GLOBAL_BATCH
        # The same seed everywhere: a JAX process refuses to initialise a
        # replicated variable with values that differ between processes.
        keras.utils.set_random_seed(0)
        with scope():
            model = runs.build_model(name, args.engine, distributed=True)
            # The test's starting weights; without them (a run by hand), the
            # seed gives every process the same.
            initial = runs.initial_weights_path(args.workdir, name)
            if initial.exists():
                runs.set_weights_of(model, runs.load_arrays(initial)[0])
        started = time.perf_counter()
        if args.engine == "torch":
            train_ddp(model, images, labels, batch_size)
        elif args.engine == "tf-multi-worker":
            runs.train_in_strategy(model, strategy, images, labels)
        else:
            model.fit(images, labels, batch_size=batch_size, shuffle=False, verbose=0)
        seconds = time.perf_counter() - started
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        runs.save_arrays(
            runs.result_path(args.workdir, name, args.rank),
            runs.weights_of(model),
            iterations=steps,
        )
        report[name] = {
            "seconds": seconds,
            "steps": steps,
            # All processes together: the global batches over the seconds.
            "images_per_second": runs.STEPS * runs.GLOBAL_BATCH / seconds,
        }
        if args.timed_epochs:
            started = time.perf_counter()
            if args.engine == "torch":
                train_ddp(model, images, labels, batch_size, args.timed_epochs)
            elif args.engine == "tf-multi-worker":
                runs.train_in_strategy(
                    model, strategy, images, labels, epochs=args.timed_epochs
                )
            else:
                model.fit(
                    images,
                    labels,
                    batch_size=batch_size,
                    epochs=args.timed_epochs,
                    shuffle=False,
                    verbose=0,
                )
            seconds = time.perf_counter() - started
            global_images = args.timed_epochs * runs.STEPS * runs.GLOBAL_BATCH
            report[name]["timed_images_per_second"] = global_images / seconds
    if args.engine == "torch":
        import torch.distributed as dist

        dist.destroy_process_group()
    print(json.dumps({"engine": args.engine, "rank": args.rank, **report}), flush=True)


if __name__ == "__main__":
    main()
