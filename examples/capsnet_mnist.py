"""Trains the CapsNet of Sabour, Frosst & Hinton (2017) on MNIST.

    python examples/capsnet_mnist.py --backend torch --data mnist.npz \
        --epochs 2 --train-samples 2000 --output-dir runs/torch

The model, the margin loss and the 0.0005-weighted reconstruction loss are
the paper's; so is the augmentation, random shifts of up to 2 pixels with
zero padding. Training uses Adam with a learning rate decayed every epoch.
The test set is evaluated after every epoch. At the end the script prints
one line `test accuracy: 0.XXXX` and writes into `--output-dir`: the trained
model `capsnet.keras`, the figures `reconstructions.png`, `perturbations.png`
(fig. 4 of the paper) and `history.png`, `metrics.json` with the accuracy
and timings, and `training_log.csv`, one row per epoch.

Long runs survive interruption: the weights and the optimizer are saved
after every epoch in `--output-dir`/backup, and running the same command
again continues after the last finished epoch (`--fresh` starts over). A NaN
loss stops the run and keeps the last good checkpoint.

Any `.npz` with MNIST's keys (`x_train`, `y_train`, `x_test`, `y_test`;
uint8 images, integer labels) can be passed with `--data`, e.g. Fashion-MNIST
or CIFAR-10 saved that way: the image shape and the number of classes are
read from the data.
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


# (option, type, default, help); `--backend` and `--data-parallel` are added apart.
OPTIONS = [
    ("--data", Path, None, "MNIST-like .npz (default: keras.datasets.mnist)"),
    ("--epochs", int, 10, "training epochs"),
    ("--batch-size", int, 100, "images per training step"),
    ("--lr", float, 1e-3, "Adam learning rate"),
    ("--lr-decay", float, 0.9, "learning rate factor per epoch"),
    ("--routing-iterations", int, 3, "routing iterations"),
    ("--recon-weight", float, 0.0005, "weight of the sum of squared pixel errors"),
    ("--shift", int, 2, "largest random translation in pixels (0: none)"),
    ("--train-samples", int, None, "train on the first N training images"),
    ("--test-samples", int, None, "test on the first N test images"),
    ("--output-dir", Path, Path("runs/capsnet_mnist"), "where outputs go"),
    ("--seed", int, 0, "seed of the weights, shuffling and shifts"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend (default: KERAS_BACKEND, else Keras's default)",
    )
    for option, type_, default, help_ in OPTIONS:
        parser.add_argument(option, type=type_, default=default, help=help_)
    parser.add_argument(
        "--primary-conv",
        choices=("auto", "direct", "space_to_depth"),
        default="auto",
        help="how PrimaryCapsule computes its strided convolution (same "
        "result; auto: the fastest measured for the backend, space_to_depth on "
        "JAX, whose XLA differentiates the strided one ~10x slower on CPU)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start over, discarding the checkpoint and log in --output-dir",
    )
    parser.add_argument(
        "--data-parallel",
        action="store_true",
        help="split each batch over all devices (JAX backend only)",
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "routing_iterations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("train_samples", "test_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.shift < 0:
        parser.error("--shift must be 0 or more")
    return args


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


def prepare(images: Any, labels: Any, num_classes: int) -> tuple[Any, Any]:
    """Scales images to [0, 1] with a channel axis; one-hot encodes labels."""
    images = np.asarray(images, dtype="float32") / 255.0
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray(labels).reshape(-1).astype("int64")
    return images, np.eye(num_classes, dtype="float32")[labels]


def random_shift(images: Any, max_shift: int, rng: Any) -> Any:
    """Translates each image by whole pixels in [-max_shift, max_shift], zero-filled."""
    if max_shift == 0:
        return images
    count, height, width, _ = images.shape
    pad = ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0))
    padded = np.pad(images, pad)
    rows, columns = rng.integers(-max_shift, max_shift + 1, size=(2, count))
    shifted = np.empty_like(images)
    for i in range(count):
        top, left = max_shift - rows[i], max_shift - columns[i]
        shifted[i] = padded[i, top : top + height, left : left + width]
    return shifted


def training_batch(
    images: Any, labels: Any, args: argparse.Namespace, epoch: int, index: int
) -> tuple[Any, Any]:
    """Batch `index` of `epoch`: shuffled, then randomly shifted.

    Seeded by (seed, epoch, batch), so a batch is the same whatever order
    or thread it is fetched in, and `reference_torch_capsnet.py` trains on
    exactly the same batches.
    """
    order = np.random.default_rng((args.seed, epoch)).permutation(len(images))
    batch = order[index * args.batch_size : (index + 1) * args.batch_size]
    rng = np.random.default_rng((args.seed, epoch, index))
    return random_shift(images[batch], args.shift, rng), labels[batch]


def shifted_batches(
    images: Any, labels: Any, args: argparse.Namespace, devices: int = 1
) -> Any:
    """A `PyDataset` of shuffled, shifted batches `((x, y), (y, x))`.

    NumPy only, so it feeds every backend. The model takes the labels as an
    input too, to mask the decoder's input in training; the shifted images
    are both the input and the reconstruction target. Every batch splits
    evenly over `devices`: the last one is cut to a multiple of it.
    """
    import keras

    # Defined here: Keras may only be imported after KERAS_BACKEND is set.
    class ShiftedBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            # Set by the training loop: a resumed run continues mid-schedule.
            self.epoch = 0

        def __len__(self) -> int:
            full, rest = divmod(len(images), args.batch_size)
            return full + (rest >= devices)

        def __getitem__(self, index: int) -> Any:
            x, y = training_batch(images, labels, args, self.epoch, index)
            keep = len(x) - len(x) % devices
            x, y = x[:keep], y[:keep]
            return (x, y), (y, x)

    return ShiftedBatches()


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

    The labels go in too, so the decoder reconstructs from the true class
    capsule, as in training.
    """
    if devices > 1 and len(x_test) % batch_size % devices:
        return None
    return ((x_test, y_test), (y_test, x_test))


def training_callbacks(
    keras: Any, args: argparse.Namespace, batches: Any, backup_dir: Path, log_path: Path
) -> list[Any]:
    """Learning-rate decay, epoch timing, NaN stop, checkpoint/resume, CSV log."""

    class EpochClock(keras.callbacks.Callback):
        """Tells the data its epoch and records each epoch's seconds in the logs."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            batches.epoch = epoch
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if logs is not None:
                logs["epoch_seconds"] = time.perf_counter() - self.started

    class BackupFiniteEpochs(keras.callbacks.BackupAndRestore):
        """`BackupAndRestore` that never overwrites a good checkpoint with NaN."""

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
            super().on_epoch_end(epoch, logs)

    class FiniteEpochsLog(keras.callbacks.CSVLogger):
        """`CSVLogger` that, like the checkpoint, leaves out a NaN epoch.

        That epoch runs again when the run resumes; its row would be a
        second one for the same epoch.
        """

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if logs and not np.isfinite(logs.get("loss", 0.0)):
                return
            super().on_epoch_end(epoch, logs)

    return [
        EpochClock(),
        keras.callbacks.LearningRateScheduler(
            lambda epoch: args.lr * args.lr_decay**epoch
        ),
        keras.callbacks.TerminateOnNaN(),
        BackupFiniteEpochs(str(backup_dir), delete_checkpoint=False),
        FiniteEpochsLog(str(log_path), append=True),
    ]


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Imported only now: Keras reads KERAS_BACKEND once, at its first import.
    import keras

    from keras_capsules.losses import MarginLoss, ReconstructionLoss
    from keras_capsules.models import CapsNet
    from keras_capsules.visualization import (
        plot_history,
        plot_perturbations,
        plot_reconstructions,
    )

    backend = keras.backend.backend()
    if args.backend and backend != args.backend:
        print(
            f"Keras was already imported with the {backend} backend in this "
            f"process, so --backend {args.backend} cannot apply.",
            file=sys.stderr,
        )
        return 2
    keras.utils.set_random_seed(args.seed)
    devices = 1
    if args.data_parallel:
        devices = set_up_data_parallel(args.batch_size)
        if not devices:
            return 2

    try:
        (x_train, y_train), (x_test, y_test) = load_data(args.data)
        check_sample_counts(args, len(x_train), len(x_test))
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    num_classes = int(max(np.max(y_train), np.max(y_test))) + 1
    x_train, y_train = prepare(
        x_train[: args.train_samples], y_train[: args.train_samples], num_classes
    )
    x_test, y_test = prepare(
        x_test[: args.test_samples], y_test[: args.test_samples], num_classes
    )
    print(
        f"backend: {backend}, devices: {devices}, train: {x_train.shape}, "
        f"test: {x_test.shape}, classes: {num_classes}"
    )

    output_dir = args.output_dir
    backup_dir, log_path = output_dir / "backup", output_dir / "training_log.csv"
    if args.fresh:
        shutil.rmtree(backup_dir, ignore_errors=True)
        log_path.unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)

    model = CapsNet(
        image_shape=x_train.shape[1:],
        num_classes=num_classes,
        routing_iterations=args.routing_iterations,
        primary_conv_implementation=args.primary_conv,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=[MarginLoss(), ReconstructionLoss(weight=args.recon_weight)],
        metrics=[[keras.metrics.CategoricalAccuracy(name="accuracy")], []],
    )
    batches = shifted_batches(x_train, y_train, args, devices)
    history = model.fit(
        batches,
        epochs=args.epochs,
        validation_data=validation_set(x_test, y_test, args.batch_size, devices),
        callbacks=training_callbacks(keras, args, batches, backup_dir, log_path),
        # One line per epoch when the output is a log file, not a terminal.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    if history.history.get("loss") and not np.isfinite(history.history["loss"][-1]):
        print(
            "error: the loss became NaN, so training stopped; the checkpoint of "
            f"the last good epoch is kept in {backup_dir}",
            file=sys.stderr,
        )
        return 1

    test_started = time.perf_counter()
    # Zero images pad the test set to a multiple of the devices, so that
    # every batch splits evenly; their predictions are dropped.
    padding = np.zeros((-len(x_test) % devices, *x_test.shape[1:]), "float32")
    lengths, reconstructions = (
        outputs[: len(x_test)]
        for outputs in model.predict(
            np.concatenate([x_test, padding]), batch_size=args.batch_size, verbose=0
        )
    )
    test_seconds = time.perf_counter() - test_started
    accuracy = float(np.mean(np.argmax(lengths, -1) == np.argmax(y_test, -1)))

    model.save(output_dir / "capsnet.keras")
    plot_reconstructions(
        x_test[:10], reconstructions[:10], output_dir / "reconstructions.png"
    )
    plot_perturbations(model, x_test[0], output_dir / "perturbations.png")
    epoch_logs = read_training_log(log_path)
    plot_history(
        {k: v for k, v in epoch_logs.items() if k not in ("epoch", "epoch_seconds")},
        output_dir / "history.png",
    )

    # The first epoch of a process includes tracing / compilation; the later
    # ones show the steady speed.
    epoch_seconds = epoch_logs.get("epoch_seconds", [])
    steady = epoch_seconds[1:] or epoch_seconds or [float("nan")]
    seconds_per_epoch = float(np.median(steady))
    trained = len(x_train) - len(x_train) % args.batch_size % devices
    metrics = {
        "test_accuracy": accuracy,
        "test_samples": len(x_test),
        "train_samples": len(x_train),
        "epochs": len(epoch_seconds),
        "backend": backend,
        "keras_version": keras.__version__,
        "devices": devices,
        "machine": describe_machine(),
        "parameters": model.count_params(),
        "epoch_seconds": epoch_seconds,
        "seconds_per_epoch": seconds_per_epoch,
        "train_images_per_second": trained / seconds_per_epoch,
        "test_images_per_second": len(x_test) / test_seconds,
        "history": epoch_logs,
        "args": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
    }
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"seconds per epoch: {seconds_per_epoch:.1f} "
        f"({metrics['train_images_per_second']:.1f} train images/s), "
        f"outputs in {output_dir}"
    )
    print(f"test accuracy: {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
