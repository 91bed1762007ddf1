"""Small image files and dataset files written by the tests, with no image library."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def write_png(path: Path, pixels: np.ndarray) -> Path:
    """Writes uint8 `pixels`, `(height, width)` grey or `(height, width, 3)` RGB."""
    pixels = np.asarray(pixels, "uint8")
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.ndim == 3 else 0
    rows = pixels.reshape(height, -1)
    # Each row starts with its filter type, 0: none.
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )
    return path


def write_image_folder(
    folder: Path,
    classes: tuple[str, ...] = ("cat", "dog"),
    per_class: int = 4,
    size: tuple[int, int] = (12, 10),
    seed: int = 0,
) -> dict[str, list[np.ndarray]]:
    """`folder/CLASS/N.png`, RGB images of `size` whose red channel is the class's
    index times 100; returns each class's images."""
    rng = np.random.default_rng(seed)
    images: dict[str, list[np.ndarray]] = {}
    for index, name in enumerate(classes):
        for number in range(per_class):
            pixels = rng.integers(0, 256, (*size, 3), dtype="uint8")
            pixels[..., 0] = 100 * index
            write_png(folder / name / f"{number}.png", pixels)
            images.setdefault(name, []).append(pixels)
    return images


def cifar10_records(count: int, seed: int = 0) -> bytes:
    """`count` CIFAR-10 binary records: a label byte, then 3,072 pixel bytes."""
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, (count, 3073), dtype="uint8")
    records[:, 0] = np.arange(count) % 10
    return records.tobytes()


def write_cifar10_folder(folder: Path, per_file: int = 4) -> Path:
    """The six files of the CIFAR-10 binary version, `per_file` records each."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for seed, name in enumerate(names):
        (folder / name).write_bytes(cifar10_records(per_file, seed))
    return folder
