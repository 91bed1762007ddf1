"""`examples/capsnet_mnist.py --model efficient-capsnet`: recipe, augmentation, a run."""

from __future__ import annotations

import importlib
import json
from typing import Any

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
    # The authors' floor (their utils/tools.py); CapsNet's recipe has none.
    assert (args.min_lr, capsnet.min_lr) == (5e-5, 0.0)


def test_the_learning_rate_decays_per_epoch_down_to_its_floor(tmp_path):
    example = example_module()
    args = example.parse_args(["--model", "efficient-capsnet"])
    callbacks = example.training_callbacks(
        keras, args, None, tmp_path / "backup", tmp_path / "log.csv"
    )
    (scheduler,) = (
        c for c in callbacks if isinstance(c, keras.callbacks.LearningRateScheduler)
    )
    rates = [scheduler.schedule(epoch) for epoch in (0, 1, 75, 76, 149)]
    assert rates[:3] == pytest.approx([5e-4, 5e-4 * 0.97, 5e-4 * 0.97**75])
    assert rates[2] > 5e-5  # epoch 76 is the first one at the floor
    assert rates[3:] == [5e-5, 5e-5]


@pytest.mark.parametrize(
    "option, value", [("--lr", "0"), ("--lr-decay", "-0.9"), ("--min-lr", "-1e-5")]
)
def test_learning_rate_options_of_the_wrong_sign_are_refused(option, value, capsys):
    example = example_module()
    with pytest.raises(SystemExit):
        example.parse_args(["--model", "efficient-capsnet", option, value])
    assert option in capsys.readouterr().err


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


def augmentation_module() -> Any:
    example_module()  # puts examples/ on the import path
    return importlib.import_module("efficient_capsnet_augmentation")


def test_half_the_images_are_rotated_mostly_by_a_few_degrees():
    augmentation = augmentation_module()
    maps = augmentation._rotations(np.random.default_rng(0), 20_000, 28, 28)
    cos, sin = maps[:, 0], maps[:, 1]
    degrees = np.rad2deg(np.arctan2(sin, cos))
    np.testing.assert_allclose(degrees, np.round(degrees), atol=1e-9)
    # Unrotated: the other half, plus the draws truncated to 0 degrees.
    unrotated = np.mean(degrees == 0)
    assert 0.50 < unrotated < 0.58, unrotated
    rotated = degrees[degrees != 0]
    assert np.abs(rotated).max() <= 29 + 1e-9
    assert 8 < np.std(rotated) < 12
    # The centre of the image stays where it is.
    centre = np.array([14.0, 14.0, 1.0])
    np.testing.assert_allclose(maps[:, 0:3] @ centre, 14.0, atol=1e-9)
    np.testing.assert_allclose(maps[:, 3:6] @ centre, 14.0, atol=1e-9)


def test_shift_and_squish_keep_the_digit_inside_the_image():
    augmentation = augmentation_module()
    images = np.zeros((400, 28, 28, 1), "float32")
    images[:, 3:25, 10:18] = 1.0  # margins: 3 above and below, 10 left and right
    moved = augmentation._transform(
        images,
        augmentation._shifts_and_squishes(np.random.default_rng(1), images),
    )
    ink = moved[..., 0] > 0.5
    rows, columns = ink.any(2), ink.any(1)
    # The authors' shift is whole pixels, at most the margin on that side:
    # the bar keeps its 22 rows, and moves both up and down in the batch.
    np.testing.assert_array_equal(rows.sum(1), 22)
    assert rows[:, :3].any() and rows[:, -3:].any()
    # Narrowed by 1 to 7 of the 28 columns: the bar loses at most a quarter.
    widths = columns.sum(1)
    assert widths.max() <= 8 and widths.min() >= 5
    kept = moved.sum((1, 2, 3)) / images.sum((1, 2, 3))
    assert kept.min() > 0.7 and kept.max() < 1.01


def test_one_4x4_patch_is_erased_away_from_the_border():
    augmentation = augmentation_module()
    images = np.ones((500, 28, 28, 1), "float32")
    erased = augmentation._erase_patches(np.random.default_rng(2), images)
    np.testing.assert_array_equal((erased == 0).sum((1, 2, 3)), 16)
    zero_rows = (erased[..., 0] == 0).any(2)
    zero_columns = (erased[..., 0] == 0).any(1)
    for zeros in (zero_rows, zero_columns):
        first = zeros.argmax(1)
        assert first.min() == 4 and first.max() == 22
    assert (images == 1).all()  # the input is left untouched


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


@pytest.mark.parametrize("shape", [(28, 28), (4, 28, 28), (4, 28, 28, 3)])
def test_augmentation_names_a_batch_of_the_wrong_shape(shape):
    augmentation = augmentation_module()
    with pytest.raises(ValueError, match=r"images\.shape=\(" + str(shape[0])):
        augmentation.augment(np.zeros(shape, "float32"), np.random.default_rng(0))
