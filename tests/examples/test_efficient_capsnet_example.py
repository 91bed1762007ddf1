"""`examples/capsnet_mnist.py --model efficient-capsnet`: recipe, augmentation, a run."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import keras_capsules  # noqa: F401  (registers the classes saved models name)
from tests.examples._example_runs import (
    example_module,
    output_of,
    run_example,
    tiny_command,
)


def test_the_authors_recipe_is_the_default_and_options_override_it():
    example = example_module()
    args = example.parse_args(["--model", "efficient-capsnet"])
    assert (args.batch_size, args.lr, args.lr_decay) == (16, 5e-4, 0.97)
    assert str(args.output_dir).endswith("efficient_capsnet_mnist")
    args = example.parse_args(["--model", "efficient-capsnet", "--batch-size", "32"])
    assert args.batch_size == 32
    capsnet = example.parse_args([])
    assert (capsnet.batch_size, capsnet.lr, capsnet.lr_decay) == (100, 1e-3, 0.9)


def test_augmentation_is_seeded_by_epoch_and_keeps_digits_in_range():
    example = example_module()
    args = example.parse_args(["--model", "efficient-capsnet"])
    rng = np.random.default_rng(0)
    images = np.zeros((6, 28, 28, 1), "float32")
    images[:, 8:20, 12:16] = rng.uniform(0.5, 1.0, (6, 12, 4, 1))
    first = example.augmented_epoch(images, args, epoch=0)
    assert first.shape == images.shape and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    np.testing.assert_array_equal(first, example.augmented_epoch(images, args, 0))
    assert not np.allclose(first, example.augmented_epoch(images, args, 1))
    assert not np.allclose(first, images)
    # Rotated, squished, shifted and patched, a stroke keeps most of its ink.
    np.testing.assert_allclose(
        first.sum(axis=(1, 2, 3)) / images.sum(axis=(1, 2, 3)), 1.0, atol=0.45
    )


@pytest.mark.slow
def test_a_tiny_run_trains_and_saves_the_model(mnist_path, tmp_path):
    result = run_example(
        tiny_command(
            mnist_path, tmp_path, "--model", "efficient-capsnet", "--epochs", "1"
        )
    )
    assert result.returncode == 0, output_of(result)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"] == "efficient-capsnet"
    assert metrics["parameters"] == 161_824 + 1_411_344 + 576
    model = keras.saving.load_model(tmp_path / "efficient_capsnet.keras")
    assert type(model).__name__ == "EfficientCapsNet"
    assert (tmp_path / "reconstructions.png").stat().st_size > 0
