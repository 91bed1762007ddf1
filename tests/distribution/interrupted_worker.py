"""One worker of a two-worker `MultiWorkerMirroredStrategy` run that resumes.

    python tests/distribution/interrupted_worker.py --rank R \
        --port P0 --port P1 --workdir DIR [--epochs E]

Trains the small CapsNet of `capsule_runs` for E epochs of `STEPS` global
batches, with `keras.callbacks.BackupAndRestore` in DIR/backup: run again
after a kill, the same command continues after the last finished epoch.
Every worker restores the one checkpoint, which only the chief (rank 0)
writes, all or nothing (`write_checkpoint` of the examples): two workers
writing the same files would clobber each other, and a checkpoint per
worker could leave them an epoch apart after a kill. Prints a JSON line
`{"epoch_end": N}` after each epoch and, at the end, the epoch it started
from, its optimizer steps and the path of its final weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{port}" for port in args.port]},
            "task": {"type": "worker", "index": args.rank},
        }
    )
    import keras
    import tensorflow as tf
    from mnist_training import finish_checkpoint, write_checkpoint

    from tests.distribution import capsule_runs as runs

    backup_dir = args.workdir / "backup"
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    class ChiefWritesBackup(keras.callbacks.BackupAndRestore):
        """Restores on every worker; only the chief writes, atomically."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self.initial_epoch = getattr(self.model, "_initial_epoch", None) or 0

        def on_epoch_end(self, epoch, logs=None):
            if args.rank == 0:
                write_checkpoint(self.model, backup_dir, epoch + 1)
            line = {"epoch_end": epoch, "time": time.monotonic()}
            print(json.dumps(line), flush=True)

    # The chief completes (or drops) a checkpoint write a kill interrupted;
    # the all-reduce holds every worker until then, so all restore the same.
    if args.rank == 0:
        finish_checkpoint(backup_dir)
    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)

    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = runs.build_model("capsnet", "tf-multi-worker", distributed=True)
    images, labels = runs.global_data("capsnet")
    backup = ChiefWritesBackup(str(backup_dir))
    # `fit`'s step in a loop of its own (Keras 3.15's `fit` fails under this
    # strategy: `capsule_runs.train_in_strategy`), calling the callback
    # as `fit` does.
    callbacks = keras.callbacks.CallbackList([backup], model=model)
    runs.train_in_strategy(
        model, strategy, images, labels, epochs=args.epochs, callbacks=callbacks
    )
    weights = args.workdir / f"final_rank{args.rank}.npz"
    runs.save_arrays(weights, runs.weights_of(model))
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    print(
        json.dumps(
            {
                "initial_epoch": backup.initial_epoch,
                "steps": steps,
                "weights": str(weights),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
