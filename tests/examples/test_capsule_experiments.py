"""`examples/multi_mnist.py` and `examples/affine_robustness.py`: parts and tiny runs."""

from __future__ import annotations

import json
import sys

import keras
import numpy as np
import pytest

import keras_capsules  # noqa: F401  (registers the classes saved models name)
from tests.examples._example_runs import (
    BACKEND,
    REPO_ROOT,
    error_lines,
    example_module,
    output_of,
    run_example,
    write_npz,
)

MULTI_MNIST = REPO_ROOT / "examples" / "multi_mnist.py"
AFFINE = REPO_ROOT / "examples" / "affine_robustness.py"


def digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` blob digits, 28x28 uint8, labels cycling through 0-9."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), "uint8")
    for i in range(count):
        top, left = rng.integers(4, 12, 2)
        images[i, top : top + 12, left : left + 8] = rng.integers(100, 256, (12, 8))
    return images, np.arange(count) % 10


def test_both_labels_in_top_two_matches_numpy():
    example = example_module(MULTI_MNIST)
    rng = np.random.default_rng(1)
    lengths = rng.uniform(0, 1, (64, 10)).astype("float32")
    pairs = np.array([rng.choice(10, 2, replace=False) for _ in range(64)])
    two_hot = np.zeros((64, 10), "float32")
    np.put_along_axis(two_hot, pairs, 1.0, axis=-1)
    # Make about half of the examples correct.
    lengths[::2] = np.where(two_hot[::2] > 0, 1.5, lengths[::2])
    expected = [
        set(np.argsort(-row)[:2]) == set(pair)
        for row, pair in zip(lengths, pairs, strict=True)
    ]
    got = keras.ops.convert_to_numpy(
        example.both_labels_in_top_two(
            keras.ops.convert_to_tensor(two_hot), keras.ops.convert_to_tensor(lengths)
        )
    )
    np.testing.assert_array_equal(got, np.asarray(expected, "float32"))
    assert 0 < got.mean() < 1


def test_pairs_give_two_hot_targets_and_each_digit_alone():
    example = example_module(MULTI_MNIST)
    images, labels = digits(30)
    (x, first, second), (both, first_part, second_part) = example.pair_arrays(
        images, labels, 10, seed=3
    )
    assert x.shape == (30, 36, 36, 1)
    np.testing.assert_array_equal(both, first + second)
    assert np.all(both.sum(-1) == 2) and np.all(both.max(-1) == 1)
    np.testing.assert_allclose(x, np.clip(first_part + second_part, 0, 1))
    # The first digit of pair i is source digit i, whose class `first` holds.
    np.testing.assert_array_equal(np.argmax(first, -1), labels)


def test_the_two_digit_model_decodes_each_label_from_its_own_capsule():
    example = example_module(MULTI_MNIST)
    capsnet, model = example.build_models((36, 36, 1), 10)
    images = np.random.default_rng(2).uniform(0, 1, (2, 36, 36, 1)).astype("float32")
    eye = np.eye(10, dtype="float32")
    first, second = eye[[3, 5]], eye[[7, 1]]
    lengths, first_image, second_image = (
        keras.ops.convert_to_numpy(y) for y in model((images, first, second))
    )
    capsules = capsnet.encode(images)
    np.testing.assert_allclose(
        lengths, keras.ops.convert_to_numpy(capsnet.length(capsules)), atol=1e-5
    )
    for mask, image in ((first, first_image), (second, second_image)):
        alone = keras.ops.convert_to_numpy(capsnet.decode(capsules, mask))
        np.testing.assert_allclose(image, alone, atol=1e-5)
    # A fresh decoder is near 0.5 everywhere, yet each mask has its own image.
    assert np.max(np.abs(first_image - second_image)) > 0
    # No weights besides the CapsNet's.
    assert model.count_params() == capsnet.count_params()


def test_expanded_batches_cover_each_pass_and_continue_across_rounds():
    example = example_module(AFFINE)
    images, labels = digits(40)
    args = example.parse_args(["--batch-size", "8", "--seed", "5"])
    rounds = example.expanded_batches(images, labels, 10, args, 20, with_decoder=False)
    assert len(rounds) == 3  # 8 + 8 + 4 images
    seen = []
    for epoch in range(2):  # two rounds of 20 make one pass over 40 digits
        rounds.epoch = epoch
        for index in range(len(rounds)):
            x, y = rounds[index]
            assert x.shape[1:] == (40, 40, 1) and len(x) == len(y)
            seen.append(np.argmax(y, -1))
            # The digit's ink is all there, moved into the 40x40 frame.
            assert np.all(np.abs(x.sum((1, 2, 3)) > 0))
    counts = np.bincount(np.concatenate(seen), minlength=10)
    np.testing.assert_array_equal(counts, np.full(10, 4))
    again = example.expanded_batches(images, labels, 10, args, 20, with_decoder=True)
    again.epoch = 1
    (x, y), (y_target, x_target) = again[0]
    rounds.epoch = 1
    np.testing.assert_array_equal(x, rounds[0][0])
    np.testing.assert_array_equal(x, x_target)


def test_a_batch_across_the_end_of_a_pass_skips_no_digit():
    example = example_module(AFFINE)
    images, labels = digits(40)
    args = example.parse_args(["--batch-size", "6", "--seed", "5"])
    # Rounds of 24 digits in batches of 6: the second round's third batch
    # (digits 36-41) crosses into the second pass, and so on.
    rounds = example.expanded_batches(images, labels, 10, args, 24, with_decoder=False)
    seen = []
    for epoch in range(5):  # 5 x 24 = 3 passes over the 40 digits
        rounds.epoch = epoch
        for index in range(len(rounds)):
            x, y = rounds[index]
            assert len(x) == len(y) == 6
            seen.append(np.argmax(y, -1))
    counts = np.bincount(np.concatenate(seen), minlength=10)
    np.testing.assert_array_equal(counts, np.full(10, 12))


@pytest.mark.parametrize("script", [MULTI_MNIST, AFFINE], ids=["multi", "affine"])
@pytest.mark.backend_independent("the script's data checks")
def test_a_bad_data_file_is_one_line(script, tmp_path):
    bad = write_npz(tmp_path / "bad.npz", y_test=None)
    result = run_example(
        [sys.executable, str(script), "--backend", BACKEND, "--data", str(bad),
         "--output-dir", str(tmp_path / "out")]
    )  # fmt: skip
    assert result.returncode == 2, output_of(result)
    assert len(error_lines(result.stderr)) == 1, output_of(result)
    assert "missing key(s) y_test" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_tiny_multi_mnist_run(mnist_path, tmp_path):
    out = tmp_path / "multi"
    result = run_example(
        [sys.executable, str(MULTI_MNIST), "--backend", BACKEND,
         "--data", str(mnist_path), "--train-samples", "20", "--test-samples", "10",
         "--batch-size", "10", "--output-dir", str(out)],
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, output_of(result)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["test_pairs"] == 10
    printed = result.stdout.strip().splitlines()[-1]
    assert printed.endswith(f"{metrics['test_accuracy_both_in_top_two']:.4f}")
    assert (out / "separations.png").stat().st_size > 0
    capsnet = keras.saving.load_model(out / "capsnet_multi_mnist.keras")
    assert capsnet.image_shape == (36, 36, 1)


@pytest.mark.slow
def test_a_tiny_affine_run_stops_the_cnn_at_the_capsnet_accuracy(mnist_path, tmp_path):
    out = tmp_path / "affine"
    result = run_example(
        [sys.executable, str(AFFINE), "--backend", BACKEND, "--data", str(mnist_path),
         "--train-samples", "20", "--test-samples", "10", "--batch-size", "10",
         "--cnn-round-images", "10", "--cnn-max-rounds", "3", "--output-dir", str(out)],
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, output_of(result)
    metrics = json.loads((out / "metrics.json").read_text())
    accuracy = metrics["test_accuracy"]
    assert set(accuracy) == {"capsnet", "cnn"}
    for splits in accuracy.values():
        assert set(splits) == {"expanded", "affnist"}
        assert all(0.0 <= value <= 1.0 for value in splits.values())
    target = accuracy["capsnet"]["expanded"]
    cnn_rounds = metrics["history"]["cnn"]["val_accuracy"]
    # The CNN stops at the first round that reaches the target, else at the last.
    reached = [i for i, value in enumerate(cnn_rounds) if value >= target]
    assert len(cnn_rounds) == (reached[0] + 1 if reached else 3)
    assert (out / "affine_examples.png").stat().st_size > 0
    loaded = keras.saving.load_model(out / "cnn_expanded_mnist.keras")
    assert loaded.input_shape == (None, 40, 40, 1)


@pytest.mark.parametrize("script", [MULTI_MNIST, AFFINE], ids=["multi", "affine"])
@pytest.mark.parametrize(
    "option, value",
    [("--lr", "0"), ("--lr-decay", "-1"), ("--recon-weight", "-0.1"), ("--lr", "nan")],
)
def test_numbers_out_of_range_are_refused(script, option, value, capsys):
    example = example_module(script)
    with pytest.raises(SystemExit) as stopped:
        example.parse_args([option, value])
    assert stopped.value.code == 2
    assert f"{option} must be" in capsys.readouterr().err
