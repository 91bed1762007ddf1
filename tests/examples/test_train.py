"""`examples/train.py` end to end on tiny generated data, from each source.

Every registered model trains once, with the small configuration of its
model tests (`SMALL` in `tests/models/test_<module>.py`), so that a model
added to the package is trained here too. One run is a subprocess, as a
user runs it; the others call `main` in this process, which already has
Keras and the backend imported.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import re
import sys
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.datasets.image_files import (
    write_cifar10_folder,
    write_image_folder,
)
from tests.examples._example_runs import (
    BACKEND,
    REPO_ROOT,
    example_module,
    log_rows,
    output_of,
    run_example,
    write_npz,
)

TRAIN = REPO_ROOT / "examples" / "train.py"
ACCURACY_LINE = re.compile(r"^test accuracy: (0\.\d{4}|1\.0000)$")


def registered_models() -> dict:
    return example_module(TRAIN).registered_models()


def small_config(model: str) -> dict:
    """The model's small configuration from its tests, as train.py options."""
    tests = importlib.import_module(f"tests.models.test_{model}")
    small = getattr(tests, "SMALL", None)
    if small is None:
        pytest.fail(
            f"tests/models/test_{model}.py has no SMALL configuration for "
            "train.py's tests to train the model with"
        )
    return small


def tiny_model_config(model: str) -> dict:
    """`--model-config` of the small configuration, routing once where it can.

    One routing iteration keeps the traced training step short on
    TensorFlow and JAX; the iterations are tested with the models.
    """
    small = small_config(model)
    config = {k: v for k, v in small.items() if k not in ("image_shape", "num_classes")}
    model_class = registered_models()[model]
    if "routing_iterations" in inspect.signature(model_class).parameters:
        config["routing_iterations"] = 1
    return config


def tiny_options(model: str, output_dir: Path) -> list[str]:
    """A short run of `model` at its small configuration's image size."""
    config = tiny_model_config(model)
    height, width, channels = small_config(model)["image_shape"]
    return [
        "--model", model,
        "--model-config", json.dumps(config),
        "--image-size", str(height), str(width),
        *(["--grayscale"] if channels == 1 else []),
        "--epochs", "1",
        "--batch-size", "4",
        "--output-dir", str(output_dir),
    ]  # fmt: skip


def write_cifar10_archive(path: Path, folder: Path) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        archive.add(folder, arcname="cifar-10-batches-bin")
    return path


def write_cifar100_folder(folder: Path, count: int = 6) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.bin", "test.bin"):
        records = rng.integers(0, 256, (count, 3074), dtype="uint8")
        records[:, 1] = np.arange(count) * 7 % 100
        records[:, 0] = records[:, 1] // 5
        (folder / name).write_bytes(records.tobytes())
    return folder


def check_outputs(output_dir: Path, model: str, epochs: int = 1) -> dict:
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["model"] == model and metrics["backend"] == BACKEND
    assert metrics["epochs"] == epochs and len(log_rows(output_dir)) == epochs
    assert 0 <= metrics["test_accuracy"] <= 1
    assert (output_dir / f"{model}.keras").is_file()
    return metrics


@pytest.mark.slow
@pytest.mark.backend_independent("the script's data sources, options and checkpoints")
def test_cifar10_archive_as_a_user_runs_it(tmp_path):
    archive = write_cifar10_archive(
        tmp_path / "cifar-10-binary.tar.gz", write_cifar10_folder(tmp_path / "c10")
    )
    output_dir = tmp_path / "out"
    command = [
        sys.executable, str(TRAIN), "--backend", BACKEND,
        "--cifar10", str(archive),
        *tiny_options("efficient_capsnet", output_dir),
    ]  # fmt: skip
    result = run_example(command)
    assert result.returncode == 0, output_of(result)
    lines = [line for line in result.stdout.splitlines() if "test accuracy" in line]
    assert len(lines) == 1 and ACCURACY_LINE.match(lines[0]), result.stdout
    metrics = check_outputs(output_dir, "efficient_capsnet")
    # 20 training images of CIFAR-10, at the small configuration's 16x16 grey.
    assert metrics["source"] == "cifar10" and metrics["num_classes"] == 10
    assert metrics["image_shape"] == [16, 16, 1] and metrics["train_samples"] == 20
    model = keras.saving.load_model(output_dir / "efficient_capsnet.keras")
    assert model.image_shape == (16, 16, 1) and model.num_classes == 10

    # The same command with more epochs continues from the checkpoint.
    assert example_module(TRAIN).main([*command[2:], "--epochs", "2"]) == 0
    check_outputs(output_dir, "efficient_capsnet", epochs=2)


@pytest.mark.slow
@pytest.mark.backend_independent("the script's data sources, options and checkpoints")
def test_image_folder_with_a_test_split_and_validation(tmp_path):
    write_image_folder(tmp_path / "photos", classes=("a", "b", "c"), per_class=5)
    output_dir = tmp_path / "out"
    argv = [
        "--images", str(tmp_path / "photos"),
        *tiny_options("efficient_capsnet", output_dir),
        "--test-split", "0.2",
        "--validation-samples", "4",
    ]  # fmt: skip
    assert example_module(TRAIN).main(argv) == 0
    metrics = check_outputs(output_dir, "efficient_capsnet")
    assert metrics["source"] == "images" and metrics["num_classes"] == 3
    assert metrics["test_samples"] == 3 and metrics["train_samples"] == 8
    assert metrics["best_epoch"] == 1 and "best_test_accuracy" in metrics


@pytest.mark.parametrize("labels, classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_data_as_the_model_gets_it(tmp_path, labels, classes):
    # The CIFAR path trains end to end above; CIFAR-100 differs in its reader.
    folder = write_cifar100_folder(tmp_path / "c100")
    module = example_module(TRAIN)
    args = module.parse_args(
        ["--model", "capsnet", "--cifar100", str(folder), "--cifar100-labels", labels]
    )
    x_train, y_train, x_val, y_val, x_test, y_test, num_classes = module.prepared_data(
        args
    )
    assert num_classes == classes
    assert x_train.shape == (6, 32, 32, 3) and x_train.dtype == np.float32
    assert 0 <= x_train.min() and x_train.max() <= 1
    expected = np.arange(6) * 7 % 100
    np.testing.assert_array_equal(
        y_train, expected if labels == "fine" else expected // 5
    )
    assert y_train.dtype == np.int64 and x_val is x_test


def test_grayscale_and_resizing_of_arrays(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 8, 12, 3), dtype="uint8")
    module = example_module(TRAIN)
    argv = ["--model", "capsnet", "--data", "d.npz", "--grayscale"]
    grey = module.fit_images(images, module.parse_args(argv))
    luma = images @ np.array([0.299, 0.587, 0.114]) / 255
    np.testing.assert_allclose(grey[..., 0], luma, atol=1e-6)
    for resize, shape in (("stretch", (4, 6, 6, 1)), ("crop", (4, 6, 6, 1))):
        args = module.parse_args([*argv, "--image-size", "6", "--resize", resize])
        assert module.fit_images(images, args).shape == shape
    # Cropping a 8x12 image to a square keeps its centre 8x8 columns 2..9.
    args = module.parse_args([*argv, "--image-size", "8", "--resize", "crop"])
    np.testing.assert_allclose(
        module.fit_images(images, args)[..., 0], luma[:, :, 2:10], atol=1e-5
    )


# Trained from the other sources above.
TRAINED_ABOVE = {"efficient_capsnet"}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(set(registered_models()) - TRAINED_ABOVE))
@pytest.mark.backend_independent(
    "the script's model choice; every model's fit on every backend is the "
    "classifier harness's (tests/models)"
)
def test_every_registered_model_trains_from_an_npz(tmp_path, model):
    # RGB images of another size, made grey and resized to the model's.
    rng = np.random.default_rng(0)
    data = write_npz(
        tmp_path / "data.npz",
        x_train=rng.integers(0, 256, (8, 24, 20, 3), dtype="uint8"),
        y_train=np.arange(8) % 3,
        x_test=rng.integers(0, 256, (4, 24, 20, 3), dtype="uint8"),
        y_test=np.arange(4) % 3,
    )
    output_dir = tmp_path / "out"
    argv = ["--data", str(data), *tiny_options(model, output_dir)]
    assert example_module(TRAIN).main(argv) == 0
    metrics = check_outputs(output_dir, model)
    assert metrics["image_shape"] == list(small_config(model)["image_shape"])
    assert metrics["num_classes"] == 3


def _bad_cifar(tmp_path):
    folder = write_cifar10_folder(tmp_path / "c10")
    (folder / "data_batch_2.bin").write_bytes(b"\0" * 3000)
    return ["--cifar10", str(folder)]


def _python_cifar(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    return ["--cifar10", str(archive)]


def _empty_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    return ["--images", str(tmp_path / "photos")]


def _one_class(tmp_path):
    write_image_folder(tmp_path / "photos", classes=("only",), per_class=5)
    return ["--images", str(tmp_path / "photos")]


def _fractional_labels_npz(tmp_path):
    path = write_npz(tmp_path / "d.npz", y_train=np.full(20, 0.5))
    return ["--data", str(path)]


def _missing_npz(tmp_path):
    return ["--data", str(tmp_path / "none.npz")]


def _npz(tmp_path):
    return ["--data", str(write_npz(tmp_path / "d.npz"))]


@pytest.mark.parametrize(
    "source, options, message",
    [
        (_bad_cifar, [], "data_batch_2.bin: 3000 bytes is not a whole"),
        (_python_cifar, [], "Python version (pickles), which is not read"),
        (_empty_folder, [], "holds no class sub-folders"),
        (_one_class, [], "holds a single class"),
        (_fractional_labels_npz, [], "y_train must hold integer class indices"),
        (_missing_npz, [], "none.npz: no such file"),
        (_npz, ["--model-config", "{oops"], "--model-config: not a JSON object"),
        (_npz, ["--model-config", '{"num_classes": 3}'], "num_classes is read"),
        (_npz, ["--model-config", '{"nonsense": 1}'], "--model capsnet for images"),
        (_npz, ["--image-size", "4"], "--model capsnet for images of shape (4, 4, 1)"),
        (_npz, ["--train-samples", "21"], "--train-samples 21 is more than the 20"),
        (_npz, ["--validation-samples", "20"], "leaves no training images"),
    ],
)  # fmt: skip
def test_bad_input_is_one_error_line_and_exit_code_2(
    tmp_path, capsys, source, options, message
):
    output_dir = tmp_path / "out"
    argv = [
        *source(tmp_path),
        "--model", "capsnet",
        "--output-dir", str(output_dir),
        *options,
    ]  # fmt: skip
    assert example_module(TRAIN).main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not output_dir.exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--model", "capsnet"], "one of the arguments --cifar10"),
        (["--model", "nonsense", "--data", "d.npz"], "invalid choice: 'nonsense'"),
        (["--model", "capsnet", "--data", "d", "--images", "i"], "not allowed with"),
        (["--model", "capsnet", "--data", "d", "--image-size", "1", "2", "3"],
         "HEIGHT [WIDTH]"),
        (["--model", "capsnet", "--data", "d", "--epochs", "0"], "must be positive"),
        (["--model", "capsnet", "--images", "d", "--test-split", "1"], "fraction"),
    ],
)  # fmt: skip
def test_usage_errors(options, message, capsys):
    with pytest.raises(SystemExit) as error:
        example_module(TRAIN).main(options)
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: train.py") and message in err, err


def test_model_names_accept_hyphens_and_list_every_model():
    module = example_module(TRAIN)
    models = module.registered_models()
    assert {"capsnet", "efficient_capsnet", "matrix_capsnet"} <= set(models)
    from keras_capsules import models as package_models

    assert models["matrix_capsnet"] is package_models.MatrixCapsNet
    args = module.parse_args(["--model", "efficient-capsnet", "--data", "d.npz"])
    assert args.model == "efficient_capsnet"
    # Options left out take the recipe's.
    assert args.batch_size == package_models.EfficientCapsNet.recipe.batch_size
