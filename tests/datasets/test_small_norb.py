"""`load_small_norb` on small files written here in the official format."""

from __future__ import annotations

import numpy as np
import pytest

from keras_capsules.datasets import load_small_norb, read_norb_matrix
from keras_capsules.datasets.small_norb import SPLIT_FILES

UINT8_MAGIC, INT32_MAGIC = 0x1E3D4C55, 0x1E3D4C54


def _write_matrix(path, array, magic):
    # The official layout: magic, ndim, max(ndim, 3) sizes padded with 1s.
    dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
    header = np.array([magic, array.ndim, *dims], dtype="<u4")
    path.write_bytes(header.tobytes() + np.ascontiguousarray(array).tobytes())


def _write_split(directory, split, count=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 2, size, size), dtype="uint8")
    labels = rng.integers(0, 5, count).astype("<i4")
    info = rng.integers(0, 10, (count, 4)).astype("<i4")
    name = SPLIT_FILES[split]
    _write_matrix(directory / name.format(kind="dat"), images, UINT8_MAGIC)
    _write_matrix(directory / name.format(kind="cat"), labels, INT32_MAGIC)
    _write_matrix(directory / name.format(kind="info"), info, INT32_MAGIC)
    return images, labels, info


@pytest.mark.parametrize("split", ["train", "test"])
def test_reads_each_split_of_the_official_format(tmp_path, split):
    images, labels, info = _write_split(tmp_path, split, seed=len(split))
    got_images, got_labels, got_info = load_small_norb(tmp_path, split)
    assert got_images.shape == (6, 8, 8, 2) and got_images.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(got_info, info)
    assert got_labels.dtype == np.int64 and got_info.dtype == np.int64


def test_one_dimensional_matrix_keeps_its_padded_header(tmp_path):
    path = tmp_path / "labels.mat"
    _write_matrix(path, np.arange(7, dtype="<i4"), INT32_MAGIC)
    # 4-byte magic, 4-byte ndim, three 4-byte sizes, then 7 int32s.
    assert path.stat().st_size == 8 + 12 + 28
    np.testing.assert_array_equal(read_norb_matrix(path), np.arange(7))


def test_missing_files_name_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="training-dat.mat.*ylclab"):
        load_small_norb(tmp_path, "train")


def test_rejects_bad_split_and_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_small_norb(tmp_path, "validation")
    bad = tmp_path / "bad.mat"
    bad.write_bytes(np.array([1, 2, 3, 4, 5], "<i4").tobytes())
    with pytest.raises(ValueError, match="not a NORB binary matrix"):
        read_norb_matrix(bad)
    truncated = tmp_path / "truncated.mat"
    _write_matrix(truncated, np.zeros((4, 4), "uint8"), UINT8_MAGIC)
    truncated.write_bytes(truncated.read_bytes()[:-3])
    with pytest.raises(ValueError, match="bytes follow"):
        read_norb_matrix(truncated)
