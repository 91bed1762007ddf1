"""Trains the CapsNet of Sabour, Frosst & Hinton (2017), or Efficient-CapsNet, on MNIST.

    python examples/capsnet_mnist.py --backend torch --data mnist.npz \
        --epochs 2 --train-samples 2000 --output-dir runs/torch
    python examples/capsnet_mnist.py --model efficient-capsnet --data mnist.npz

`--model capsnet` (the default) follows Sabour et al. and CapsNet-Keras:
margin loss plus the 0.0005-weighted sum of squared pixel errors, random
shifts of up to 2 pixels, Adam at 1e-3 decayed by 0.9 per epoch, batch 100.
`--model efficient-capsnet` follows the authors' code of Mazzia et al.
(2021): the same losses, Adam at 5e-4 decayed by 0.97 per epoch (down to
5e-5, their floor), batch 16,
and their augmentation (half the images rotated, mostly by a few degrees,
each digit shifted within its margins, squished horizontally and given an
erased 4x4 patch; see `efficient_capsnet_augmentation.py`). Options left out take the model's recipe.
The test set is evaluated after every epoch. At the end the script prints
one line `test accuracy: 0.XXXX` and writes into `--output-dir`: the trained
model (`capsnet.keras` or `efficient_capsnet.keras`), the figures `reconstructions.png`, `perturbations.png`
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
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from efficient_capsnet_augmentation import augment  # noqa: E402
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
    set_up_data_parallel,
    stopped_on_nan,
    training_callbacks,
    validation_set,
    validation_split,
)

# The recipe's fields behind the options that default to it.
RECIPE_OPTIONS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "lr_decay": "decay_per_epoch",
    "min_lr": "min_learning_rate",
    "recon_weight": "reconstruction_weight",
}


def model_recipe(model: str, backend: str | None) -> Any:
    """The `TrainingRecipe` of `--model`, read from the package's model.

    Importing the package imports Keras, which reads `KERAS_BACKEND` once:
    `--backend` is set first, unless Keras is already imported.
    """
    if backend and "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_capsules.models import CapsNet, EfficientCapsNet

    return {"capsnet": CapsNet, "efficient-capsnet": EfficientCapsNet}[model].recipe


# (option, type, default, help); `--backend` and `--data-parallel` are added apart.
# `None` where the model's recipe decides.
OPTIONS = [
    ("--data", Path, None, "MNIST-like .npz (default: keras.datasets.mnist)"),
    ("--epochs", int, None, "training epochs (default: the recipe's, 10 / 150)"),
    ("--batch-size", int, None, "images per training step (recipe: 100 / 16)"),
    ("--lr", float, None, "Adam learning rate (recipe: 1e-3 / 5e-4)"),
    ("--lr-decay", float, None, "learning rate factor per epoch (0.9 / 0.97)"),
    ("--min-lr", float, None, "floor of the decayed learning rate (0 / 5e-5)"),
    ("--routing-iterations", int, 3, "routing iterations (CapsNet)"),
    (
        "--recon-weight",
        float,
        None,
        "weight of the sum of squared pixel errors (recipe: 0.0005)",
    ),
    ("--shift", int, 2, "largest random translation in pixels (CapsNet; 0: none)"),
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
    ("--output-dir", Path, None, "where outputs go (default: runs/MODEL_mnist)"),
    ("--seed", int, 0, "seed of the weights, shuffling and augmentation"),
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
        choices=("capsnet", "efficient-capsnet"),
        default="capsnet",
        help="the network and its training recipe (default: capsnet)",
    )
    for option, type_, default, help_ in OPTIONS:
        parser.add_argument(option, type=type_, default=default, help=help_)
    parser.add_argument(
        "--primary-conv",
        choices=("auto", "direct", "space_to_depth"),
        default="auto",
        help="how PrimaryCapsule computes its strided convolution (same "
        "result; auto: the fastest measured for the backend, space_to_depth on "
        "JAX, whose XLA differentiates the strided one several times slower on CPU)",
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
    recipe = model_recipe(args.model, args.backend)
    for name, field in RECIPE_OPTIONS.items():
        if getattr(args, name) is None:
            setattr(args, name, getattr(recipe, field))
    if args.output_dir is None:
        args.output_dir = Path("runs") / f"{args.model.replace('-', '_')}_mnist"
    refuse_out_of_range(
        parser,
        args,
        positive=(
            "epochs", "batch_size", "routing_iterations", "train_samples",
            "test_samples", "lr", "lr_decay",
        ),
        non_negative=("shift", "min_lr", "recon_weight", "validation_samples"),
    )  # fmt: skip
    return args


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


def augmented_epoch(images: Any, args: argparse.Namespace, epoch: int) -> Any:
    """Every training image of `epoch`, augmented as Efficient-CapsNet's are.

    All at once, in large chunks (`efficient_capsnet_augmentation.augment`):
    per batch of 16 the overhead would cost more than the training step.
    Seeded by (seed, epoch).
    """
    rng = np.random.default_rng((args.seed, epoch, 1))
    return np.concatenate(
        [
            augment(images[start : start + 2000], rng)
            for start in range(0, len(images), 2000)
        ]
    )


def training_batches(
    images: Any, labels: Any, args: argparse.Namespace, devices: int = 1
) -> Any:
    """A `PyDataset` of shuffled, augmented batches `(images, labels)`.

    CapsNet's batches are shifted (`training_batch`); Efficient-CapsNet's
    come from the epoch's augmented images (`augmented_epoch`). NumPy only,
    so it feeds every backend. The model reconstructs the augmented images,
    from the capsule of each one's label. Every batch splits evenly over
    `devices`: the last one is cut to a multiple of it.
    """
    import keras

    # Defined here: Keras may only be imported after KERAS_BACKEND is set.
    class TrainingBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            # Set by the training loop: a resumed run continues mid-schedule.
            self.epoch = 0
            self._augmented: tuple[int, Any] | None = None

        def __len__(self) -> int:
            full, rest = divmod(len(images), args.batch_size)
            return full + (rest >= devices)

        def __getitem__(self, index: int) -> Any:
            if args.model == "capsnet":
                x, y = training_batch(images, labels, args, self.epoch, index)
            else:
                if self._augmented is None or self._augmented[0] != self.epoch:
                    self._augmented = (
                        self.epoch,
                        augmented_epoch(images, args, self.epoch),
                    )
                order = np.random.default_rng((args.seed, self.epoch)).permutation(
                    len(images)
                )
                batch = order[index * args.batch_size : (index + 1) * args.batch_size]
                x, y = self._augmented[1][batch], labels[batch]
            keep = len(x) - len(x) % devices
            x, y = x[:keep], y[:keep]
            return x, y

    return TrainingBatches()


# The name the tests and earlier scripts know.
shifted_batches = training_batches


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not select_keras_backend(args.backend):
        return 2
    import keras

    from keras_capsules.models import CapsNet, EfficientCapsNet
    from keras_capsules.visualization import (
        plot_history,
        plot_perturbations,
        plot_reconstructions,
    )

    backend = keras.backend.backend()
    keras.utils.set_random_seed(args.seed)
    devices = 1
    if args.data_parallel:
        devices = set_up_data_parallel(args.batch_size)
        if not devices:
            return 2

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
    print(
        f"backend: {backend}, devices: {devices}, train: {x_train.shape}, "
        f"validation: {x_val.shape if args.validation_samples else 'the test set'}, "
        f"test: {x_test.shape}, classes: {num_classes}"
    )

    output_dir = args.output_dir
    backup_dir, log_path = resumable_run_files(output_dir, args.fresh)

    if args.model == "capsnet":
        model = CapsNet(
            image_shape=x_train.shape[1:],
            num_classes=num_classes,
            routing_iterations=args.routing_iterations,
            primary_conv_implementation=args.primary_conv,
        )
    else:
        model = EfficientCapsNet(image_shape=x_train.shape[1:], num_classes=num_classes)
    # The model's recipe (`compile()`), with the options' learning rate and
    # reconstruction weight; the schedule is `training_callbacks`'.
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        reconstruction_weight=args.recon_weight,
    )
    batches = training_batches(x_train, y_train, args, devices)
    history = model.fit(
        batches,
        epochs=args.epochs,
        validation_data=validation_set(x_val, y_val, args.batch_size, devices),
        callbacks=training_callbacks(keras, args, batches, backup_dir, log_path),
        # One line per epoch when the output is a log file, not a terminal.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    if stopped_on_nan(history, backup_dir):
        return 1

    def test(model: Any) -> tuple[float, Any, float]:
        """Accuracy on the test set, the reconstructions, and the seconds taken."""
        started = time.perf_counter()
        # Zero images pad the test set to a multiple of the devices, so that
        # every batch splits evenly; their predictions are dropped.
        padding = np.zeros((-len(x_test) % devices, *x_test.shape[1:]), "float32")
        lengths = model.predict(
            np.concatenate([x_test, padding]), batch_size=args.batch_size, verbose=0
        )[: len(x_test)]
        correct = np.argmax(lengths, -1) == np.argmax(y_test, -1)
        seconds = time.perf_counter() - started
        # The reconstructions of the figure: each digit from its longest capsule.
        shown = x_test[:10]
        reconstructions = keras.ops.convert_to_numpy(model.decode(model.encode(shown)))
        return float(np.mean(correct)), reconstructions, seconds

    best = {}
    best_weights = backup_dir / "best.weights.h5"
    if args.validation_samples and best_weights.exists():
        last_weights = [np.array(w) for w in model.get_weights()]
        model.load_weights(best_weights)
        best_accuracy, _, _ = test(model)
        validated = read_training_log(log_path).get(VALIDATION_ACCURACY, [])
        best = {
            "best_epoch": int(np.argmax(validated)) + 1,
            "best_validation_accuracy": float(np.max(validated)),
            "best_test_accuracy": best_accuracy,
        }
        model.set_weights(last_weights)
    accuracy, reconstructions, test_seconds = test(model)

    model.save(output_dir / f"{args.model.replace('-', '_')}.keras")
    plot_reconstructions(
        x_test[:10], reconstructions, output_dir / "reconstructions.png"
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
        "model": args.model,
        "test_accuracy": accuracy,
        "test_samples": len(x_test),
        "validation_samples": args.validation_samples,
        **best,
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
    }
    report_run(output_dir, metrics, args, best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
