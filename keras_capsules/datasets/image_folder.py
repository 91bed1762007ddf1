"""A user's own images, one sub-folder per class, read into NumPy arrays."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from keras_capsules._validation import check_choice, normalize_pair

# What `keras.utils.image_dataset_from_directory` reads.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}
_RESIZE = ("stretch", "crop", "pad")


def load_image_folder(
    directory: str | Path,
    image_size: int | tuple[int, int] = (32, 32),
    color_mode: str = "rgb",
    resize: str = "stretch",
    validation_split: float = 0.0,
    seed: int = 0,
) -> tuple[tuple[Any, Any], tuple[Any, Any], tuple[str, ...]]:
    """Loads a folder of images, one sub-folder per class, as NumPy arrays.

    The layout is `keras.utils.image_dataset_from_directory`'s, which reads
    the files: `directory/cat/001.jpg`, `directory/dog/xyz.png`, ... The
    class of an image is its sub-folder; the labels index the sub-folders'
    names in sorted order (`class_names`). Files in `directory` itself are
    not read. Images of any size are brought to `image_size`, stretched,
    cropped or padded as `resize` says, and to the channels of
    `color_mode`. Reading the files needs TensorFlow installed, whichever
    Keras backend runs.

    Args:
        directory: The folder of class sub-folders.
        image_size: `(height, width)` of the returned images, or one int
            for square ones. Defaults to `(32, 32)`.
        color_mode: `"rgb"` (3 channels), `"grayscale"` (1) or `"rgba"`
            (4). Defaults to `"rgb"`.
        resize: How an image of another aspect ratio reaches `image_size`:
            `"stretch"` resizes it whole, distorting it; `"crop"` cuts the
            largest centred window of the target's aspect ratio, then
            resizes; `"pad"` resizes it whole into that window, padding
            the rest with zeros. Defaults to `"stretch"`.
        validation_split: The fraction of the images, in `[0, 1)`, set
            aside as the second split, drawn at random with `seed`; the
            same arguments give the same split. Defaults to `0.0`, none.
        seed: Seed of the shuffle and of the split. Defaults to `0`.

    Returns:
        `(x_train, y_train), (x_val, y_val), class_names`: images uint8
        `(N, height, width, channels)`, labels int64 `(N,)`, shuffled; the
        validation arrays hold no images when `validation_split` is 0.

    Raises:
        ValueError: `directory` is not a folder, holds no class sub-folder,
            or its sub-folders hold no images; the message names it.
    """
    height, width = normalize_pair("image_size", image_size)
    check_choice("color_mode", color_mode, tuple(_CHANNELS))
    check_choice("resize", resize, _RESIZE)
    if not isinstance(validation_split, (int, float)) or not (
        0 <= validation_split < 1
    ):
        raise ValueError(
            "Received an invalid value for `validation_split`, expected a "
            f"fraction in [0, 1). Received: validation_split={validation_split!r}"
        )
    directory = Path(directory)
    class_names, count = _class_names(directory)
    if validation_split and int(validation_split * count) in (0, count):
        raise ValueError(
            f"{directory}: a validation_split of {validation_split} of its "
            f"{count} images leaves one split empty; use more images or "
            "another validation_split."
        )
    options = dict(
        labels="inferred",
        label_mode="int",
        class_names=list(class_names),
        color_mode=color_mode,
        batch_size=256,
        image_size=(height, width),
        shuffle=True,
        seed=seed,
        crop_to_aspect_ratio=resize == "crop",
        pad_to_aspect_ratio=resize == "pad",
        data_format="channels_last",
        verbose=False,
    )
    try:
        # `verbose=False` leaves the split's counts printed: kept quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            datasets = _read(directory, validation_split, options)
    except ImportError as error:
        raise ImportError(
            "Reading an image folder uses keras.utils.image_dataset_from_directory, "
            f"which needs TensorFlow installed, whichever backend runs ({error})."
        ) from None
    splits = [
        _arrays(dataset, height, width, _CHANNELS[color_mode]) for dataset in datasets
    ]
    if len(splits) == 1:
        channels = _CHANNELS[color_mode]
        splits.append(
            (np.zeros((0, height, width, channels), "uint8"), np.zeros(0, "int64"))
        )
    return splits[0], splits[1], class_names


def _read(directory: Path, validation_split: float, options: dict) -> list:
    import keras

    if not validation_split:
        return [keras.utils.image_dataset_from_directory(str(directory), **options)]
    return list(
        keras.utils.image_dataset_from_directory(
            str(directory), validation_split=validation_split, subset="both", **options
        )
    )


def _class_names(directory: Path) -> tuple[tuple[str, ...], int]:
    """The sorted class sub-folders of `directory` and their count of images."""
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a folder of class sub-folders.")
    layout = (
        "Put each class's images in a sub-folder named after it, e.g. "
        f"{directory / 'cat' / '001.jpg'}."
    )
    names = tuple(sorted(path.name for path in directory.iterdir() if path.is_dir()))
    if not names:
        loose = any(_is_image(path) for path in directory.iterdir())
        found = "images but no" if loose else "no"
        raise ValueError(f"{directory} holds {found} class sub-folders. {layout}")
    count = sum(
        _is_image(path) for name in names for path in (directory / name).rglob("*")
    )
    if not count:
        raise ValueError(
            f"{directory}: its class sub-folders {', '.join(names)} hold no images "
            f"({', '.join(IMAGE_EXTENSIONS)}). {layout}"
        )
    return names, count


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _arrays(dataset: Any, height: int, width: int, channels: int) -> tuple[Any, Any]:
    images = [np.zeros((0, height, width, channels), "uint8")]
    labels = [np.zeros(0, "int64")]
    for batch_images, batch_labels in dataset:
        pixels = np.asarray(batch_images)
        images.append(np.clip(np.round(pixels), 0, 255).astype("uint8"))
        labels.append(np.asarray(batch_labels).astype("int64"))
    return np.concatenate(images), np.concatenate(labels)
