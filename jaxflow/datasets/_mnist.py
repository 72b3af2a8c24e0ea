import gzip
import hashlib
import os
import warnings
import zlib
from functools import partial
from pathlib import Path

import numpy as np

from .._cache import default_cache_dir
from .._dataset import Dataset
from ._download import download as _download, mirrors as _mirrors


_MAGIC = {"images": 2051, "labels": 2049}
_CENTERS = ("pair", "all")
_PREFIX = {"train": "train", "test": "t10k"}
_FILES = (
    "the four standard IDX files (train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz), "
    "e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/"
)
_ORDER = (
    "`root=` is searched alone if given, else JAXFLOW_DATA alone if set, else "
    "~/.cache/jaxflow ($XDG_CACHE_HOME/jaxflow). jaxflow downloads missing files only "
    "with `download=True` (the default)."
)
_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_MIRROR_VARIABLE = "JAXFLOW_MNIST_MIRROR"
# SHA-256 and size of each file's uncompressed content. The mirrors' gzip files differ
# byte for byte (recompressed copies circulate), their contents do not: these are the
# contents whose published MD5s are 6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e...
_CONTENTS = {
    "train-images-idx3-ubyte.gz": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        47_040_016,
    ),
    "train-labels-idx1-ubyte.gz": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        60_008,
    ),
    "t10k-images-idx3-ubyte.gz": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        7_840_016,
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        10_008,
    ),
}


def _place(root: str | os.PathLike | None, download: bool) -> tuple[list[Path], Path]:
    """The folders to search, in order (one base folder and its `mnist/` subfolder),
    and the folder to download into."""
    if root is not None:
        given, name = "`root`", os.fspath(root)
    elif os.environ.get("JAXFLOW_DATA"):
        given, name = "JAXFLOW_DATA", os.environ["JAXFLOW_DATA"]
    else:
        base = default_cache_dir()
        return [base, base / "mnist"], base / "mnist"
    # A misspelt root must not fall back to another folder: say so instead (or, when
    # downloading, create it). An empty one is no folder either (Path("") is the
    # working directory).
    path = Path(name)
    if not name or not (path.is_dir() or (download and not path.exists())):
        raise FileNotFoundError(
            f"mnist: {given} ({str(name)!r}) is not an existing folder. Pass the "
            f"folder holding {_FILES}. {_ORDER}"
        )
    return [path, path / "mnist"], path


def _names(split: str, kind: str) -> list[str]:
    prefix, dims = _PREFIX[split], {"images": "idx3", "labels": "idx1"}[kind]
    return [f"{prefix}-{kind}-{dims}-ubyte", f"{prefix}-{kind}.{dims}-ubyte"]


def _find(folder: Path, split: str, kind: str) -> Path | None:
    for name in _names(split, kind):
        for path in (folder / f"{name}.gz", folder / name):
            if path.is_file():
                return path
    return None


def _search(split: str, folders: list[Path]) -> tuple[Path, Path]:
    """The images and labels files of `split`, both from the first folder that holds
    the images."""
    for folder in folders:
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
        f"{[str(p) for p in folders]}. Put {_FILES} into one of these folders, or "
        f"pass `root=` or set JAXFLOW_DATA to the folder holding them. {_ORDER}"
    )


def _holds(split: str, folder: Path) -> bool:
    return all(_find(folder, split, kind) for kind in ("images", "labels"))


def _check(path: Path, name: str) -> str | None:
    """None if the gzip file at `path` holds the content of MNIST file `name`, else
    what is wrong."""
    expected, size = _CONTENTS[name]
    digest, read = hashlib.sha256(), 0
    try:
        with gzip.open(path) as f:
            # In chunks, and no further than the true size: a bad file costs no memory.
            while (chunk := f.read(1 << 20)) and read <= size:
                digest.update(chunk)
                read += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        return f"not a valid gzip file ({e})"
    if digest.hexdigest() != expected:
        return (
            f"SHA-256 of its uncompressed content {digest.hexdigest()}, expected "
            f"{expected}"
        )
    return None


def _fetch(split: str, searched: list[Path], folder: Path, progress: bool) -> None:
    """Downloads into `folder` the files of `split` that it lacks, then those of the
    other split if no searched folder holds that one (best effort: a warning if not)."""
    other = "test" if split == "train" else "train"
    wanted = [(split, kind) for kind in ("images", "labels")]
    if not any(_holds(other, f) for f in searched):
        wanted += [(other, kind) for kind in ("images", "labels")]
    urls = _mirrors(_MIRROR_VARIABLE, _MIRRORS)
    folder.mkdir(parents=True, exist_ok=True)
    for which, kind in wanted:
        if _find(folder, which, kind) is not None:
            continue
        name = f"{_names(which, kind)[0]}.gz"
        failure = _download(name, folder, urls, partial(_check, name=name), progress)
        if failure is None:
            continue
        if which == split:
            raise FileNotFoundError(
                f"mnist: could not download {name}. Tried: {failure}. Put the files "
                f"by hand into {folder}: {_FILES}. Or set {_MIRROR_VARIABLE} to base "
                "URLs (separated by commas) that serve them, or pass `root=` or set "
                "JAXFLOW_DATA to a folder that holds them."
            )
        warnings.warn(
            f"mnist: could not download {name} (the {other} split, fetched ahead of "
            f"use) into {folder}; the {split} split is there. Tried: {failure}.",
            stacklevel=4,
        )
        return


def _locate(split: str, root, download: bool, progress: bool) -> tuple[Path, Path]:
    """The images and labels files of `split`, downloaded first if `download` and
    the place lacks them."""
    searched, folder = _place(root, download)
    try:
        return _search(split, searched)
    except FileNotFoundError:
        if not download:
            raise
    _fetch(split, searched, folder, progress)
    return _search(split, [folder])


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
    digits: tuple[int, int] | None = (0, 1),
    split: str = "train",
    n: int | None = None,
    center: bool | str = True,
    root: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
    images: int | None = None,
) -> Dataset:
    r"""Two MNIST digits as a binary data set (Min, Mallada, Vidal 2024, Fig. 2), or
    all ten as a 10-class one (`digits=None`).

    Reads the standard IDX files, gzipped or not, from one place, chosen in this order
    of precedence:

    1. `root`, if given;
    2. else the folder in the `JAXFLOW_DATA` environment variable, if set and not empty;
    3. else `~/.cache/jaxflow` (`$XDG_CACHE_HOME/jaxflow`).

    Within that place, the folder itself is searched, then its `mnist/` subfolder; the
    images and the labels come from the same folder, the first that holds the images.
    Only the chosen place is searched: a misspelt `root` is an error (or, with
    `download=True`, a new folder), never a silent fall-back to the cache.

    With `download=True`, if the place lacks the images or labels of `split`, they
    are downloaded into it: into `root`, else `JAXFLOW_DATA`, else
    `~/.cache/jaxflow/mnist` (`$XDG_CACHE_HOME/jaxflow/mnist`), created if need be.
    The other split's two files come along (so that it works offline later) unless
    the place already holds them; all four files are about 11 MB. Each file is fetched
    from the first mirror that serves it whole and checked against the SHA-256 of its
    uncompressed content (the mirrors' gzip files may differ byte for byte; their
    contents may not). The mirrors, tried in order, are
    `https://ossci-datasets.s3.amazonaws.com/mnist/`,
    `https://storage.googleapis.com/cvdf-datasets/mnist/` and
    `http://yann.lecun.com/exdb/mnist/`; the environment variable
    `JAXFLOW_MNIST_MIRROR` replaces them with its base URLs (separated by commas or
    whitespace; `file://` URLs work too). A file is written to `<name>.part` and
    renamed only once it passes the check; a transfer cut short leaves the `.part`,
    and the next call asks the server for the rest (an HTTP Range request). A file
    that fails the check is deleted and the next mirror tried.

    **Arguments:**

    - `digits`: two distinct digits; the first is labelled $+1$, the second $-1$
        (float labels, for `jaxflow.losses.logistic` and a scalar-output model). Or
        `None`: every image, labelled by its digit, integer labels 0-9 with
        `classes=10` (for `jaxflow.losses.cross_entropy` and a 10-output model).
    - `split`: `"train"` (60,000 images) or `"test"` (10,000).
    - `n`: keep the first `n` images of the two digits (of all, with `digits=None`)
        in file order; all by default (digits 0 and 1: 12,665 training images).
    - `center`: which mean image $\bar x$ to subtract ($x_i - \bar x$):
        - `True` or `"pair"` (default): the mean of the selected images (the two digits,
            or all ten, after `n`);
        - `"all"`: the mean of all images read, every digit (the first `images` of the
            split, or all of it), as in the later public code of Min et al.
            (hanchmin/pReLU_ICML24);
        - `False`: none.
    - `root`: folder holding the files (or holding them in `mnist/`); with
        `download=False` it must exist.
    - `download`: download the files the place lacks (see above). With `False`,
        nothing is downloaded and missing files are an error.
    - `progress`: show a progress bar on stderr for each file downloaded.
    - `images`: read only the first `images` images of the split's file, before the
        digits are selected; all by default. `images=50000` with `split="train"` is the
        training split of the classic `mnist.pkl.gz` (the first 50,000 images of the
        standard training file), which Min et al.'s later code loads.

    **Returns:**

    A `jaxflow.Dataset` with `X` of shape `(n, 784)`, pixels scaled to $[0, 1]$ before
    centring (MLPGradientFlow.jl's MNIST example: `center=False`).

    **Raises:**

    `FileNotFoundError` if `root` (or `JAXFLOW_DATA`) is not an existing folder (with
    `download=True`: if it is empty or names a file), if a file of `split` could not
    be downloaded (naming each mirror tried and why it failed: unreachable, or the
    expected and received SHA-256, and the folder to put the files in by hand), or,
    with `download=False`, if no searched folder holds the images (naming the folders
    searched and how to obtain the files) or the folder holding the images lacks the
    labels (naming it and the missing file). `ValueError` for corrupt or truncated
    files, for bad arguments, and for `digits` that the labels do not both hold
    (naming the digits they hold). Only a warning if the other split's files, fetched
    ahead of use, could not be downloaded.

    **Example:**

    ```python
    data = jf.datasets.mnist(digits=(3, 8), split="test")  # downloads on first use
    offline = jf.datasets.mnist(root="data/mnist", download=False)
    # mnist.pkl.gz's training split, centred by the mean of all its digits
    later = jf.datasets.mnist(images=50000, center="all")
    # ten classes, pixels / 255, the first 10,000 training images
    ten = jf.datasets.mnist(digits=None, n=10_000, center=False)
    ```
    """
    for name, value in (("download", download), ("progress", progress)):
        if not isinstance(value, bool):
            raise ValueError(
                f"mnist: `{name}` must be a bool (True or False), got {value!r}."
            )
    if digits is not None and (
        not isinstance(digits, tuple | list)
        or len(digits) != 2
        or digits[0] == digits[1]
        or not all(isinstance(k, int) and 0 <= k <= 9 for k in digits)
    ):
        raise ValueError(
            f"mnist: `digits` must be two distinct ints in 0..9, or None (all ten), "
            f"got {digits!r}."
        )
    if split not in _PREFIX:
        raise ValueError(f"mnist: `split` must be 'train' or 'test', got {split!r}.")
    # Not `center in (True, False, ...)`: 0 and 1 compare equal to False and True.
    if not (isinstance(center, bool) or center in _CENTERS):
        raise ValueError(
            f"mnist: `center` must be True, False, 'pair' or 'all', got {center!r}."
        )
    if images is not None and (
        isinstance(images, bool) or not isinstance(images, int) or images < 1
    ):
        raise ValueError(
            f"mnist: `images` must be None (all) or a positive int, got {images!r}."
        )
    images_path, labels_path = _locate(split, root, download, progress)
    pixels = read_idx(images_path, "images")
    labels = read_idx(labels_path, "labels")
    if pixels.ndim != 3 or labels.ndim != 1 or pixels.shape[0] != labels.shape[0]:
        raise ValueError(
            f"mnist: images of shape {pixels.shape} and labels of shape "
            f"{labels.shape} do not match."
        )
    if images is not None:
        if images > labels.size:
            raise ValueError(
                f"mnist: `images` must be at most {labels.size} (the {split} split "
                f"holds {labels.size} images), got {images!r}."
            )
        pixels, labels = pixels[:images], labels[:images]
    held = np.unique(labels).tolist()
    missing = [k for k in digits or () if k not in held]
    if missing:
        which = (
            f"neither {digits[0]} nor {digits[1]}"
            if len(missing) == 2
            else f"only one of them: no {missing[0]}"
        )
        raise ValueError(
            f"mnist: `digits` is {tuple(digits)!r}, but the labels in {labels_path} "
            + ("" if images is None else f"(its first {images}) ")
            + f"hold {which}; they hold digits {held}. Choose two of those."
        )
    if digits is None:
        keep = np.arange(labels.size)
    else:
        keep = np.flatnonzero((labels == digits[0]) | (labels == digits[1]))
    if n is not None:
        if not isinstance(n, int) or not 1 <= n <= keep.size:
            which = "all digits" if digits is None else f"digits {digits}"
            raise ValueError(
                f"mnist: `n` must be an int in 1..{keep.size} for {which}, got {n!r}."
            )
        keep = keep[:n]
    X = pixels[keep].reshape(keep.size, -1).astype(np.float64) / 255.0
    if center == "all":
        flat = pixels.reshape(pixels.shape[0], -1)
        X = X - flat.mean(axis=0, dtype=np.float64, keepdims=True) / 255.0
    elif center:  # True or "pair"
        X = X - X.mean(axis=0, keepdims=True)
    if digits is None:
        return Dataset(X, labels[keep].astype(np.int32), classes=10)
    y = np.where(labels[keep] == digits[0], 1.0, -1.0)
    return Dataset(X, y)
