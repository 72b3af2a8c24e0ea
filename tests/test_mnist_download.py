"""`jf.datasets.mnist` downloads the files it lacks, from a local mirror here: checked
against their SHA-256, resumed after a cut, and with a clear error when offline. No
test reaches the internet: every test that may download points JAXFLOW_MNIST_MIRROR at
127.0.0.1."""

import gzip
import hashlib
import re
import warnings

import numpy as np
import pytest
from tqdm import tqdm

import jaxflow as jf

from helpers import Mirror, closed_url, mnist_root


FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
DIGITS, N = (3, 8), 40


@pytest.fixture(scope="module")
def shared():
    return mnist_root()


@pytest.fixture(scope="module")
def reference(shared):
    """The test split's first N threes and eights, read from the shared folder."""
    return jf.datasets.mnist(DIGITS, "test", N, root=shared, download=False)


@pytest.fixture
def mirror(shared, monkeypatch):
    with Mirror(shared) as mirror:
        monkeypatch.setenv("JAXFLOW_MNIST_MIRROR", mirror.url)
        yield mirror


def load(**kwargs):
    return jf.datasets.mnist(DIGITS, "test", N, **{"progress": False, **kwargs})


def same(data, reference) -> bool:
    return np.array_equal(data.X, reference.X) and np.array_equal(data.y, reference.y)


def test_download_into_a_new_root(mirror, shared, reference, tmp_path, capsys):
    root = tmp_path / "new" / "data"
    assert same(load(root=root, progress=True), reference)
    assert sorted(p.name for p in root.iterdir()) == sorted(FILES)
    for name in FILES:  # all four, each in one piece
        assert (root / name).read_bytes() == (shared / name).read_bytes()
        assert [(n, r) for n, r, _ in mirror.requests if n == name] == [(name, None)]
    # The test split's files first; one bar per file, with its size.
    assert [n for n, _, _ in mirror.requests][:2] == list(FILES[2:])
    err = capsys.readouterr().err
    for name in FILES:
        size = tqdm.format_sizeof((shared / name).stat().st_size, divisor=1024)
        assert re.search(
            rf"{re.escape(name)}: 100%.* {re.escape(size)}/{re.escape(size)} ", err
        )
    # Once there, the files are read without asking the mirror.
    assert same(load(root=root), reference) and len(mirror.requests) == 4


@pytest.mark.parametrize("place", ["cache", "JAXFLOW_DATA"])
def test_download_without_root(mirror, shared, reference, tmp_path, monkeypatch, place):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if place == "cache":
        monkeypatch.delenv("JAXFLOW_DATA", raising=False)
        folder = tmp_path / "cache" / "jaxflow" / "mnist"
    else:
        folder = tmp_path / "data"
        monkeypatch.setenv("JAXFLOW_DATA", str(folder))
    assert same(load(), reference)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(FILES)
    for name in FILES:
        assert (folder / name).read_bytes() == (shared / name).read_bytes()


@pytest.fixture(scope="module")
def altered(shared):
    """The test images as a valid gzip file with one byte of content changed, the
    SHA-256 of that content, and that of the true content."""
    raw = bytearray(gzip.decompress((shared / TEST_IMAGES).read_bytes()))
    expected = hashlib.sha256(raw).hexdigest()
    raw[5000] ^= 0xFF
    return gzip.compress(bytes(raw), 1), hashlib.sha256(raw).hexdigest(), expected


def test_a_file_failing_its_checksum_is_deleted(mirror, shared, altered, tmp_path):
    mirror.replace[TEST_IMAGES], received, expected = altered
    with pytest.raises(FileNotFoundError) as error:
        load(root=tmp_path)
    message = str(error.value)
    assert message.startswith(f"mnist: could not download {TEST_IMAGES}. Tried: ")
    assert f"{mirror.url}{TEST_IMAGES} (SHA-256 of its uncompressed content " in message
    assert f"{received}, expected {expected}; deleted it)" in message
    assert received != expected and list(tmp_path.iterdir()) == []
    # Bytes that are no gzip at all are rejected too.
    garbage = bytearray((shared / TEST_IMAGES).read_bytes())
    garbage[len(garbage) // 2] ^= 0xFF
    mirror.replace[TEST_IMAGES] = bytes(garbage)
    with pytest.raises(FileNotFoundError, match=r"\(not a valid gzip file \("):
        load(root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_next_mirror_serves_the_good_file(
    mirror, shared, reference, altered, tmp_path, monkeypatch
):
    mirror.replace[TEST_IMAGES] = altered[0]
    with Mirror(shared) as good:
        # No trailing slash on the first, comma and whitespace between them.
        monkeypatch.setenv(
            "JAXFLOW_MNIST_MIRROR", f"{mirror.url.rstrip('/')} ,\n{good.url}"
        )
        assert same(load(root=tmp_path), reference)
    assert [n for n, _, _ in mirror.requests] == list(FILES[2:] + FILES[:2])
    assert [n for n, _, _ in good.requests] == [TEST_IMAGES]
    assert (tmp_path / TEST_IMAGES).read_bytes() == (shared / TEST_IMAGES).read_bytes()


def test_the_other_split_is_best_effort(mirror, shared, reference, tmp_path):
    mirror.replace["train-labels-idx1-ubyte.gz"] = b"not gzip"
    with pytest.warns(UserWarning, match="could not download train-labels.*the train "):
        assert same(load(root=tmp_path), reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES[:1] + FILES[2:])


def test_an_interrupted_transfer_is_resumed(mirror, shared, reference, tmp_path):
    size = (shared / TEST_IMAGES).stat().st_size
    mirror.cut[TEST_IMAGES] = size // 2
    with pytest.raises(
        FileNotFoundError,
        match=rf"\(the connection closed after {size // 2} of {size} bytes\)",
    ):
        load(root=tmp_path)
    part = tmp_path / f"{TEST_IMAGES}.part"
    assert part.stat().st_size == size // 2 and not (tmp_path / TEST_IMAGES).exists()
    assert same(load(root=tmp_path), reference)
    asked = [r for n, r, _ in mirror.requests if n == TEST_IMAGES]
    assert asked == [None, f"bytes={size // 2}-"]
    assert mirror.served(TEST_IMAGES) < 1.5 * size
    assert not part.exists()
    assert (tmp_path / TEST_IMAGES).read_bytes() == (shared / TEST_IMAGES).read_bytes()


def test_a_server_ignoring_range_starts_over(mirror, shared, reference, tmp_path):
    data = (shared / TEST_IMAGES).read_bytes()
    (tmp_path / f"{TEST_IMAGES}.part").write_bytes(data[:1000])
    mirror.ignore_range = True
    assert same(load(root=tmp_path), reference)
    assert [r for n, r, _ in mirror.requests if n == TEST_IMAGES] == ["bytes=1000-"]
    assert (tmp_path / TEST_IMAGES).read_bytes() == data


def test_a_stale_part_is_replaced(mirror, shared, reference, tmp_path):
    """A `.part` that is no start of the file fails the check once resumed: it is
    deleted and the file fetched whole from the same mirror."""
    (tmp_path / f"{TEST_IMAGES}.part").write_bytes(b"\x1f\x8b" + bytes(998))
    assert same(load(root=tmp_path), reference)
    asked = [r for n, r, _ in mirror.requests if n == TEST_IMAGES]
    assert asked == ["bytes=1000-", None]
    assert (tmp_path / TEST_IMAGES).read_bytes() == (shared / TEST_IMAGES).read_bytes()


def test_offline_error_names_the_folder(tmp_path, monkeypatch):
    url = closed_url()
    monkeypatch.setenv("JAXFLOW_MNIST_MIRROR", f"{url} {url}again/")
    folder = tmp_path / "mnist"
    with pytest.raises(FileNotFoundError) as error:
        load(root=folder)
    message = str(error.value)
    assert message.startswith(
        f"mnist: could not download {TEST_IMAGES}. Tried: {url}{TEST_IMAGES} ("
    )
    assert f"); {url}again/{TEST_IMAGES} (" in message
    assert (
        f"Put the files by hand into {folder}: the four standard IDX files" in message
    )
    assert "JAXFLOW_MNIST_MIRROR" in message and "\n" not in message
    assert list(folder.iterdir()) == []  # created, for the files to go into


def test_no_download_keeps_the_old_errors(mirror, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no test images file.*empty"):
        load(root=tmp_path / "empty", download=False)
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="is not an existing folder"):
        load(root=missing, download=False)
    assert not missing.exists() and mirror.requests == []
    with pytest.raises(FileNotFoundError, match=r"`root` \(''\) is not an existing"):
        load(root="")


@pytest.mark.parametrize("name", ["download", "progress"])
def test_flags_must_be_bools(tmp_path, name):
    with pytest.raises(
        ValueError, match=rf"`{name}` must be a bool \(True or False\), got 'yes'"
    ):
        load(root=tmp_path, **{name: "yes"})


def test_no_warning_when_all_is_there(mirror, shared, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(root=shared)
    assert mirror.requests == []


@pytest.mark.slow  # a solve's compilation
def test_the_align_command_downloads_and_runs(mirror, tmp_path, monkeypatch):
    """A fresh machine: no files anywhere, a mirror set by JAXFLOW_MNIST_MIRROR."""
    from jaxflow._cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("JAXFLOW_DATA", raising=False)
    out = tmp_path / "run"
    argv = ["align", "--data", "mnist", "--n", "100", "--width", "10", "--t1", "2"]
    assert main([*argv, "--times", "11", "--quiet", "--out", str(out)]) == 0
    folder = tmp_path / "cache" / "jaxflow" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert (out / "summary.json").is_file() and (out / "alignment.png").is_file()
