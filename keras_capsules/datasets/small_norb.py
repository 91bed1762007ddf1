"""The smallNORB dataset, read from the official files a user downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from keras_capsules._validation import check_choice

# The header's first int32 says the element type of the matrix that follows.
_MAGIC_DTYPES: dict[int, np.dtype] = {
    0x1E3D4C55: np.dtype("uint8"),
    0x1E3D4C54: np.dtype("<i4"),
    0x1E3D4C51: np.dtype("<f4"),
    0x1E3D4C53: np.dtype("<f8"),
}
SPLIT_FILES = {
    "train": "smallnorb-5x46789x9x18x6x2x96x96-training-{kind}.mat",
    "test": "smallnorb-5x01235x9x18x6x2x96x96-testing-{kind}.mat",
}
CLASS_NAMES = ("animal", "human", "airplane", "truck", "car")


def read_norb_matrix(path: str | Path) -> np.ndarray:
    """Reads one file in the NORB binary matrix format.

    The format (little endian): an int32 magic number giving the element
    type, an int32 number of dimensions `ndim`, `max(ndim, 3)` int32 sizes
    (the unused ones are 1), then the elements in C order.

    Args:
        path: A `*-dat.mat`, `*-cat.mat` or `*-info.mat` file.

    Returns:
        The matrix, with its `ndim` dimensions.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 20:
        raise ValueError(f"{path} is too short for a NORB matrix header.")
    magic, ndim = np.frombuffer(data, "<i4", count=2)
    dtype = _MAGIC_DTYPES.get(int(magic) & 0xFFFFFFFF)
    if dtype is None or not 1 <= ndim <= 16:
        raise ValueError(
            f"{path} is not a NORB binary matrix: magic number "
            f"{int(magic) & 0xFFFFFFFF:#x}, {int(ndim)} dimensions."
        )
    header_dims = max(int(ndim), 3)
    shape = tuple(
        int(d) for d in np.frombuffer(data, "<i4", count=header_dims, offset=8)
    )
    shape = shape[: int(ndim)]
    offset = 8 + 4 * header_dims
    count = int(np.prod(shape))
    if len(data) - offset != count * dtype.itemsize:
        raise ValueError(
            f"{path}: the header announces a {shape} matrix of {dtype} "
            f"({count * dtype.itemsize} bytes) but {len(data) - offset} bytes follow."
        )
    return np.frombuffer(data, dtype, count=count, offset=offset).reshape(shape)


def load_small_norb(directory: str | Path, split: str = "train") -> tuple[Any, ...]:
    """Loads a smallNORB split from the official, uncompressed files.

    smallNORB (LeCun, Huang & Bottou 2004) holds 96x96 stereo photographs of
    50 toys of 5 classes under 18 azimuths, 9 elevations and 6 lightings:
    24,300 image pairs for training and 24,300 for testing. It is the
    dataset of Hinton, Sabour & Frosst (2018); download and gunzip the six
    files from https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/ into one
    folder and pass it here.

    Args:
        directory: The folder holding the `smallnorb-*-{dat,cat,info}.mat`
            files of the split.
        split: `"train"` or `"test"`. Defaults to `"train"`.

    Returns:
        The tuple `(images, labels, info)`: `images` uint8 `(N, 96, 96, 2)`,
        the two cameras as channels; `labels` int64 `(N,)`, indices into
        `CLASS_NAMES`; `info` int64 `(N, 4)`, each image's instance,
        elevation, azimuth and lighting.
    """
    check_choice("split", split, tuple(SPLIT_FILES))
    directory = Path(directory)
    paths = {
        kind: directory / SPLIT_FILES[split].format(kind=kind)
        for kind in ("dat", "cat", "info")
    }
    missing = [path.name for path in paths.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"smallNORB {split} files not found in {directory}: {', '.join(missing)}"
            " (download and gunzip them from "
            "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/)"
        )
    images = read_norb_matrix(paths["dat"])
    labels = read_norb_matrix(paths["cat"]).astype("int64")
    info = read_norb_matrix(paths["info"]).astype("int64")
    if (
        images.ndim != 4
        or images.shape[1] != 2
        or not (len(images) == len(labels) == len(info))
    ):
        raise ValueError(
            f"smallNORB {split} files of unexpected shapes: dat {images.shape}, "
            f"cat {labels.shape}, info {info.shape}; expected (N, 2, H, W), (N,), "
            "(N, 4)."
        )
    return np.transpose(images, (0, 2, 3, 1)), labels, info
