"""`load_image_folder` on a few tiny PNGs written here."""

from __future__ import annotations

import numpy as np
import pytest

from keras_capsules.datasets import load_image_folder
from tests.datasets.image_files import write_image_folder, write_png


def _by_red(images, labels):
    """The labels implied by each image's red channel (class index x 100)."""
    return np.round(images[..., 0].mean(axis=(1, 2)) / 100).astype("int64"), labels


def test_reads_classes_from_sub_folders_at_their_size(tmp_path):
    written = write_image_folder(tmp_path, classes=("cat", "dog", "emu"), per_class=3)
    (x, y), (x_val, y_val), class_names = load_image_folder(
        tmp_path, image_size=(12, 10)
    )
    assert class_names == ("cat", "dog", "emu")
    assert x.shape == (9, 12, 10, 3) and x.dtype == np.uint8
    assert y.dtype == np.int64 and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert x_val.shape == (0, 12, 10, 3) and y_val.shape == (0,)
    # At their own size the pixels come back exactly, each with its class.
    implied, labels = _by_red(x, y)
    np.testing.assert_array_equal(implied, labels)
    every = {img.tobytes() for imgs in written.values() for img in imgs}
    assert {image.tobytes() for image in x} == every


def test_grayscale_square_size_and_validation_split(tmp_path, capsys):
    write_image_folder(tmp_path, per_class=5)
    (x, y), (x_val, y_val), _ = load_image_folder(
        tmp_path, image_size=8, color_mode="grayscale", validation_split=0.2, seed=3
    )
    # Quiet: no "Using 8 files for training." from Keras.
    assert capsys.readouterr().out == ""
    assert x.shape == (8, 8, 8, 1) and x_val.shape == (2, 8, 8, 1)
    assert len(y) == 8 and len(y_val) == 2
    # The same seed gives the same split.
    (again, _), (again_val, _), _ = load_image_folder(
        tmp_path, image_size=8, color_mode="grayscale", validation_split=0.2, seed=3
    )
    np.testing.assert_array_equal(np.sort(x_val, axis=0), np.sort(again_val, axis=0))


@pytest.mark.parametrize("resize", ["stretch", "crop", "pad"])
def test_resize_modes(tmp_path, resize):
    # One white 4x8 image (wide) into a square: padding leaves black bands
    # above and below, cropping and stretching do not.
    write_png(tmp_path / "a" / "0.png", np.full((4, 8, 3), 255, "uint8"))
    write_png(tmp_path / "b" / "0.png", np.full((4, 8, 3), 255, "uint8"))
    (x, _), _, _ = load_image_folder(tmp_path, image_size=(8, 8), resize=resize)
    assert x.shape == (2, 8, 8, 3)
    if resize == "pad":
        assert x[:, 0].max() == 0 and x[:, 4].min() == 255
    else:
        assert x.min() == 255


def test_crop_keeps_the_centre(tmp_path):
    # A 4x12 image: black, white, black thirds; cropped to 4x4, white only.
    pixels = np.zeros((4, 12), "uint8")
    pixels[:, 4:8] = 255
    write_png(tmp_path / "a" / "0.png", pixels)
    write_png(tmp_path / "b" / "0.png", pixels)
    (x, _), _, _ = load_image_folder(
        tmp_path, image_size=4, color_mode="grayscale", resize="crop"
    )
    assert x.min() == 255


def test_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path} holds no class sub-folders"):
        load_image_folder(tmp_path)


def test_images_without_class_sub_folders_are_refused(tmp_path):
    write_png(tmp_path / "0.png", np.zeros((4, 4), "uint8"))
    with pytest.raises(ValueError, match="holds images but no class sub-folders"):
        load_image_folder(tmp_path)


def test_sub_folders_without_images_are_refused(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "notes.txt").write_text("no image")
    with pytest.raises(ValueError, match="cat, dog hold no images"):
        load_image_folder(tmp_path)


def test_a_split_that_leaves_one_side_empty_is_refused(tmp_path):
    write_image_folder(tmp_path, per_class=1)
    with pytest.raises(ValueError, match="validation_split of 0.2 of its 2 images"):
        load_image_folder(tmp_path, validation_split=0.2)


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="nowhere is not a folder"):
        load_image_folder(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "arguments, name",
    [
        (dict(image_size=0), "image_size"),
        (dict(color_mode="cmyk"), "color_mode"),
        (dict(resize="squash"), "resize"),
        (dict(validation_split=1.0), "validation_split"),
    ],
)
def test_bad_arguments_name_themselves(tmp_path, arguments, name):
    write_image_folder(tmp_path, per_class=1)
    with pytest.raises(ValueError, match=f"`{name}`"):
        load_image_folder(tmp_path, **arguments)
