import gzip
import re
import struct

import numpy as np
import pytest

import jaxflow as jf

from helpers import mnist_root


def _write_idx(folder, split, images, labels, compress=True):
    prefix = {"train": "train", "test": "t10k"}[split]
    img = struct.pack(">IIII", 2051, *images.shape) + images.astype(np.uint8).tobytes()
    lab = struct.pack(">II", 2049, labels.size) + labels.astype(np.uint8).tobytes()
    for name, raw in (
        (f"{prefix}-images-idx3-ubyte", img),
        (f"{prefix}-labels-idx1-ubyte", lab),
    ):
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return folder


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 28, 28))
    labels = np.array([0, 1, 2, 1, 0, 7, 1, 0, 3, 1, 1, 0])
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
def test_tiny_files_gzipped_or_not(tmp_path, tiny, compress):
    images, labels = tiny
    _write_idx(tmp_path, "train", images, labels, compress)
    data = jf.datasets.mnist(digits=(1, 0), root=tmp_path, center=False)
    keep = np.flatnonzero((labels == 0) | (labels == 1))
    assert data.X.shape == (keep.size, 784)
    assert np.allclose(data.X, images[keep].reshape(keep.size, -1) / 255.0)
    assert np.array_equal(data.y, np.where(labels[keep] == 1, 1.0, -1.0))
    first3 = jf.datasets.mnist(digits=(1, 0), root=tmp_path, n=3)
    assert first3.X.shape == (3, 784)
    assert np.allclose(np.mean(first3.X, axis=0), 0.0, atol=1e-12)


def test_found_through_environment_variable(tmp_path, tiny, monkeypatch):
    (tmp_path / "mnist").mkdir()
    _write_idx(tmp_path / "mnist", "test", *tiny)
    monkeypatch.setenv("JAXFLOW_DATA", str(tmp_path))
    assert jf.datasets.mnist(split="test").n == 9


def test_missing_files_error_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXFLOW_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError,
        match=r"no train images file.*empty.*downloads missing files only with "
        r"`download=True`",
    ):
        jf.datasets.mnist(root=tmp_path / "empty", download=False)


@pytest.fixture
def cached(tmp_path, tiny, monkeypatch):
    """MNIST (the tiny files) in the cache, JAXFLOW_DATA unset."""
    monkeypatch.delenv("JAXFLOW_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "jaxflow").mkdir(parents=True)
    _write_idx(tmp_path / "cache" / "jaxflow", "train", *tiny)
    assert jf.datasets.mnist().n == 9


def test_given_root_is_searched_alone(tmp_path, tiny, cached, monkeypatch):
    misspelt = tmp_path / "mnsit"
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(f"`root` ('{misspelt}') is not an existing folder"),
    ):
        jf.datasets.mnist(root=misspelt, download=False)
    with pytest.raises(FileNotFoundError, match=r"`root` \(''\) is not an existing"):
        jf.datasets.mnist(root="")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no train images file.*empty"):
        jf.datasets.mnist(root=tmp_path / "empty", download=False)
    # JAXFLOW_DATA, when set, is searched alone too; `root` comes before it.
    monkeypatch.setenv("JAXFLOW_DATA", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"no train images file.*empty"):
        jf.datasets.mnist(download=False)
    monkeypatch.setenv("JAXFLOW_DATA", str(misspelt))
    with pytest.raises(FileNotFoundError, match=r"JAXFLOW_DATA \(.*mnsit'\) is not"):
        jf.datasets.mnist(download=False)
    assert jf.datasets.mnist(root=tmp_path / "cache" / "jaxflow").n == 9


def test_images_and_labels_come_from_one_folder(tmp_path, tiny, cached):
    only = tmp_path / "images-only"
    only.mkdir()
    _write_idx(only, "train", *tiny)
    (only / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"images-only holds the train images \(train-images-idx3-ubyte.gz\) "
        r"but not their labels \(train-labels-idx1-ubyte\[.gz\]\)",
    ):
        jf.datasets.mnist(root=only, download=False)


def test_digits_missing_from_the_labels(tmp_path, tiny):
    _write_idx(tmp_path, "train", *tiny)
    labels = str(tmp_path / "train-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError) as error:
        jf.datasets.mnist(digits=(4, 5), root=tmp_path)
    assert str(error.value) == (
        f"mnist: `digits` is (4, 5), but the labels in {labels} hold neither 4 nor 5; "
        "they hold digits [0, 1, 2, 3, 7]. Choose two of those."
    )
    with pytest.raises(
        ValueError,
        match=r"`digits` is \(0, 9\), .* hold only one of them: no 9; they hold "
        r"digits \[0, 1, 2, 3, 7\]",
    ):
        jf.datasets.mnist(digits=(0, 9), root=tmp_path)


def test_truncated_and_corrupt_files(tmp_path, tiny):
    images, labels = tiny
    _write_idx(tmp_path, "train", images, labels)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        jf.datasets.mnist(root=tmp_path)
    raw = gzip.decompress(good)
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(ValueError, match=r"header promises shape \(12, 28, 28\)"):
        jf.datasets.mnist(root=tmp_path)
    path.write_bytes(gzip.compress(struct.pack(">I", 2049) + raw[4:]))
    with pytest.raises(ValueError, match="magic number 2049, expected 2051"):
        jf.datasets.mnist(root=tmp_path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="too short"):
        jf.datasets.mnist(root=tmp_path)


def test_bad_arguments(tmp_path, tiny):
    _write_idx(tmp_path, "train", *tiny)
    with pytest.raises(
        ValueError,
        match=r"`digits` must be two distinct ints in 0..9, or None \(all ten\), got \(1, 1\)",
    ):
        jf.datasets.mnist(digits=(1, 1), root=tmp_path)
    with pytest.raises(ValueError, match=r"`n` must be an int in 1..9"):
        jf.datasets.mnist(root=tmp_path, n=100)
    with pytest.raises(ValueError, match="`split` must be 'train' or 'test'"):
        jf.datasets.mnist(split="val", root=tmp_path)


def test_real_mnist_zero_vs_one():
    root = mnist_root()
    data = jf.datasets.mnist(digits=(0, 1), root=root)
    assert data.X.shape == (12665, 784)
    assert int(np.sum(data.y > 0)) == 5923 and int(np.sum(data.y < 0)) == 6742
    assert np.allclose(np.mean(data.X, axis=0), 0.0, atol=1e-12)
    raw = jf.datasets.mnist(digits=(3, 8), split="test", center=False, root=root)
    assert raw.X.min() == 0.0 and raw.X.max() == 1.0
    assert raw.n == 1010 + 974


def _read_gz(path, offset):
    # The IDX layout by hand (16-byte header for images, 8 for labels), not read_idx.
    return np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=offset)


def test_real_mnist_centring_and_first_images():
    root = mnist_root()
    pixels = _read_gz(root / "train-images-idx3-ubyte.gz", 16).reshape(60000, 784)
    labels = _read_gz(root / "train-labels-idx1-ubyte.gz", 8)
    raw = pixels.astype(np.float64) / 255.0
    # "all": x_i minus the mean image of all 60,000 training images, every digit.
    pick = np.flatnonzero(labels <= 1)[:500]
    data = jf.datasets.mnist(n=500, center="all", root=root)
    assert np.allclose(data.X, raw[pick] - raw.mean(axis=0), rtol=0, atol=1e-12)
    pair = jf.datasets.mnist(n=500, center="pair", root=root)
    assert np.allclose(pair.X, raw[pick] - raw[pick].mean(axis=0), rtol=0, atol=1e-12)
    assert np.array_equal(pair.X, jf.datasets.mnist(n=500, root=root).X)  # True
    assert np.abs(data.X - pair.X).max() > 0.1
    # images=50000: mnist.pkl.gz's training split, centred by the mean of its images.
    first = np.flatnonzero(labels[:50000] <= 1)
    split = jf.datasets.mnist(images=50000, center="all", root=root)
    assert split.n == first.size and 10000 < first.size < 12665
    assert int(np.sum(split.y > 0)) == int(np.sum(labels[:50000] == 0))
    expected = raw[first] - raw[:50000].mean(axis=0)
    assert np.allclose(split.X, expected, rtol=0, atol=1e-12)


def test_centring_and_images_arguments(tmp_path, tiny):
    images, labels = tiny
    _write_idx(tmp_path, "train", *tiny)
    raw = images.reshape(12, -1) / 255.0
    data = jf.datasets.mnist(root=tmp_path, images=5, center="all")
    # Of the first five images (labels 0, 1, 2, 1, 0), the 0s and 1s, centred by the
    # mean of all five.
    pick = [0, 1, 3, 4]
    assert np.allclose(data.X, raw[pick] - raw[:5].mean(axis=0), rtol=0, atol=1e-12)
    assert np.array_equal(data.y, [1.0, -1.0, -1.0, 1.0])
    none = jf.datasets.mnist(root=tmp_path, images=5, center=False)
    assert np.allclose(none.X, raw[pick], rtol=0, atol=1e-12)
    with pytest.raises(
        ValueError,
        match=r"`center` must be True, False, 'pair' or 'all', got 'mean'",
    ):
        jf.datasets.mnist(root=tmp_path, center="mean")
    with pytest.raises(ValueError, match=r"`center` must be .*, got 1\."):
        jf.datasets.mnist(root=tmp_path, center=1)
    for bad in (0, -3, 2.5, True, "100"):
        with pytest.raises(
            ValueError,
            match=rf"`images` must be None \(all\) or a positive int, got {re.escape(repr(bad))}\.",
        ):
            jf.datasets.mnist(root=tmp_path, images=bad)
    with pytest.raises(
        ValueError,
        match=r"`images` must be at most 12 \(the train split holds 12 images\), got 13",
    ):
        jf.datasets.mnist(root=tmp_path, images=13)
    # Too few images to hold both digits: the digits check names what they hold.
    with pytest.raises(
        ValueError, match=r"\(its first 1\) hold only one of them: no 1"
    ):
        jf.datasets.mnist(root=tmp_path, images=1)


def test_ten_classes(tmp_path, tiny):
    images, labels = tiny
    _write_idx(tmp_path, "train", images, labels)
    data = jf.datasets.mnist(digits=None, root=tmp_path, center=False)
    assert data.classes == 10 and np.issubdtype(data.y.dtype, np.integer)
    assert np.array_equal(data.y, labels)
    assert np.allclose(data.X, images.reshape(12, -1) / 255.0)
    assert jf.datasets.mnist(digits=None, root=tmp_path, n=5).n == 5
    with pytest.raises(ValueError, match=r"`n` must be an int in 1..12 for all digits"):
        jf.datasets.mnist(digits=None, root=tmp_path, n=13)
    with pytest.raises(ValueError, match=r"or None \(all ten\), got 3"):
        jf.datasets.mnist(digits=3, root=tmp_path)


def test_real_mnist_ten_classes():
    root = mnist_root()
    labels = _read_gz(root / "t10k-labels-idx1-ubyte.gz", 8)
    data = jf.datasets.mnist(digits=None, split="test", center=False, root=root)
    assert data.X.shape == (10000, 784) and data.classes == 10
    assert np.array_equal(data.y, labels)
    assert np.array_equal(np.bincount(np.asarray(data.y)), np.bincount(labels))
