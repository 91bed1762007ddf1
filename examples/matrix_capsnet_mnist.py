"""Trains matrix capsules with EM routing (Hinton, Sabour & Frosst, 2018) on MNIST.

    python examples/matrix_capsnet_mnist.py --backend torch --data mnist.npz \
        --epochs 2 --train-samples 2000 --output-dir runs/matrix_small

MNIST is not the paper's dataset: the paper trains and reports on smallNORB
(1.8 % error, 32x32 crops of 48x48 images, with augmentation). This script
runs the paper's architecture (`keras_capsules.models.MatrixCapsNet`: ReLU
convolution, primary matrix capsules, two convolutional capsule layers, class
capsules with coordinate addition, EM routing) on MNIST digits, without
augmentation, so its accuracy says how the implementation learns, not whether
it reproduces the paper's smallNORB numbers.

Image size: the digits go in as they are, 28x28 (`image_shape=(28, 28, 1)`),
not padded to the paper's 32x32. With "valid" padding everywhere the capsule
grids are 12x12, 5x5 and 3x3 instead of 14x14, 6x6 and 4x4; the weights are
the same (the transformation matrices do not depend on the grid), and the two
routing layers route 25 + 9 positions instead of 36 + 16, about a third less
work in the part of the network that costs almost all the time. A 32x32 pad
would only add blank border around MNIST's centred digits.

`--model small` (the default) is the paper's smaller model, A=64, B=8, C=D=16
(68,444 weights with 10 classes), and `--model paper` the A=B=C=D=32 one
(318,964 weights). PyTorch is the fastest backend for EM routing on a CPU
(see the docs' Performance page): on a 2-core CPU the small model trains at
about 50 images/s (batch 24, 28x28), so an epoch of all of MNIST takes about
20 minutes; the big one on 32x32 images at about 6.6 images/s (batch 16).

Recipe (the defaults): spread loss with its margin grown linearly from 0.2
to 0.9 over the epochs (`SpreadMarginSchedule`), Adam at 3e-3 without decay
(`--lr-decay 1`), batch 24, 2 EM iterations (one E-step) instead of the
paper's and the model's 3, and `final_inverse_temperature=0.1` (`lambda_final`
of every routing layer, the model's default too). Two iterations are the
default of yl-1993 and www0wwwjs1 and the best count of IBM and yl-1993; here,
after one epoch on the first 3,000 training images (batch 24, margin 0.2,
PyTorch, `benchmarks/em_iterations.py`, 1,000 test images), 1 / 2 / 3
iterations reach 0.61 / 0.66-0.68 / 0.14-0.17 test accuracy: the second E-step of 3
iterations fits parents to single children at the start of training (see
`keras_capsules.ops.routing.em`).

The test set is evaluated after every epoch, unless `--validation-samples N`
holds out the last N training images: then those are evaluated after every
epoch, the weights of the epoch best on them are kept in
`--output-dir`/backup/best.weights.h5, and the test set is scored only at the
end, with the last weights and with the best ones (`metrics.json` reports
both: `test_accuracy` and `best_test_accuracy`, with `best_epoch`). At the
end the script prints one line `test accuracy: 0.XXXX` (the last weights)
and writes into `--output-dir`: the trained
model (`matrix_capsnet.keras`), `history.png`, `training_log.csv` (one row
per epoch: losses, accuracies, seconds, learning rate, margin) and
`metrics.json` (per-epoch test accuracy, seconds per epoch, train images/s,
the machine and the exact command). Runs survive interruption as those of
`capsnet_mnist.py` do: the weights and the optimizer are saved after every
epoch in `--output-dir`/backup and the same command continues after the last
finished epoch (`--fresh` starts over); a NaN loss stops the run and keeps
the last good checkpoint.

How the defaults were picked, on short runs of the small model (JAX, one
epoch of 1,200 or 1,920 training images, 50 or 80 steps of batch 24, 300
test images; a shared 2-core CPU): with `final_inverse_temperature=1.0` the
class activations of a fresh model sit between 0.9 and 1.0 (the primary
poses are small, about 0.03, so the votes agree closely and the EM cost is
very negative), and training did not separate the classes: at learning
rate 1e-3 the loss stayed at 0.44 (test accuracy 13 %), and at 3e-3
(standardised inputs) or 1e-2 it rose to 0.6, the wrong classes above the
right one; 0.3 did the same at 3e-3. At 0.1 the activations start near 0.6
and, at 3e-3, the loss falls (0.44 to 0.38, test accuracy 15 % after 80
steps, 26 % after 160 with the margin at 0.9 in the second epoch; 0.05
gave 14 % after 80; at 1e-3 the loss stays flat); at 0.01 the
activations barely differ between classes and nothing moves. Learning is
slow at first: expect several epochs, not one, before the accuracy is high.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_training import (  # noqa: E402
    BACKENDS,
    VALIDATION_ACCURACY,
    DataError,
    describe_machine,
    load_checked_data,
    prepare,
    read_training_log,
    refuse_out_of_range,
    report_run,
    resumable_run_files,
    select_keras_backend,
    stopped_on_nan,
    training_callbacks,
    validation_split,
)

# Capsule sizes of the paper's two models: A (convolution channels), B
# (primary capsule types), C and D (convolutional capsule types).
MODELS: dict[str, dict[str, Any]] = {
    "small": {
        "conv_filters": 64,
        "primary_capsule_types": 8,
        "conv_capsule_types": (16, 16),
    },
    "paper": {
        "conv_filters": 32,
        "primary_capsule_types": 32,
        "conv_capsule_types": (32, 32),
    },
}

# (option, type, default, help); `--backend`, `--model` and `--fresh` are added apart.
OPTIONS = [
    ("--data", Path, None, "MNIST-like .npz (default: keras.datasets.mnist)"),
    ("--epochs", int, 10, "training epochs; the margin reaches 0.9 at the last"),
    ("--batch-size", int, 24, "images per training step"),
    ("--lr", float, 3e-3, "Adam learning rate"),
    ("--lr-decay", float, 1.0, "learning rate factor per epoch"),
    (
        "--final-inverse-temperature",
        float,
        0.1,
        "lambda_final of every EM routing layer",
    ),
    ("--routing-iterations", int, 2, "EM iterations of every routing layer"),
    ("--train-samples", int, None, "train on the first N training images"),
    ("--test-samples", int, None, "test on the first N test images"),
    (
        "--validation-samples",
        int,
        0,
        "hold out the last N training images to validate on after every "
        "epoch, keeping the best epoch's weights in OUTPUT_DIR/backup/"
        "best.weights.h5 (0: validate on the test set, keep only the last)",
    ),
    ("--output-dir", Path, Path("runs/matrix_capsnet_mnist"), "where outputs go"),
    ("--seed", int, 0, "seed of the weights and the shuffling"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend (default: KERAS_BACKEND, else Keras's default)",
    )
    parser.add_argument(
        "--model",
        choices=tuple(MODELS),
        default="small",
        help="capsule sizes: the paper's small model (A=64, B=8, C=D=16, the "
        "default) or its big one (A=B=C=D=32)",
    )
    for option, type_, default, help_ in OPTIONS:
        parser.add_argument(option, type=type_, default=default, help=help_)
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start over, discarding the checkpoint and log in --output-dir",
    )
    args = parser.parse_args(argv)
    refuse_out_of_range(
        parser,
        args,
        positive=(
            "epochs", "batch_size", "routing_iterations", "train_samples",
            "test_samples", "lr", "lr_decay", "final_inverse_temperature",
        ),
        non_negative=("validation_samples",),
    )  # fmt: skip
    return args


def the_command(argv: list[str] | None) -> str:
    """The command line of this run, to repeat it."""
    script = Path(__file__).resolve()
    try:
        script = script.relative_to(Path.cwd())
    except ValueError:
        pass
    arguments = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", str(script), *arguments])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not select_keras_backend(args.backend):
        return 2
    import keras

    from keras_capsules.callbacks import SpreadMarginSchedule
    from keras_capsules.losses import SpreadLoss
    from keras_capsules.models import MatrixCapsNet
    from keras_capsules.visualization import plot_history

    backend = keras.backend.backend()
    keras.utils.set_random_seed(args.seed)

    data = load_checked_data(args)
    if data is None:
        return 2
    (x_train, y_train), (x_test, y_test) = data
    num_classes = int(max(np.max(y_train), np.max(y_test))) + 1
    x_train, y_train = prepare(
        x_train[: args.train_samples], y_train[: args.train_samples], num_classes
    )
    x_test, y_test = prepare(
        x_test[: args.test_samples], y_test[: args.test_samples], num_classes
    )
    try:
        (x_train, y_train), (x_val, y_val) = validation_split(
            x_train, y_train, x_test, y_test, args.validation_samples
        )
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        model = MatrixCapsNet(
            image_shape=x_train.shape[1:],
            num_classes=num_classes,
            routing_iterations=args.routing_iterations,
            final_inverse_temperature=args.final_inverse_temperature,
            **MODELS[args.model],
        )
    except ValueError as error:
        # Images too small for the network: one line, like bad data.
        print(f"error: --data {args.data}: {error}", file=sys.stderr)
        return 2
    print(
        f"backend: {backend}, model: {args.model} ({model.count_params()} weights), "
        f"train: {x_train.shape}, validation: "
        f"{x_val.shape if args.validation_samples else 'the test set'}, "
        f"test: {x_test.shape}, classes: {num_classes}"
    )

    output_dir = args.output_dir
    backup_dir, log_path = resumable_run_files(output_dir, args.fresh)

    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=SpreadLoss(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    callbacks = training_callbacks(keras, args, None, backup_dir, log_path)
    # The margin goes in the logs before the CSV logger (the last) writes them.
    callbacks.insert(0, SpreadMarginSchedule(initial_margin=0.2, final_margin=0.9))
    history = model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        shuffle=True,
        validation_data=(x_val, y_val),
        callbacks=callbacks,
        # One line per epoch when the output is a log file, not a terminal.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    if stopped_on_nan(history, backup_dir):
        return 1

    def test(model: Any) -> tuple[float, float]:
        """Accuracy on the test set and the seconds it took."""
        started = time.perf_counter()
        activations = model.predict(x_test, batch_size=args.batch_size, verbose=0)
        correct = np.argmax(activations, -1) == np.argmax(y_test, -1)
        return float(np.mean(correct)), time.perf_counter() - started

    # The test set is scored once per set of weights, only here: the best
    # epoch is chosen on the held-out images.
    best = {}
    best_weights = backup_dir / "best.weights.h5"
    if args.validation_samples and best_weights.exists():
        last_weights = [np.array(w) for w in model.get_weights()]
        model.load_weights(best_weights)
        best_accuracy, _ = test(model)
        validated = read_training_log(log_path).get(VALIDATION_ACCURACY, [])
        best = {
            "best_epoch": int(np.argmax(validated)) + 1,
            "best_validation_accuracy": float(np.max(validated)),
            "best_test_accuracy": best_accuracy,
        }
        model.set_weights(last_weights)
    accuracy, test_seconds = test(model)

    model.save(output_dir / "matrix_capsnet.keras")
    epoch_logs = read_training_log(log_path)
    plot_history(
        {k: v for k, v in epoch_logs.items() if "loss" in k or "accuracy" in k},
        output_dir / "history.png",
    )

    # The first epoch of a process includes tracing / compilation, and each
    # change of margin retraces once; the median of the later ones is the
    # steady speed. An epoch's seconds include its test-set evaluation.
    epoch_seconds = epoch_logs.get("epoch_seconds", [])
    steady = epoch_seconds[1:] or epoch_seconds or [float("nan")]
    seconds_per_epoch = float(np.median(steady))
    metrics = {
        "model": f"MatrixCapsNet ({args.model})",
        "dataset": "MNIST (not the paper's smallNORB)",
        "test_accuracy": accuracy,
        # Per epoch, on the held-out images with --validation-samples.
        (
            "validation_accuracy_per_epoch"
            if args.validation_samples
            else "test_accuracy_per_epoch"
        ): epoch_logs.get(VALIDATION_ACCURACY, []),
        "test_samples": len(x_test),
        "validation_samples": args.validation_samples,
        **best,
        "train_samples": len(x_train),
        "image_shape": list(x_train.shape[1:]),
        "epochs": len(epoch_seconds),
        "backend": backend,
        "keras_version": keras.__version__,
        "machine": describe_machine(),
        "parameters": model.count_params(),
        "epoch_seconds": epoch_seconds,
        "seconds_per_epoch": seconds_per_epoch,
        "train_images_per_second": len(x_train) / seconds_per_epoch,
        "test_images_per_second": len(x_test) / test_seconds,
        "history": epoch_logs,
        "command": the_command(argv),
    }
    report_run(output_dir, metrics, args, best, speed_note=", test set included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
