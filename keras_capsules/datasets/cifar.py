"""CIFAR-10 and CIFAR-100, read from the official binary files a user downloaded.

Only the "binary version" of the datasets is read
(`cifar-10-binary.tar.gz`, `cifar-100-binary.tar.gz` from
https://www.cs.toronto.edu/~kriz/cifar.html): fixed-size records of label
bytes and pixel bytes. The "Python version" is a set of pickles, and loading
a pickle runs whatever code it holds, so it is refused.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from keras_capsules._validation import check_choice

_PIXELS = 32 * 32 * 3
_DOWNLOAD = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
"""The names of CIFAR-10's classes, indexed by label."""


class _Dataset:
    """What differs between the two datasets' binary files."""

    def __init__(
        self,
        name: str,
        folder: str,
        archive: str,
        train_files: tuple[str, ...],
        test_file: str,
        label_names: tuple[str, ...],
        label_counts: tuple[int, ...],
        python_names: tuple[str, ...],
    ) -> None:
        self.name = name
        self.folder = folder
        self.archive = archive
        self.train_files = train_files
        self.test_file = test_file
        self.label_names = label_names
        self.label_counts = label_counts
        # Names found only in the pickled "Python version" of the dataset.
        self.python_names = python_names
        self.record_size = len(label_counts) + _PIXELS


_CIFAR10 = _Dataset(
    "CIFAR-10",
    folder="cifar-10-batches-bin",
    archive="cifar-10-binary.tar.gz",
    train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    test_file="test_batch.bin",
    label_names=("label",),
    label_counts=(10,),
    python_names=("cifar-10-batches-py", "data_batch_1"),
)
_CIFAR100 = _Dataset(
    "CIFAR-100",
    folder="cifar-100-binary",
    archive="cifar-100-binary.tar.gz",
    train_files=("train.bin",),
    test_file="test.bin",
    label_names=("coarse label", "fine label"),
    label_counts=(20, 100),
    python_names=("cifar-100-python", "train"),
)


def _read_files(dataset: _Dataset, path: Path) -> dict[str, tuple[str, bytes]]:
    """The bytes of every file of `dataset`, each with where it was read from."""
    names = (*dataset.train_files, dataset.test_file)
    if path.is_dir() and (path / dataset.archive).is_file():
        # The folder the archive was downloaded to, not unpacked.
        unpacked = path / dataset.folder
        if not any((place / names[0]).is_file() for place in (path, unpacked)):
            path = path / dataset.archive
    if path.is_dir():
        folder = path / dataset.folder if (path / dataset.folder).is_dir() else path
        found = {name: folder / name for name in names if (folder / name).is_file()}
        python_version = any(
            (place / name).exists()
            for place in (path, folder)
            for name in dataset.python_names
        )
        files = {name: (str(file), file.read_bytes()) for name, file in found.items()}
    elif path.is_file():
        files, python_version = _read_archive(path, names, dataset.python_names)
        folder = path
    else:
        raise ValueError(
            f"{dataset.name}: {path} is neither a folder nor a file. Pass the "
            f"folder of the binary files or the downloaded {dataset.archive}."
        )
    missing = [name for name in names if name not in files]
    if missing:
        hint = (
            " It holds the Python version (pickles), which is not read: loading "
            "a pickle runs code."
            if python_version
            else ""
        )
        raise ValueError(
            f"{dataset.name} file(s) {', '.join(missing)} not found in {folder}."
            f"{hint} Download the binary version, {dataset.archive}, from "
            f"{_DOWNLOAD} and pass the archive or the folder it unpacks to."
        )
    return files


def _read_archive(
    path: Path, names: tuple[str, ...], python_names: tuple[str, ...]
) -> tuple[dict, bool]:
    """The members `names` of a tar archive, by file name, read in memory.

    Nothing is extracted to disk, so member paths cannot write anywhere.
    Also says whether a member is named as in the Python version.
    """
    files = {}
    python_version = False
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                python_version |= base in python_names
                if base in names and member.isfile() and base not in files:
                    extracted = archive.extractfile(member)
                    if extracted is not None:
                        files[base] = (f"{path}:{member.name}", extracted.read())
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ValueError(
            f"{path} is not a readable .tar.gz archive ({error})."
        ) from None
    return files, python_version


def _records(dataset: _Dataset, where: str, data: bytes) -> tuple[Any, Any]:
    """The images `(N, 32, 32, 3)` and labels `(N, labels)` of one file."""
    size = dataset.record_size
    if not data or len(data) % size:
        layout = " + ".join(f"1 {name} byte" for name in dataset.label_names)
        raise ValueError(
            f"{where}: {len(data)} bytes is not a whole, positive number of "
            f"{dataset.name} records of {size} bytes ({layout} + {_PIXELS} "
            "pixel bytes). Is it a file of the other CIFAR dataset, or "
            "truncated?"
        )
    records = np.frombuffer(data, "uint8").reshape(-1, size)
    labels = records[:, : len(dataset.label_names)]
    for column, (name, count) in enumerate(
        zip(dataset.label_names, dataset.label_counts)
    ):
        if labels[:, column].max() >= count:
            raise ValueError(
                f"{where}: a {name} of {int(labels[:, column].max())} in a "
                f"{dataset.name} file, whose {name}s are 0 to {count - 1}. Is "
                "it a file of the other CIFAR dataset?"
            )
    # Each record's pixels: the 1024 red values, then green, then blue, each
    # plane row by row.
    images = records[:, len(dataset.label_names) :].reshape(-1, 3, 32, 32)
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1)), labels


def _load(dataset: _Dataset, path: str | Path, column: int) -> tuple[Any, Any]:
    files = _read_files(dataset, Path(path))
    splits = []
    for names in (dataset.train_files, (dataset.test_file,)):
        parts = [_records(dataset, *files[name]) for name in names]
        images = np.concatenate([images for images, _ in parts])
        labels = np.concatenate([labels[:, column : column + 1] for _, labels in parts])
        splits.append((images, labels))
    return splits[0], splits[1]


def load_cifar10(path: str | Path) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Loads CIFAR-10 from the official binary files.

    CIFAR-10 (Krizhevsky 2009) holds 60,000 colour images of 32x32 pixels
    in 10 classes (`CIFAR10_CLASS_NAMES`): 50,000 for training, 10,000 for
    testing. Download the binary version, `cifar-10-binary.tar.gz`, from
    https://www.cs.toronto.edu/~kriz/cifar.html and pass it here, or the
    folder it unpacks to. Each file is a sequence of 3,073-byte records: a
    label byte, then the 1,024 red, 1,024 green and 1,024 blue pixels. The
    pickled Python version is not read, since loading a pickle runs code.

    Args:
        path: The `.tar.gz` archive, or a folder holding `data_batch_1.bin`
            to `data_batch_5.bin` and `test_batch.bin`: directly, in the
            archive's `cifar-10-batches-bin` folder, or still packed in
            `cifar-10-binary.tar.gz`.

    Returns:
        `(x_train, y_train), (x_test, y_test)` as `keras.datasets.cifar10`
        gives them: images uint8 `(N, 32, 32, 3)`, labels uint8 `(N, 1)`.

    Raises:
        ValueError: A file is missing, is not a whole number of records,
            or holds a label out of range; the message names the file.

    Example:

    ```python
    (x_train, y_train), (x_test, y_test) = keras_capsules.datasets.load_cifar10(
        "cifar-10-binary.tar.gz"
    )
    ```
    """
    return _load(_CIFAR10, path, column=0)


def load_cifar100(
    path: str | Path, label_mode: str = "fine"
) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Loads CIFAR-100 from the official binary files.

    CIFAR-100 (Krizhevsky 2009) holds 60,000 colour images of 32x32 pixels
    in 100 fine classes grouped into 20 coarse ones: 50,000 for training,
    10,000 for testing. Download the binary version,
    `cifar-100-binary.tar.gz`, from https://www.cs.toronto.edu/~kriz/cifar.html
    and pass it here, or the folder it unpacks to. Each file is a sequence
    of 3,074-byte records: the coarse label byte, the fine label byte, then
    the 1,024 red, 1,024 green and 1,024 blue pixels. The pickled Python
    version is not read, since loading a pickle runs code.

    Args:
        path: The `.tar.gz` archive, or a folder holding `train.bin` and
            `test.bin`: directly, in the archive's `cifar-100-binary`
            folder, or still packed in `cifar-100-binary.tar.gz`.
        label_mode: `"fine"` (100 classes) or `"coarse"` (20 classes).
            Defaults to `"fine"`.

    Returns:
        `(x_train, y_train), (x_test, y_test)` as `keras.datasets.cifar100`
        gives them: images uint8 `(N, 32, 32, 3)`, labels uint8 `(N, 1)`.

    Raises:
        ValueError: A file is missing, is not a whole number of records,
            or holds a label out of range; the message names the file.
    """
    check_choice("label_mode", label_mode, ("fine", "coarse"))
    return _load(_CIFAR100, path, column=1 if label_mode == "fine" else 0)
