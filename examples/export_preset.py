"""Makes a preset from a training run of `capsnet_mnist.py`: its best weights.

    python examples/export_preset.py --run-dir runs/efficient_capsnet_mnist \
        --data mnist.npz --output presets/efficient_capsnet_mnist

The run must have been made with `--validation-samples N`, so that its
best epoch was chosen on images held out of the training set; the preset
holds that epoch's weights. `--without-decoder` keeps only the classifier
(the decoder of Efficient-CapsNet holds 1.4 M of its 1.6 M weights). The
test set is evaluated once, on the exported model, and the accuracy goes
into the preset's `metadata.json` with the run's command, so that
`from_preset(...)` users know what the weights reach. Load the folder with
`EfficientCapsNet.from_preset("presets/efficient_capsnet_mnist")`, or
share it by copying it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_training import (  # noqa: E402
    describe_machine,
    load_checked_data,
    prepare,
    read_training_log,
    select_keras_backend,
)

MODELS = ("capsnet", "efficient-capsnet")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="the run's folder")
    parser.add_argument("--output", type=Path, required=True, help="the preset folder")
    parser.add_argument("--data", type=Path, help="MNIST-like .npz of the run")
    parser.add_argument(
        "--without-decoder", action="store_true", help="export the classifier only"
    )
    parser.add_argument("--description", default="", help="one line for list_presets()")
    parser.add_argument("--backend", choices=("tensorflow", "torch", "jax"))
    parser.add_argument("--test-samples", type=int, help="first N test images")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    metrics_path = args.run_dir / "metrics.json"
    best = args.run_dir / "backup" / "best.weights.h5"
    if not metrics_path.is_file() or not best.is_file():
        print(
            f"error: --run-dir {args.run_dir}: needs metrics.json and "
            "backup/best.weights.h5 (train with --validation-samples N)",
            file=sys.stderr,
        )
        return 2
    run = json.loads(metrics_path.read_text())
    if not select_keras_backend(args.backend):
        return 2
    import keras

    from keras_capsules.models import CapsNet, EfficientCapsNet

    model_cls = {"capsnet": CapsNet, "efficient-capsnet": EfficientCapsNet}[
        run["model"]
    ]
    data = load_checked_data(args_for_data(args))
    if data is None:
        return 2
    _, (x_test, y_test) = data
    num_classes = int(np.max(y_test)) + 1
    x_test, y_test = prepare(
        x_test[: args.test_samples], y_test[: args.test_samples], num_classes
    )

    trained = model_cls(image_shape=x_test.shape[1:], num_classes=num_classes)
    trained.load_weights(best)
    model = trained
    if args.without_decoder:
        model = model_cls(
            image_shape=x_test.shape[1:], num_classes=num_classes, use_decoder=False
        )
        copy_encoder_weights(trained, model)
    scores = model.predict(x_test, batch_size=100, verbose=0)
    accuracy = float(np.mean(np.argmax(scores, -1) == np.argmax(y_test, -1)))

    history = read_training_log(args.run_dir / "training_log.csv")
    validated = history.get("val_accuracy") or history.get("val_lengths_accuracy")
    metadata = {
        "description": args.description,
        "test_accuracy": accuracy,
        "test_samples": len(x_test),
        "best_epoch": int(np.argmax(validated)) + 1,
        "validation_accuracy": float(np.max(validated)),
        "validation_samples": run["args"]["validation_samples"],
        "epochs_trained": len(validated),
        "train_samples": run["train_samples"],
        "training_backend": run["backend"],
        "machine": run.get("machine", describe_machine()),
        "command": command_of(run["args"]),
        "with_decoder": not args.without_decoder,
    }
    model.save_to_preset(args.output, metadata=metadata)
    print(
        f"preset {args.output}: {type(model).__name__}, {model.count_params()} "
        f"weights, test accuracy {accuracy:.4f} on {len(x_test)} images "
        f"({keras.backend.backend()})"
    )
    return 0


def args_for_data(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(
        data=args.data, train_samples=None, test_samples=args.test_samples
    )


def copy_encoder_weights(source: Any, target: Any) -> None:
    """Copies every layer's weights but the decoder's, matched by layer name."""
    layers = {layer.name: layer for layer in source._flatten_layers(include_self=False)}
    for layer in target._flatten_layers(include_self=False):
        if layer.weights:
            layer.set_weights(layers[layer.name].get_weights())


def command_of(options: dict[str, Any]) -> str:
    """The training command of a run, from the options its metrics recorded."""
    words = ["python", "examples/capsnet_mnist.py"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False or name in ("fresh",):
            continue
        if name == "data":
            value = "path/to/mnist.npz"  # the user's copy, not the trainer's
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words)


if __name__ == "__main__":
    sys.exit(main())
