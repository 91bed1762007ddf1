"""What the MNIST examples share: Keras, data checks, callbacks, logs, metrics.

Long runs survive interruption: `training_callbacks` saves the weights and
the optimizer after every epoch, resumes after the last finished one, stops
on a NaN loss without overwriting the last good checkpoint, and logs every
epoch to a CSV file. A kill at any moment, even while a checkpoint is being
written, leaves the last checkpoint whole (`write_checkpoint`) and the log
holding each of its epochs once (`trim_training_log`).

Where a run cannot go on, `select_keras_backend` and `load_checked_data`
print one line and return `False` or `None`; the script's `main` then
returns 2, the exit code of `argparse`'s usage errors.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("tensorflow", "torch", "jax")


def select_keras_backend(backend: str | None) -> bool:
    """Sets `KERAS_BACKEND` to `backend`, when given, and checks that it took.

    Keras reads the variable once, at its first import: the scripts import
    Keras after this, never at the top. Returns `False`, after an error
    line, when Keras was already imported in this process with another
    backend.
    """
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    if backend and keras.backend.backend() != backend:
        print(
            f"Keras was already imported with the {keras.backend.backend()} backend "
            f"in this process, so --backend {backend} cannot apply.",
            file=sys.stderr,
        )
        return False
    return True


class DataError(ValueError):
    """A `--data` file that cannot be used; the message is one line."""


DATA_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_data(path: Path | None) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    if path is None:
        import keras

        return keras.datasets.mnist.load_data()
    if not path.is_file():
        raise DataError(f"--data {path}: no such file")
    try:
        data = np.load(path)
        if isinstance(data, np.ndarray):
            raise DataError(
                f"--data {path}: holds one array (.npy), not an .npz with "
                f"{', '.join(DATA_KEYS)} as in keras.datasets.mnist"
            )
        with data:
            missing = [key for key in DATA_KEYS if key not in data.files]
            if missing:
                raise DataError(
                    f"--data {path}: missing key(s) {', '.join(missing)}; "
                    f"expected {', '.join(DATA_KEYS)} as in keras.datasets.mnist"
                )
            arrays = {key: np.asarray(data[key]) for key in DATA_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"--data {path}: not a readable .npz file ({error})") from None
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim not in (3, 4) or labels.size != len(images) or not len(images):
            raise DataError(
                f"--data {path}: expected x_{split} of shape (N, height, width) or "
                f"(N, height, width, channels) and N labels in y_{split}. Received: "
                f"x_{split}.shape={images.shape}, y_{split}.shape={labels.shape}"
            )
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(
            f"--data {path}: training and test images differ in shape. Received: "
            f"x_train.shape={arrays['x_train'].shape}, "
            f"x_test.shape={arrays['x_test'].shape}"
        )
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def check_sample_counts(args: argparse.Namespace, train: int, test: int) -> None:
    for name, available in (("train_samples", train), ("test_samples", test)):
        wanted = getattr(args, name)
        if wanted is not None and wanted > available:
            flag = "--" + name.replace("_", "-")
            raise DataError(f"{flag} {wanted} is more than the {available} in the data")


def load_checked_data(
    args: argparse.Namespace,
) -> tuple[tuple[Any, Any], tuple[Any, Any]] | None:
    """`load_data(args.data)`, holding the samples that `args` asks for.

    Returns `None`, after one `error:` line, when the data cannot be used.
    """
    try:
        (x_train, y_train), (x_test, y_test) = load_data(args.data)
        check_sample_counts(args, len(x_train), len(x_test))
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    return (x_train, y_train), (x_test, y_test)


def prepare(images: Any, labels: Any, num_classes: int) -> tuple[Any, Any]:
    """Scales images to [0, 1] with a channel axis; one-hot encodes labels."""
    images = np.asarray(images, dtype="float32") / 255.0
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray(labels).reshape(-1).astype("int64")
    return images, np.eye(num_classes, dtype="float32")[labels]


def set_up_data_parallel(batch_size: int) -> int:
    """Shards batches over all devices; returns the device count, or 0 on error."""
    import keras

    backend = keras.backend.backend()
    if backend != "jax":
        print(
            f"--data-parallel is only implemented for the JAX backend (with "
            f"keras.distribution.DataParallel); this run uses {backend}. Run with "
            "--backend jax, or on torch use torch.distributed "
            "(DistributedDataParallel, launched with torchrun), or on tensorflow "
            "use tf.distribute.MirroredStrategy in your own training script.",
            file=sys.stderr,
        )
        return 0
    devices = keras.distribution.list_devices()
    if batch_size % len(devices):
        print(
            f"--batch-size {batch_size} must be a multiple of the "
            f"{len(devices)} devices for --data-parallel.",
            file=sys.stderr,
        )
        return 0
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    return len(devices)


def validation_set(x_test: Any, y_test: Any, batch_size: int, devices: int) -> Any:
    """The test set, evaluated after every epoch, when its batches split evenly.

    The model reconstructs each image from its true class's capsule, as
    in training.
    """
    if devices > 1 and len(x_test) % batch_size % devices:
        return None
    return (x_test, y_test)


def resumable_run_files(folder: Path, fresh: bool) -> tuple[Path, Path]:
    """The checkpoint folder and CSV log of a run in `folder`, which is made.

    A run resumes from these; `fresh` deletes those of an earlier run, so
    that it starts over.
    """
    backup_dir, log_path = folder / "backup", folder / "training_log.csv"
    if fresh:
        shutil.rmtree(backup_dir, ignore_errors=True)
        log_path.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    return backup_dir, log_path


def refuse_out_of_range(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    positive: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
) -> None:
    """`parser.error` (exit 2) for the first option out of its range.

    Options left at `None` (not given, no default) are not checked; NaN is
    out of every range.
    """
    for names, in_range, wanted in (
        (positive, lambda value: value > 0, "positive"),
        (non_negative, lambda value: value >= 0, "0 or more"),
    ):
        for name in names:
            value = getattr(args, name)
            if value is not None and not in_range(value):
                parser.error(f"--{name.replace('_', '-')} must be {wanted}")


# The checkpoint's files, named as Keras's `BackupAndRestore` reads them, and
# the two that a checkpoint is first written to.
CHECKPOINT_WEIGHTS, CHECKPOINT_METADATA = "latest.weights.h5", "training_metadata.json"
PENDING_WEIGHTS, PENDING_METADATA = "pending.weights.h5", "pending_metadata.json"


def write_checkpoint(model: Any, backup_dir: Path, epochs_done: int) -> None:
    """Saves the weights and the optimizer after `epochs_done` epochs, all or nothing.

    Both files are written beside the checkpoint first; the pending
    metadata, written under a temporary name and renamed, says that both
    are complete; then they are renamed over the checkpoint
    (`finish_checkpoint`). Renaming is atomic, so a kill at any moment
    leaves the last checkpoint or the new one: never a half-written file,
    never new weights beside the old epoch count.
    """
    backup_dir.mkdir(parents=True, exist_ok=True)
    model.save_weights(backup_dir / PENDING_WEIGHTS, overwrite=True)
    partial = backup_dir / (PENDING_METADATA + ".partial")
    partial.write_text(json.dumps({"epoch": epochs_done, "batch": 0}))
    os.replace(partial, backup_dir / PENDING_METADATA)
    finish_checkpoint(backup_dir)


def finish_checkpoint(backup_dir: Path) -> None:
    """Completes a checkpoint whose writing was interrupted, or drops it.

    Where the pending metadata exists, the pending weights were complete:
    both take the checkpoint's place. Otherwise the writing stopped
    before, and what it left is removed.
    """
    pending = backup_dir / PENDING_METADATA
    if pending.exists():
        if (backup_dir / PENDING_WEIGHTS).exists():
            os.replace(backup_dir / PENDING_WEIGHTS, backup_dir / CHECKPOINT_WEIGHTS)
        os.replace(pending, backup_dir / CHECKPOINT_METADATA)
    else:
        (backup_dir / PENDING_WEIGHTS).unlink(missing_ok=True)


def checkpoint_epochs(backup_dir: Path) -> int:
    """How many epochs the checkpoint in `backup_dir` holds (0: none)."""
    path = backup_dir / CHECKPOINT_METADATA
    return int(json.loads(path.read_text())["epoch"]) if path.exists() else 0


def trim_training_log(log_path: Path, epochs: int) -> None:
    """Keeps the CSV log's rows of the first `epochs` epochs, each once.

    The log gets an epoch's row just before the checkpoint: a run killed
    between the two (or while writing the row) leaves a row the checkpoint
    does not hold, and that epoch runs again when the run resumes.
    """
    if not log_path.exists():
        return
    header, *rows = log_path.read_text().splitlines(keepends=True) or [""]
    columns = header.rstrip("\n").split(",")
    if not header.endswith("\n") or "epoch" not in columns:
        log_path.unlink()
        return

    def whole_row_of_held_epoch(row: str) -> bool:
        fields = row.rstrip("\n").split(",")
        return (
            row.endswith("\n")
            and len(fields) == len(columns)
            and int(float(fields[columns.index("epoch")])) < epochs
        )

    kept = [row for row in rows if whole_row_of_held_epoch(row)]
    if len(kept) < len(rows):
        partial = log_path.with_name(log_path.name + ".partial")
        partial.write_text(header + "".join(kept))
        os.replace(partial, log_path)


def training_callbacks(
    keras: Any, args: argparse.Namespace, batches: Any, backup_dir: Path, log_path: Path
) -> list[Any]:
    """Learning-rate decay, epoch timing, NaN stop, checkpoint/resume, CSV log.

    The decayed learning rate is floored at `args.min_lr` where it is set.

    `batches`, when not `None`, is told the epoch (its `epoch` attribute) at
    the start of each one, so that a resumed run draws that epoch's batches.

    Call it just before `fit`: it finishes or drops an interrupted
    checkpoint write and cuts the log to the checkpoint's epochs.
    """
    finish_checkpoint(backup_dir)
    trim_training_log(log_path, checkpoint_epochs(backup_dir))

    class EpochClock(keras.callbacks.Callback):
        """Tells the data its epoch and records each epoch's seconds in the logs."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if batches is not None:
                batches.epoch = epoch
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if logs is not None:
                logs["epoch_seconds"] = time.perf_counter() - self.started

    class BackupFiniteEpochs(keras.callbacks.BackupAndRestore):
        """`BackupAndRestore`, written all or nothing, never with a NaN loss."""

        def on_train_begin(self, logs: Any = None) -> None:
            super().on_train_begin(logs)
            resumed_at = getattr(self.model, "_initial_epoch", None)
            if resumed_at:
                print(
                    f"resuming from the checkpoint in {backup_dir}: epochs 1-"
                    f"{resumed_at} are done, continuing with epoch {resumed_at + 1}"
                    " (--fresh starts over)",
                    flush=True,
                )

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if logs and not np.isfinite(logs.get("loss", 0.0)):
                return
            # Keras's own writing is not atomic: a kill while it writes
            # leaves a file that the next run cannot load.
            write_checkpoint(self.model, backup_dir, epoch + 1)

    class FiniteEpochsLog(keras.callbacks.CSVLogger):
        """`CSVLogger` that, like the checkpoint, leaves out a NaN epoch.

        That epoch runs again when the run resumes; its row would be a
        second one for the same epoch.
        """

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if logs and not np.isfinite(logs.get("loss", 0.0)):
                return
            super().on_epoch_end(epoch, logs)

    callbacks = [
        EpochClock(),
        keras.callbacks.LearningRateScheduler(
            lambda epoch: max(
                args.lr * args.lr_decay**epoch, getattr(args, "min_lr", 0.0)
            )
        ),
        keras.callbacks.TerminateOnNaN(),
        # The log first: an epoch's row is written before its checkpoint.
        FiniteEpochsLog(str(log_path), append=True),
        BackupFiniteEpochs(str(backup_dir), delete_checkpoint=False),
    ]
    if getattr(args, "validation_samples", 0):
        callbacks.append(best_checkpoint(keras, backup_dir, log_path))
    return callbacks


# The log key of the accuracy on the held-out validation images.
VALIDATION_ACCURACY = "val_accuracy"


def best_checkpoint(keras: Any, backup_dir: Path, log_path: Path) -> Any:
    """Keeps the weights of the epoch best on the held-out validation images.

    Written to `backup_dir`/best.weights.h5. A resumed run starts from the
    best accuracy in the CSV log, so an epoch after the restart only
    replaces the kept weights when it beats every earlier one.
    """
    earlier = read_training_log(log_path).get(VALIDATION_ACCURACY, [])
    backup_dir.mkdir(parents=True, exist_ok=True)
    return keras.callbacks.ModelCheckpoint(
        str(backup_dir / "best.weights.h5"),
        monitor=VALIDATION_ACCURACY,
        mode="max",
        save_best_only=True,
        save_weights_only=True,
        initial_value_threshold=max(earlier) if earlier else None,
    )


def hold_out(
    images: Any, labels: Any, count: int
) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Splits the last `count` training images off as a validation set.

    The best checkpoint is chosen on them, never on the test set.
    """
    if count >= len(images):
        raise DataError(
            f"--validation-samples {count} leaves no training images of the "
            f"{len(images)}"
        )
    cut = len(images) - count
    return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


def validation_split(
    x_train: Any, y_train: Any, x_test: Any, y_test: Any, count: int | None
) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """The training and validation sets.

    With `count`, the last `count` training images are held out (see
    `hold_out`); without, the test set is shown after every epoch, as a
    progress line only: no best epoch is chosen on it.
    """
    if not count:
        return (x_train, y_train), (x_test, y_test)
    return hold_out(x_train, y_train, count)


def stopped_on_nan(history: Any, backup_dir: Path) -> bool:
    """Whether `fit` stopped on a NaN loss; if so, says so in one error line."""
    losses = history.history.get("loss")
    if not losses or np.isfinite(losses[-1]):
        return False
    print(
        "error: the loss became NaN, so training stopped; the checkpoint of "
        f"the last good epoch is kept in {backup_dir}",
        file=sys.stderr,
    )
    return True


def read_training_log(path: Path) -> dict[str, list[float]]:
    """The CSV log of every finished epoch, this run's and those it resumed."""
    if not path.exists():
        return {}
    with path.open() as log:
        rows = list(csv.DictReader(log))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def describe_machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({model}), {platform.system()}"


def write_metrics(
    path: Path, metrics: dict[str, Any], args: argparse.Namespace
) -> None:
    """Writes `metrics` as JSON, with the run's options last, under "args"."""
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    path.write_text(json.dumps({**metrics, "args": options}, indent=2) + "\n")


def report_run(
    output_dir: Path,
    metrics: dict[str, Any],
    args: argparse.Namespace,
    best: dict[str, Any] | None = None,
    speed_note: str = "",
) -> None:
    """Writes `metrics.json` and prints the run's closing lines."""
    write_metrics(output_dir / "metrics.json", metrics, args)
    print(
        f"seconds per epoch: {metrics['seconds_per_epoch']:.1f} "
        f"({metrics['train_images_per_second']:.1f} train images/s{speed_note}), "
        f"outputs in {output_dir}"
    )
    if best:
        print(
            f"best epoch {best['best_epoch']} (validation accuracy "
            f"{best['best_validation_accuracy']:.4f}): test accuracy "
            f"{best['best_test_accuracy']:.4f}"
        )
    print(f"test accuracy: {metrics['test_accuracy']:.4f}")


if __name__ == "__main__":
    # Not a script: it answers --help with what it is, and says so otherwise.
    argparse.ArgumentParser(
        prog="mnist_training.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="This module is not a script: capsnet_mnist.py, "
        "matrix_capsnet_mnist.py, multi_mnist.py, affine_robustness.py and "
        "reference_torch_capsnet.py import it. Run one of them, e.g. "
        "python examples/capsnet_mnist.py --help.",
    ).parse_args()
    print(
        "mnist_training.py is a module the example scripts import, not a "
        "script; see python examples/capsnet_mnist.py --help",
        file=sys.stderr,
    )
    sys.exit(2)
