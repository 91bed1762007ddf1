"""MultiMNIST (Sabour et al. 2017, section 6): a CapsNet separates overlapping digits.

    python examples/multi_mnist.py --data mnist.npz --epochs 1 \
        --output-dir runs/multi_mnist

Each training image overlays two MNIST digits of different classes, each
shifted by up to 4 pixels in a 36x36 frame (`keras_capsules.datasets.
multi_mnist`); every epoch draws new pairs, one per training digit. The
network is the paper's CapsNet on 36x36 inputs (11.4M weights). Its margin
loss has both classes present, and the decoder reconstructs each digit from
its own class capsule (masked with each label in turn), the loss summing
both, as in the paper. An image counts as correctly classified when its two
longest class capsules are its two labels (`both_labels_in_top_two`).

The test pairs are built once from the test digits (one per digit, seeded).
At the end the script prints `test accuracy (both labels in the top 2):
0.XXXX` and writes into `--output-dir`: the trained CapsNet
(`capsnet_multi_mnist.keras`, loads with no custom objects), the paper's
figure 5 (`separations.png`: each input and its two reconstructions from the
two longest capsules, in red and green), `history.png`, `metrics.json` and
`training_log.csv`. Training resumes after the last finished epoch when the
command is run again (`--fresh` starts over), as in `capsnet_mnist.py`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_training import (  # noqa: E402
    describe_machine,
    load_checked_data,
    read_training_log,
    refuse_out_of_range,
    resumable_run_files,
    select_keras_backend,
    stopped_on_nan,
    training_callbacks,
    write_metrics,
)

# The frame grows by the shift on every side: 28 + 2 * 4 = 36.
MAX_SHIFT = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("tensorflow", "torch", "jax"))
    parser.add_argument("--data", type=Path, help="MNIST-like .npz (default: download)")
    parser.add_argument("--epochs", type=int, default=1, help="default: 1")
    parser.add_argument("--batch-size", type=int, default=100, help="default: 100")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam, default: 1e-3")
    parser.add_argument("--lr-decay", type=float, default=0.9, help="per epoch: 0.9")
    parser.add_argument(
        "--recon-weight",
        type=float,
        default=0.0005,
        help="weight of each digit's sum of squared pixel errors (default: 0.0005)",
    )
    parser.add_argument(
        "--train-samples",
        type=int,
        help="pair only the first N training digits (default: all)",
    )
    parser.add_argument(
        "--test-samples", type=int, help="pair only the first N test digits"
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("runs/multi_mnist"), help="outputs"
    )
    parser.add_argument("--seed", type=int, default=0, help="weights, pairs, order")
    parser.add_argument("--fresh", action="store_true", help="discard the checkpoint")
    args = parser.parse_args(argv)
    refuse_out_of_range(
        parser,
        args,
        positive=(
            "epochs", "batch_size", "train_samples", "test_samples", "lr", "lr_decay",
        ),
        non_negative=("recon_weight",),
    )  # fmt: skip
    return args


def one_hot(classes: Any, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype="float32")[np.asarray(classes)]


def pair_arrays(
    images: Any, labels: Any, num_classes: int, seed: int
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """`(images, first, second), (both, first_part, second_part)` of new pairs.

    `first` and `second` are the one-hot labels that mask the decoder's
    input, `both` the two-hot margin-loss target, `*_part` each shifted
    digit alone: the reconstruction targets.
    """
    from keras_capsules.datasets import multi_mnist

    x, classes, parts = multi_mnist(images, labels, max_shift=MAX_SHIFT, seed=seed)
    first, second = (
        one_hot(classes[:, 0], num_classes),
        one_hot(classes[:, 1], num_classes),
    )
    return (x, first, second), (first + second, parts[:, 0], parts[:, 1])


def both_labels_in_top_two(two_hot: Any, lengths: Any) -> Any:
    """1 where the two longest capsules are the two labels, else 0 (keras.ops)."""
    from keras import ops

    _, top_two = ops.top_k(lengths, 2)
    hits = ops.take_along_axis(ops.cast(two_hot, lengths.dtype), top_two, axis=-1)
    return ops.cast(ops.equal(ops.sum(hits, axis=-1), 2.0), "float32")


def build_models(
    image_shape: tuple[int, int, int], num_classes: int
) -> tuple[Any, Any]:
    """The paper's CapsNet and a wrapper that decodes each of two digits."""
    import keras

    from keras_capsules.models import CapsNet

    capsnet = CapsNet(image_shape=image_shape, num_classes=num_classes)

    class TwoDigitCapsNet(keras.Model):
        """`(images, first, second)` -> lengths and one reconstruction per label.

        It has no weights of its own: the CapsNet holds them all.
        """

        def __init__(self) -> None:
            super().__init__(name="two_digit_capsnet")
            self.capsnet = capsnet
            self.output_names = ["lengths", "first", "second"]
            # Nothing to build: the CapsNet builds itself when constructed.
            self.built = True

        def call(self, inputs: Any, training: bool | None = None) -> Any:
            images, first, second = inputs
            capsules = capsnet.encode(images, training=training)
            return (
                capsnet.length(capsules),
                capsnet.decode(capsules, first),
                capsnet.decode(capsules, second),
            )

    return capsnet, TwoDigitCapsNet()


def pair_batches(images: Any, labels: Any, num_classes: int, args: Any) -> Any:
    """A `PyDataset` of new pairs every epoch, seeded by (seed, epoch)."""
    import keras

    class PairBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0  # set by the training loop, also when resuming
            self._pairs: tuple[int, Any] | None = None

        def __len__(self) -> int:
            return -(-len(images) // args.batch_size)

        def __getitem__(self, index: int) -> Any:
            if self._pairs is None or self._pairs[0] != self.epoch:
                seed = args.seed * 100_003 + self.epoch + 1
                self._pairs = (
                    self.epoch,
                    pair_arrays(images, labels, num_classes, seed),
                )
            batch = slice(index * args.batch_size, (index + 1) * args.batch_size)
            inputs, targets = self._pairs[1]
            return (
                tuple(x[batch] for x in inputs),
                tuple(y[batch] for y in targets),
            )

    return PairBatches()


def plot_separations(
    images: Any, reconstructions: Any, labels: Any, predicted: Any, path: Path
) -> None:
    """Figure 5 of the paper: inputs above, the two reconstructions below.

    The reconstruction from the first of the two longest capsules is drawn
    in red, the second in green (yellow where they overlap); the titles
    give the labels (L) and the classes reconstructed (R).
    """
    from keras_capsules.visualization._matplotlib import new_figure, save

    count = len(images)
    figure = new_figure(1.3 * count, 3.0)
    for i in range(count):
        top = figure.add_subplot(2, count, i + 1)
        top.imshow(images[i, ..., 0], cmap="gray", vmin=0, vmax=1)
        top.set_title(f"L:({labels[i][0]},{labels[i][1]})", fontsize=9)
        bottom = figure.add_subplot(2, count, count + i + 1)
        red, green = (reconstructions[k][i, ..., 0] for k in (0, 1))
        bottom.imshow(np.clip(np.stack([red, green, np.zeros_like(red)], -1), 0, 1))
        bottom.set_title(f"R:({predicted[i][0]},{predicted[i][1]})", fontsize=9)
        for axes in (top, bottom):
            axes.set_xticks([])
            axes.set_yticks([])
    save(figure, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not select_keras_backend(args.backend):
        return 2
    import keras

    from keras_capsules.losses import MarginLoss, ReconstructionLoss
    from keras_capsules.visualization import plot_history

    keras.utils.set_random_seed(args.seed)
    data = load_checked_data(args)
    if data is None:
        return 2
    (x_train, y_train), (x_test, y_test) = data
    x_train, y_train = x_train[: args.train_samples], y_train[: args.train_samples]
    x_test, y_test = x_test[: args.test_samples], y_test[: args.test_samples]
    num_classes = int(max(np.max(y_train), np.max(y_test))) + 1
    if len(np.unique(y_train)) < 2 or len(np.unique(y_test)) < 2:
        print("error: pairs need digits of at least two classes", file=sys.stderr)
        return 2
    test_inputs, test_targets = pair_arrays(
        x_test, y_test, num_classes, seed=args.seed * 100_003
    )
    image_shape = test_inputs[0].shape[1:]
    print(
        f"backend: {keras.backend.backend()}, train pairs per epoch: {len(x_train)}, "
        f"test pairs: {len(x_test)}, image: {image_shape}"
    )

    output_dir = args.output_dir
    backup_dir, log_path = resumable_run_files(output_dir, args.fresh)

    capsnet, model = build_models(image_shape, num_classes)
    reconstruction = ReconstructionLoss(weight=args.recon_weight)
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=[MarginLoss(), reconstruction, reconstruction],
        metrics=[
            [keras.metrics.MeanMetricWrapper(both_labels_in_top_two, name="accuracy")],
            [],
            [],
        ],
    )
    batches = pair_batches(x_train, y_train, num_classes, args)
    history = model.fit(
        batches,
        epochs=args.epochs,
        validation_data=(test_inputs, test_targets),
        validation_batch_size=args.batch_size,
        callbacks=training_callbacks(keras, args, batches, backup_dir, log_path),
        verbose=1 if sys.stdout.isatty() else 2,
    )
    if stopped_on_nan(history, backup_dir):
        return 1

    started = time.perf_counter()
    lengths = model.predict(test_inputs, batch_size=args.batch_size, verbose=0)[0]
    test_seconds = time.perf_counter() - started
    two_hot = test_targets[0]
    # Recomputed in NumPy, independently of the Keras metric.
    top_two = np.argsort(-lengths, axis=-1)[:, :2]
    correct = np.take_along_axis(two_hot, top_two, axis=-1).sum(-1) == 2
    accuracy = float(np.mean(correct))

    # Figure 5 decodes the two longest capsules, whatever the labels are.
    shown = np.arange(min(8, len(lengths)))
    masks = [one_hot(top_two[shown, k], num_classes) for k in (0, 1)]
    capsules = capsnet.encode(test_inputs[0][shown])
    reconstructions = [
        keras.ops.convert_to_numpy(capsnet.decode(capsules, mask)) for mask in masks
    ]
    true_classes = np.stack(
        [np.argmax(test_inputs[1], -1), np.argmax(test_inputs[2], -1)], -1
    )
    plot_separations(
        test_inputs[0][shown],
        reconstructions,
        true_classes[shown],
        top_two[shown],
        output_dir / "separations.png",
    )
    capsnet.save(output_dir / "capsnet_multi_mnist.keras")
    epoch_logs = read_training_log(log_path)
    plot_history(
        {k: v for k, v in epoch_logs.items() if k not in ("epoch", "epoch_seconds")},
        output_dir / "history.png",
    )
    epoch_seconds = epoch_logs.get("epoch_seconds", [])
    seconds_per_epoch = float(np.median(epoch_seconds or [float("nan")]))
    metrics = {
        "experiment": "MultiMNIST (Sabour et al. 2017, section 6)",
        "test_accuracy_both_in_top_two": accuracy,
        "test_error": 1.0 - accuracy,
        "paper_test_error": 0.052,
        "train_pairs_per_epoch": len(x_train),
        "train_pairs_seen": len(x_train) * len(epoch_seconds),
        "paper_train_pairs": 60_000_000,
        "test_pairs": len(x_test),
        "epochs": len(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "train_images_per_second": len(x_train) / seconds_per_epoch,
        "test_images_per_second": len(x_test) / test_seconds,
        "parameters": capsnet.count_params(),
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "machine": describe_machine(),
        "history": epoch_logs,
    }
    write_metrics(output_dir / "metrics.json", metrics, args)
    print(f"outputs in {output_dir}")
    print(f"test accuracy (both labels in the top 2): {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
