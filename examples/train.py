"""Trains any of the package's capsule models on CIFAR, an image folder or an .npz.

    python examples/train.py --model efficient_capsnet --cifar10 cifar-10-binary.tar.gz
    python examples/train.py --model capsnet --images my_photos --image-size 64
    python examples/train.py --model matrix_capsnet --data my_data.npz --grayscale

`--model` is any model registered in `keras_capsules.models` (every
`CapsuleClassifier` with a training recipe, named after its module), built
for the images' shape and number of classes; `--model-config` passes it
other constructor arguments, as JSON. The data comes from one source:

- `--cifar10 PATH` / `--cifar100 PATH`: the official binary version of
  CIFAR, the downloaded `.tar.gz` or the folder it unpacks to
  (`keras_capsules.datasets.load_cifar10` / `load_cifar100`);
- `--images DIR`: a folder with one sub-folder of images per class
  (`keras_capsules.datasets.load_image_folder`), `--test-split` of them set
  aside, always the same ones, as the test set;
- `--data FILE`: an `.npz` with `x_train`, `y_train`, `x_test`, `y_test`
  (uint8 images `(N, height, width)` or `(N, height, width, channels)`,
  integer labels from 0), as `keras.datasets` gives them.

`--image-size` brings the images to another size, stretched, cropped or
padded (`--resize`); `--grayscale` makes them one channel. Training follows
the model's recipe (`compile()` with no arguments: its optimizer, losses
and schedules) unless options override it. There is no augmentation.

The test set is evaluated after every epoch, or `--validation-samples`
training images held out are, keeping the best epoch's weights. At the end
the script prints one line `test accuracy: 0.XXXX` and writes into
`--output-dir`: the trained model (`MODEL.keras`), `metrics.json` (accuracy,
timings, the options) and `training_log.csv`, one row per epoch.

Long runs survive interruption: the weights and the optimizer are saved
after every epoch in `--output-dir`/backup, and running the same command
again continues after the last finished epoch (`--fresh` starts over). A NaN
loss stops the run and keeps the last good checkpoint. Data that cannot be
used stops the run with one `error:` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
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
    check_sample_counts,
    describe_machine,
    load_data,
    read_training_log,
    refuse_out_of_range,
    report_run,
    resumable_run_files,
    select_keras_backend,
    stopped_on_nan,
    training_callbacks,
    validation_split,
)

SOURCES = ("cifar10", "cifar100", "images", "data")
RESIZE = ("stretch", "crop", "pad")
# The recipe's fields behind the options that default to it.
RECIPE_OPTIONS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "lr_decay": "decay_per_epoch",
    "min_lr": "min_learning_rate",
}


def registered_models() -> dict[str, Any]:
    """Every model of `keras_capsules.models`, by the name of its module.

    A model is a public `CapsuleClassifier` with a `TrainingRecipe`, so a
    model added to the package later is found here too. Importing the
    package imports Keras: `KERAS_BACKEND` must be set before.
    """
    from keras_capsules import models

    found = {}
    for name in models.__all__:
        model = getattr(models, name)
        if (
            isinstance(model, type)
            and issubclass(model, models.CapsuleClassifier)
            and isinstance(getattr(model, "recipe", None), models.TrainingRecipe)
        ):
            found[model.__module__.rsplit(".", 1)[-1]] = model
    return dict(sorted(found.items()))


def _model_name(value: str) -> str:
    return value.replace("-", "_")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # The model names come from the package, which imports Keras: the
    # backend is set first.
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--backend", choices=BACKENDS)
    backend = early.parse_known_args(argv)[0].backend
    if backend and "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    models = registered_models()

    parser = argparse.ArgumentParser(
        prog="train.py",
        description=__doc__.split("\n")[0],
        epilog="Example: python examples/train.py --model efficient_capsnet "
        "--cifar10 cifar-10-binary.tar.gz --epochs 30",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend (default: KERAS_BACKEND, else Keras's default)",
    )
    parser.add_argument(
        "--model",
        type=_model_name,
        choices=tuple(models),
        required=True,
        help=f"the model and its training recipe: {', '.join(models)}",
    )
    parser.add_argument(
        "--model-config",
        metavar="JSON",
        help="other constructor arguments of the model, a JSON object or a "
        "JSON file, e.g. '{\"routing_iterations\": 2}'",
    )
    source = parser.add_argument_group("data (one of)").add_mutually_exclusive_group(
        required=True
    )
    source.add_argument(
        "--cifar10",
        type=Path,
        metavar="PATH",
        help="cifar-10-binary.tar.gz or its folder",
    )
    source.add_argument(
        "--cifar100",
        type=Path,
        metavar="PATH",
        help="cifar-100-binary.tar.gz or its folder",
    )
    source.add_argument(
        "--images", type=Path, metavar="DIR", help="a folder of class sub-folders"
    )
    source.add_argument(
        "--data",
        type=Path,
        metavar="FILE",
        help="an .npz with x_train, y_train, x_test, y_test",
    )
    parser.add_argument(
        "--cifar100-labels",
        choices=("fine", "coarse"),
        default="fine",
        help="CIFAR-100's 100 fine or 20 coarse classes (default: fine)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        metavar="PIXELS",
        help="HEIGHT [WIDTH] of the images the model sees (default: the "
        "data's own; 32 for --images)",
    )
    parser.add_argument(
        "--resize",
        choices=RESIZE,
        default="stretch",
        help="how images of another aspect ratio reach --image-size: "
        "stretched, centre-cropped or zero-padded (default: stretch)",
    )
    parser.add_argument(
        "--grayscale", action="store_true", help="train on one grey channel"
    )
    parser.add_argument(
        "--test-split",
        type=float,
        default=0.2,
        help="--images: the fraction set aside as the test set (default: 0.2)",
    )
    for option, type_, help_ in (
        ("--epochs", int, "training epochs (default: the recipe's)"),
        ("--batch-size", int, "images per training step (default: the recipe's)"),
        ("--lr", float, "Adam learning rate (default: the recipe's)"),
        ("--lr-decay", float, "learning rate factor per epoch (the recipe's)"),
        ("--min-lr", float, "floor of the decayed learning rate (the recipe's)"),
        ("--train-samples", int, "train on the first N training images"),
        ("--test-samples", int, "test on the first N test images"),
    ):
        parser.add_argument(option, type=type_, help=help_)
    parser.add_argument(
        "--validation-samples",
        type=int,
        default=0,
        help="hold out the last N training images to validate on after every "
        "epoch, keeping the best epoch's weights in OUTPUT_DIR/backup/"
        "best.weights.h5 (0: validate on the test set, keep only the last)",
    )
    parser.add_argument(
        "--output-dir", type=Path, help="where outputs go (default: runs/train_MODEL)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the weights and shuffling"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start over, discarding the checkpoint and log in --output-dir",
    )
    args = parser.parse_args(argv)
    args.source = next(name for name in SOURCES if getattr(args, name) is not None)
    recipe = models[args.model].recipe
    for name, field in RECIPE_OPTIONS.items():
        if getattr(args, name) is None:
            setattr(args, name, getattr(recipe, field))
    if args.output_dir is None:
        args.output_dir = Path("runs") / f"train_{args.model}"
    if args.image_size is not None:
        if len(args.image_size) > 2:
            parser.error("--image-size takes HEIGHT [WIDTH]: one or two numbers")
        if min(args.image_size) < 1:
            parser.error("--image-size must be positive")
        args.image_size = tuple(args.image_size) * (3 - len(args.image_size))
    if not 0 < args.test_split < 1:
        parser.error("--test-split must be a fraction between 0 and 1")
    refuse_out_of_range(
        parser,
        args,
        positive=(
            "epochs", "batch_size", "train_samples", "test_samples", "lr",
            "lr_decay",
        ),
        non_negative=("min_lr", "validation_samples"),
    )  # fmt: skip
    return args


def model_config(text: str | None) -> dict[str, Any]:
    """`--model-config`: a JSON object, given inline or as a file."""
    if not text:
        return {}
    path = Path(text)
    source = "--model-config"
    try:
        if not text.lstrip().startswith("{") and path.is_file():
            source, text = f"--model-config {path}", path.read_text()
        config = json.loads(text)
    except (OSError, ValueError) as error:
        raise DataError(f"{source}: not a JSON object ({error})") from None
    if not isinstance(config, dict):
        raise DataError(f"{source}: expected a JSON object, received {text!r}")
    for name in ("image_shape", "num_classes"):
        if name in config:
            raise DataError(
                f"{source}: {name} is read from the data; use --image-size and "
                "--grayscale to change the images"
            )
    return config


def load_source(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, int]:
    """The source's `x_train, y_train, x_test, y_test` and its class count.

    Images come back uint8 `(N, height, width, channels)`, labels int64
    `(N,)`; an image folder is already at `--image-size` and its channels.
    """
    from keras_capsules import datasets

    path = getattr(args, args.source)
    flag = f"--{args.source}"
    num_classes = None
    try:
        if args.source == "cifar10":
            (x_train, y_train), (x_test, y_test) = datasets.load_cifar10(path)
            num_classes = 10
        elif args.source == "cifar100":
            (x_train, y_train), (x_test, y_test) = datasets.load_cifar100(
                path, label_mode=args.cifar100_labels
            )
            num_classes = 100 if args.cifar100_labels == "fine" else 20
        elif args.source == "images":
            (x_train, y_train), (x_test, y_test), names = datasets.load_image_folder(
                path,
                image_size=args.image_size or (32, 32),
                color_mode="grayscale" if args.grayscale else "rgb",
                resize=args.resize,
                validation_split=args.test_split,
                seed=args.seed,
            )
            num_classes = len(names)
            if not len(x_test) or not len(x_train):
                raise DataError(
                    f"--images {path}: {len(x_train) + len(x_test)} images are "
                    f"too few to set --test-split {args.test_split} of them aside"
                )
        else:
            (x_train, y_train), (x_test, y_test) = load_data(path)
            flag = ""
    except DataError:
        raise
    except (ValueError, ImportError) as error:
        # The readers' messages name the file or folder.
        raise DataError(f"{flag}: {error}") from None
    x_train, x_test = (
        images[..., None] if images.ndim == 3 else images
        for images in (x_train, x_test)
    )
    y_train, y_test = (
        integer_labels(labels, split, path)
        for labels, split in ((y_train, "train"), (y_test, "test"))
    )
    if num_classes is None:
        num_classes = int(max(y_train.max(), y_test.max())) + 1
    if num_classes < 2:
        raise DataError(
            f"{flag} {path}: holds a single class; a classifier needs at least 2"
        )
    return x_train, y_train, x_test, y_test, num_classes


def integer_labels(labels: Any, split: str, path: Path) -> Any:
    """`labels` as int64 class indices `(N,)`, or a one-line error."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    whole = labels.ndim == 1 and (
        np.issubdtype(labels.dtype, np.integer)
        or (
            np.issubdtype(labels.dtype, np.floating)
            and np.all(labels == np.round(labels))
        )
    )
    if not whole or (labels.size and labels.min() < 0):
        raise DataError(
            f"{path}: y_{split} must hold integer class indices from 0, of shape "
            f"(N,); received dtype {labels.dtype}, shape {labels.shape} (one-hot "
            "labels become indices with np.argmax(y, axis=1))"
        )
    return labels.astype("int64")


def fit_images(images: Any, args: argparse.Namespace) -> Any:
    """Float images in [0, 1], at `--image-size` and, with `--grayscale`, grey."""
    import keras

    images = np.asarray(images, "float32") / 255.0
    if args.grayscale and images.shape[-1] in (3, 4):
        # ITU-R BT.601 luma, as `tf.image.rgb_to_grayscale` weighs the
        # channels; an alpha channel is dropped.
        images = images[..., :3] @ np.array([[0.299], [0.587], [0.114]], "float32")
    if args.image_size is not None and images.shape[1:3] != args.image_size:
        images = np.concatenate(
            [
                keras.ops.convert_to_numpy(
                    keras.ops.image.resize(
                        images[start : start + 1000],
                        args.image_size,
                        crop_to_aspect_ratio=args.resize == "crop",
                        pad_to_aspect_ratio=args.resize == "pad",
                        data_format="channels_last",
                    )
                )
                for start in range(0, len(images), 1000)
            ]
        )
    return np.clip(images, 0.0, 1.0)


def prepared_data(args: argparse.Namespace) -> tuple[Any, ...]:
    """The training, validation and test arrays, and the class count."""
    x_train, y_train, x_test, y_test, num_classes = load_source(args)
    check_sample_counts(args, len(x_train), len(x_test))
    x_train, y_train = x_train[: args.train_samples], y_train[: args.train_samples]
    x_test, y_test = x_test[: args.test_samples], y_test[: args.test_samples]
    if args.source != "images":
        x_train, x_test = fit_images(x_train, args), fit_images(x_test, args)
    else:
        x_train, x_test = (np.asarray(x, "float32") / 255.0 for x in (x_train, x_test))
    (x_train, y_train), (x_val, y_val) = validation_split(
        x_train, y_train, x_test, y_test, args.validation_samples
    )
    return x_train, y_train, x_val, y_val, x_test, y_test, num_classes


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not select_keras_backend(args.backend):
        return 2
    import keras

    backend = keras.backend.backend()
    keras.utils.set_random_seed(args.seed)
    try:
        config = model_config(args.model_config)
        data = prepared_data(args)
    except DataError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    x_train, y_train, x_val, y_val, x_test, y_test, num_classes = data
    print(
        f"backend: {backend}, model: {args.model}, train: {x_train.shape}, "
        f"validation: {x_val.shape if args.validation_samples else 'the test set'}, "
        f"test: {x_test.shape}, classes: {num_classes}"
    )

    model_class = registered_models()[args.model]
    try:
        model = model_class(
            image_shape=x_train.shape[1:], num_classes=num_classes, **config
        )
    except (ValueError, TypeError) as error:
        print(
            f"error: --model {args.model} for images of shape "
            f"{x_train.shape[1:]}: {one_line(error)}",
            file=sys.stderr,
        )
        return 2
    backup_dir, log_path = resumable_run_files(args.output_dir, args.fresh)
    # The model's recipe; the learning-rate schedule, with the options', is
    # `training_callbacks`' (it takes the place of the recipe's own).
    model.compile()
    history = model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        callbacks=training_callbacks(keras, args, None, backup_dir, log_path),
        # One line per epoch when the output is a log file, not a terminal.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    if stopped_on_nan(history, backup_dir):
        return 1

    def test_accuracy() -> tuple[float, float]:
        started = time.perf_counter()
        scores = model.predict(x_test, batch_size=args.batch_size, verbose=0)
        seconds = time.perf_counter() - started
        return float(np.mean(np.argmax(scores, -1) == y_test)), seconds

    best = {}
    best_weights = backup_dir / "best.weights.h5"
    if args.validation_samples and best_weights.exists():
        last_weights = [np.array(w) for w in model.get_weights()]
        model.load_weights(best_weights)
        validated = read_training_log(log_path).get(VALIDATION_ACCURACY, [])
        best = {
            "best_epoch": int(np.argmax(validated)) + 1,
            "best_validation_accuracy": float(np.max(validated)),
            "best_test_accuracy": test_accuracy()[0],
        }
        model.set_weights(last_weights)
    accuracy, test_seconds = test_accuracy()
    model.save(args.output_dir / f"{args.model}.keras")

    epoch_logs = read_training_log(log_path)
    # The first epoch of a process includes tracing / compilation; the later
    # ones show the steady speed.
    epoch_seconds = epoch_logs.get("epoch_seconds", [])
    steady = epoch_seconds[1:] or epoch_seconds or [float("nan")]
    seconds_per_epoch = float(np.median(steady))
    metrics = {
        "model": args.model,
        "source": args.source,
        "image_shape": list(x_train.shape[1:]),
        "num_classes": num_classes,
        "test_accuracy": accuracy,
        "test_samples": len(x_test),
        "validation_samples": args.validation_samples,
        **best,
        "train_samples": len(x_train),
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
    }
    report_run(args.output_dir, metrics, args, best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
