import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .._dataset import Dataset


_MAGIC = {"images": 2051, "labels": 2049}
_PREFIX = {"train": "train", "test": "t10k"}
_FILES = (
    "the four standard IDX files (train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz), "
    "e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/"
)
_ORDER = (
    "`root=` is searched alone if given, else JAXFLOW_DATA alone if set, else "
    "~/.cache/jaxflow ($XDG_CACHE_HOME/jaxflow). jaxflow never downloads the files."
)


def _folders(root: str | os.PathLike | None) -> list[Path]:
    """The folders to search, in order: one base folder and its `mnist/` subfolder."""
    if root is not None:
        given, name = "`root`", os.fspath(root)
    elif os.environ.get("JAXFLOW_DATA"):
        given, name = "JAXFLOW_DATA", os.environ["JAXFLOW_DATA"]
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return [cache / "jaxflow", cache / "jaxflow" / "mnist"]
    # A misspelt root must not fall back to another folder: say so instead. An empty
    # one is no folder either (Path("") is the working directory).
    if not name or not Path(name).is_dir():
        raise FileNotFoundError(
            f"mnist: {given} ({str(name)!r}) is not an existing folder. Pass the "
            f"folder holding {_FILES}. {_ORDER}"
        )
    return [Path(name), Path(name) / "mnist"]


def _names(split: str, kind: str) -> list[str]:
    prefix, dims = _PREFIX[split], {"images": "idx3", "labels": "idx1"}[kind]
    return [f"{prefix}-{kind}-{dims}-ubyte", f"{prefix}-{kind}.{dims}-ubyte"]


def _find(folder: Path, split: str, kind: str) -> Path | None:
    for name in _names(split, kind):
        for path in (folder / f"{name}.gz", folder / name):
            if path.is_file():
                return path
    return None


def _locate(split: str, root) -> tuple[Path, Path]:
    """The images and labels files of `split`, both from the first folder that holds
    the images."""
    searched = _folders(root)
    for folder in searched:
        images = _find(folder, split, "images")
        if images is None:
            continue
        labels = _find(folder, split, "labels")
        if labels is None:
            raise FileNotFoundError(
                f"mnist: {folder} holds the {split} images ({images.name}) but not "
                f"their labels ({_names(split, 'labels')[0]}[.gz]); images and labels "
                f"are read from the same folder. Put {_FILES} there. {_ORDER}"
            )
        return images, labels
    raise FileNotFoundError(
        f"mnist: no {split} images file ({_names(split, 'images')[0]}[.gz]) in any of "
        f"{[str(p) for p in searched]}. Put {_FILES} into one of these folders, or "
        f"pass `root=` or set JAXFLOW_DATA to the folder holding them. {_ORDER}"
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

    Reads the standard IDX files, gzipped or not, from one place, chosen in this order
    of precedence:

    1. `root`, if given;
    2. else the folder in the `JAXFLOW_DATA` environment variable, if set and not empty;
    3. else `~/.cache/jaxflow` (`$XDG_CACHE_HOME/jaxflow`).

    Within that place, the folder itself is searched, then its `mnist/` subfolder; the
    images and the labels come from the same folder, the first that holds the images.
    Only the chosen place is searched: a misspelt `root` is an error, never a silent
    fall-back to the cache. Never downloads.

    **Arguments:**

    - `digits`: two distinct digits; the first is labelled $+1$, the second $-1$.
    - `split`: `"train"` (60,000 images) or `"test"` (10,000).
    - `n`: keep the first `n` images of the two digits in file order; all by default
        (digits 0 and 1: 12,665 training images).
    - `center`: subtract the mean image of the selected set ($x_i - \bar x$).
    - `root`: folder holding the files (or holding them in `mnist/`); it must exist.

    **Returns:**

    A `jaxflow.Dataset` with `X` of shape `(n, 784)`, pixels scaled to $[0, 1]$ before
    centring.

    **Raises:**

    `FileNotFoundError` if `root` (or `JAXFLOW_DATA`) is not an existing folder, if no
    searched folder holds the images (naming the folders searched and how to obtain the
    files), or if the folder holding the images lacks the labels (naming it and the
    missing file). `ValueError` for corrupt or truncated files, for bad arguments, and
    for `digits` that the labels do not both hold (naming the digits they hold).

    **Example:**

    ```python
    data = jf.datasets.mnist(digits=(3, 8), split="test", root="data/mnist")
    ```
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
    images_path, labels_path = _locate(split, root)
    images = read_idx(images_path, "images")
    labels = read_idx(labels_path, "labels")
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"mnist: images of shape {images.shape} and labels of shape "
            f"{labels.shape} do not match."
        )
    held = np.unique(labels).tolist()
    missing = [k for k in digits if k not in held]
    if missing:
        which = (
            f"neither {digits[0]} nor {digits[1]}"
            if len(missing) == 2
            else f"only one of them: no {missing[0]}"
        )
        raise ValueError(
            f"mnist: `digits` is {tuple(digits)!r}, but the labels in {labels_path} "
            f"hold {which}; they hold digits {held}. Choose two of those."
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
