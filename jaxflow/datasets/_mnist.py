import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .._dataset import Dataset


_MAGIC = {"images": 2051, "labels": 2049}
_PREFIX = {"train": "train", "test": "t10k"}
_HOW_TO_GET = (
    "Download the four standard IDX files (train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), "
    "e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/, into one of these "
    "folders, or pass `root=` or set JAXFLOW_DATA to the folder holding them. jaxflow "
    "never downloads them itself."
)


def _candidates(root: str | os.PathLike | None) -> list[Path]:
    folders = []
    if root is not None:
        folders.append(Path(root))
    elif os.environ.get("JAXFLOW_DATA"):
        folders.append(Path(os.environ["JAXFLOW_DATA"]))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    folders.append(cache / "jaxflow")
    return [p for f in folders for p in (f, f / "mnist")]


def _locate(split: str, kind: str, root) -> Path:
    prefix, dims = _PREFIX[split], {"images": "idx3", "labels": "idx1"}[kind]
    names = [f"{prefix}-{kind}-{dims}-ubyte", f"{prefix}-{kind}.{dims}-ubyte"]
    searched = _candidates(root)
    for folder in searched:
        for name in names:
            for path in (folder / f"{name}.gz", folder / name):
                if path.is_file():
                    return path
    raise FileNotFoundError(
        f"mnist: no {split} {kind} file ({names[0]}[.gz]) in any of "
        f"{[str(p) for p in searched]}. {_HOW_TO_GET}"
    )


def read_idx(path: str | os.PathLike, kind: str) -> np.ndarray:
    """Read an IDX file of MNIST `kind` ('images' or 'labels'), gzipped or not,
    checking its magic number and that its length matches its header."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(
                f"mnist: {path} is a corrupt or truncated gzip file ({e}). Download "
                "it again."
            ) from None
    expected = _MAGIC[kind]
    if len(raw) < 8:
        raise ValueError(f"mnist: {path} is too short ({len(raw)} bytes) to be IDX.")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected:
        raise ValueError(
            f"mnist: {path} has magic number {magic}, expected {expected} for "
            f"{kind}: not an MNIST {kind} file."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(
        int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    if len(raw) != header + int(np.prod(shape)):
        raise ValueError(
            f"mnist: {path} holds {len(raw) - header} data bytes but its header "
            f"promises shape {shape} ({int(np.prod(shape))} bytes): truncated or "
            "corrupt. Download it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def mnist(
    digits: tuple[int, int] = (0, 1),
    split: str = "train",
    n: int | None = None,
    center: bool = True,
    root: str | os.PathLike | None = None,
) -> Dataset:
    r"""Two MNIST digits as a binary data set (Min, Mallada, Vidal 2024, Fig. 2).

    Reads the standard IDX files, gzipped or not, from `root`, else from the folder in
    the `JAXFLOW_DATA` environment variable, else from `~/.cache/jaxflow` (each, or its
    `mnist/` subfolder). Never downloads.

    **Arguments:**

    - `digits`: two distinct digits; the first is labelled $+1$, the second $-1$.
    - `split`: `"train"` (60,000 images) or `"test"` (10,000).
    - `n`: keep the first `n` images of the two digits in file order; all by default
        (digits 0 and 1: 12,665 training images).
    - `center`: subtract the mean image of the selected set ($x_i - \bar x$).
    - `root`: folder holding the files.

    **Returns:**

    A `jaxflow.Dataset` with `X` of shape `(n, 784)`, pixels scaled to $[0, 1]$ before
    centring.

    **Raises:**

    `FileNotFoundError` naming the folders searched and how to obtain the files;
    `ValueError` for corrupt or truncated files and bad arguments.
    """
    if (
        len(digits) != 2
        or digits[0] == digits[1]
        or not all(isinstance(k, int) and 0 <= k <= 9 for k in digits)
    ):
        raise ValueError(
            f"mnist: `digits` must be two distinct ints in 0..9, got {digits!r}."
        )
    if split not in _PREFIX:
        raise ValueError(f"mnist: `split` must be 'train' or 'test', got {split!r}.")
    images = read_idx(_locate(split, "images", root), "images")
    labels = read_idx(_locate(split, "labels", root), "labels")
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"mnist: images of shape {images.shape} and labels of shape "
            f"{labels.shape} do not match."
        )
    keep = np.flatnonzero((labels == digits[0]) | (labels == digits[1]))
    if n is not None:
        if not isinstance(n, int) or not 1 <= n <= keep.size:
            raise ValueError(
                f"mnist: `n` must be an int in 1..{keep.size} for digits {digits}, "
                f"got {n!r}."
            )
        keep = keep[:n]
    X = images[keep].reshape(keep.size, -1).astype(np.float64) / 255.0
    if center:
        X = X - X.mean(axis=0, keepdims=True)
    y = np.where(labels[keep] == digits[0], 1.0, -1.0)
    return Dataset(X, y)
