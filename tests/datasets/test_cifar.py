"""`load_cifar10` / `load_cifar100` on small files written here in the binary format."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from keras_capsules.datasets import load_cifar10, load_cifar100

CIFAR10_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
CIFAR100_FILES = ["train.bin", "test.bin"]


def _records(labels, images):
    """The official records: the label byte(s), then the R, G and B planes."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels, planes], axis=1).astype("uint8").tobytes()


def _cifar10_files(count=3, seed=0):
    """{file name: (bytes, images, labels)} for every CIFAR-10 file."""
    rng = np.random.default_rng(seed)
    files = {}
    for name in CIFAR10_FILES:
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype="uint8")
        labels = rng.integers(0, 10, (count, 1), dtype="uint8")
        files[name] = (_records(labels, images), images, labels)
    return files


def _cifar100_files(count=4, seed=0):
    rng = np.random.default_rng(seed)
    files = {}
    for name in CIFAR100_FILES:
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype="uint8")
        fine = rng.integers(0, 100, (count, 1), dtype="uint8")
        coarse = (fine // 5).astype("uint8")
        files[name] = (_records(np.concatenate([coarse, fine], 1), images), images)
        files[name] += (coarse, fine)
    return files


def _write(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, *_) in files.items():
        (folder / name).write_bytes(data)
    return folder


def _write_archive(path, folder_name, files):
    """A .tar.gz laid out as the download: one folder of the files, and a readme."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in [("readme.html", b"<html></html>")] + [
            (name, data) for name, (data, *_) in files.items()
        ]:
            info = tarfile.TarInfo(f"{folder_name}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _expected_cifar10(files):
    train = [files[name] for name in CIFAR10_FILES[:5]]
    return (
        np.concatenate([images for _, images, _ in train]),
        np.concatenate([labels for _, _, labels in train]),
        files["test_batch.bin"][1],
        files["test_batch.bin"][2],
    )


def _assert_cifar10(loaded, files):
    (x_train, y_train), (x_test, y_test) = loaded
    expected = _expected_cifar10(files)
    for got, want in zip((x_train, y_train, x_test, y_test), expected):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
    assert x_train.shape == (15, 32, 32, 3) and y_train.shape == (15, 1)
    assert x_test.shape == (3, 32, 32, 3) and y_test.shape == (3, 1)


def test_cifar10_from_a_folder(tmp_path):
    files = _cifar10_files()
    _assert_cifar10(load_cifar10(_write(tmp_path, files)), files)


def test_cifar10_from_the_folder_the_archive_unpacks_to(tmp_path):
    files = _cifar10_files()
    _write(tmp_path / "cifar-10-batches-bin", files)
    _assert_cifar10(load_cifar10(tmp_path), files)


def test_cifar10_from_the_tar_gz(tmp_path):
    files = _cifar10_files()
    archive = _write_archive(
        tmp_path / "cifar-10-binary.tar.gz", "cifar-10-batches-bin", files
    )
    _assert_cifar10(load_cifar10(str(archive)), files)


def test_cifar10_from_the_folder_holding_the_downloaded_archive(tmp_path):
    files = _cifar10_files()
    _write_archive(tmp_path / "cifar-10-binary.tar.gz", "cifar-10-batches-bin", files)
    _assert_cifar10(load_cifar10(tmp_path), files)


def test_pixels_are_the_red_green_blue_planes_row_by_row(tmp_path):
    # One record by hand: label 7, red = position, green = 1, blue = 2.
    red = np.arange(1024) % 256
    record = bytes([7, *red, *[1] * 1024, *[2] * 1024])
    for name in CIFAR10_FILES:
        (tmp_path / name).write_bytes(record)
    (x_train, y_train), _ = load_cifar10(tmp_path)
    assert y_train[0, 0] == 7
    np.testing.assert_array_equal(x_train[0, :, :, 0], red.reshape(32, 32))
    assert (x_train[0, :, :, 1] == 1).all() and (x_train[0, :, :, 2] == 2).all()


@pytest.mark.parametrize("label_mode", ["fine", "coarse"])
def test_cifar100_labels(tmp_path, label_mode):
    files = _cifar100_files()
    (x_train, y_train), (x_test, y_test) = load_cifar100(
        _write(tmp_path, files), label_mode=label_mode
    )
    column = 3 if label_mode == "fine" else 2
    np.testing.assert_array_equal(x_train, files["train.bin"][1])
    np.testing.assert_array_equal(x_test, files["test.bin"][1])
    np.testing.assert_array_equal(y_train, files["train.bin"][column])
    np.testing.assert_array_equal(y_test, files["test.bin"][column])
    assert y_train.shape == (4, 1) and y_train.dtype == np.uint8


def test_cifar100_from_the_tar_gz(tmp_path):
    files = _cifar100_files()
    archive = _write_archive(tmp_path / "c100.tar.gz", "cifar-100-binary", files)
    (_, y_train), _ = load_cifar100(archive, label_mode="coarse")
    np.testing.assert_array_equal(y_train, files["train.bin"][2])


def test_cifar100_rejects_a_bad_label_mode(tmp_path):
    with pytest.raises(ValueError, match="label_mode"):
        load_cifar100(tmp_path, label_mode="medium")


def test_a_file_of_the_wrong_size_is_named(tmp_path):
    files = _cifar10_files()
    _write(tmp_path, files)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"data_batch_3\.bin: 9218 bytes .*3073"):
        load_cifar10(tmp_path)


def test_an_empty_file_is_refused(tmp_path):
    _write(tmp_path, _cifar10_files())
    (tmp_path / "test_batch.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"test_batch\.bin: 0 bytes"):
        load_cifar10(tmp_path)


def test_the_other_datasets_files_are_refused(tmp_path):
    # CIFAR-100 records (3,074 bytes) read as CIFAR-10 (3,073), and back.
    one_record_100 = bytes(3074)
    for name in CIFAR10_FILES:
        (tmp_path / "ten" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "ten" / name).write_bytes(one_record_100)
    with pytest.raises(ValueError, match=r"data_batch_1\.bin: 3074 bytes"):
        load_cifar10(tmp_path / "ten")
    (tmp_path / "hundred").mkdir()
    for name in CIFAR100_FILES:
        (tmp_path / "hundred" / name).write_bytes(bytes(3073 * 2))
    with pytest.raises(ValueError, match=r"train\.bin: 6146 bytes .*3074"):
        load_cifar100(tmp_path / "hundred")


def test_a_label_out_of_range_is_named(tmp_path):
    files = _cifar10_files()
    _write(tmp_path, files)
    data = bytearray(files["data_batch_2.bin"][0])
    data[0] = 10
    (tmp_path / "data_batch_2.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"data_batch_2\.bin: a label of 10"):
        load_cifar10(tmp_path)


def test_missing_files_are_named(tmp_path):
    files = _cifar10_files()
    del files["data_batch_4.bin"], files["test_batch.bin"]
    _write(tmp_path, files)
    with pytest.raises(
        ValueError, match=r"data_batch_4\.bin, test_batch\.bin not found.*binary"
    ):
        load_cifar10(tmp_path)
    with pytest.raises(ValueError, match=r"train\.bin, test\.bin not found"):
        load_cifar100(tmp_path)


def test_missing_files_in_an_archive_are_named(tmp_path):
    files = _cifar100_files()
    del files["test.bin"]
    archive = _write_archive(tmp_path / "c100.tar.gz", "cifar-100-binary", files)
    with pytest.raises(ValueError, match=r"test\.bin not found in .*c100\.tar\.gz"):
        load_cifar100(archive)


def test_the_pickled_python_version_is_refused_not_read(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    # Were this unpickled, it would fail loudly; it must not even be opened.
    for name in ("data_batch_1", "test_batch"):
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="Python version .*pickle"):
        load_cifar10(tmp_path)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    with pytest.raises(ValueError, match="Python version"):
        load_cifar10(archive)


def test_a_path_that_is_not_there_or_not_an_archive(tmp_path):
    with pytest.raises(ValueError, match="neither a folder nor a file"):
        load_cifar10(tmp_path / "nowhere")
    not_tar = tmp_path / "cifar.tar.gz"
    not_tar.write_bytes(b"plain bytes")
    with pytest.raises(ValueError, match=r"cifar\.tar\.gz is not a readable"):
        load_cifar10(not_tar)
