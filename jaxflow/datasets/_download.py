"""Fetching a file from a list of mirrors: checked before it gets its name, resumed
after an interruption. Standard library HTTP (urllib) and a tqdm bar on stderr."""

import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm


TIMEOUT = 30.0
_CHUNK = 1 << 16
_USER_AGENT = "jaxflow (Python urllib)"


def mirrors(variable: str, default: Sequence[str]) -> list[str]:
    """The base URLs in environment variable `variable` (separated by commas or
    whitespace), else `default`; each ends in one `/`."""
    given = [u for u in re.split(r"[,\s]+", os.environ.get(variable, "")) if u]
    return [u.rstrip("/") + "/" for u in given or default]


def _why(error: Exception) -> str:
    """A network error in a few words."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        error = error.reason if isinstance(error.reason, Exception) else error
    if isinstance(error, TimeoutError):
        return f"no answer within {TIMEOUT:g} s"
    return str(error) or type(error).__name__


def _transfer(url: str, part: Path, progress: bool) -> str | None:
    """Appends to `part` the rest of the file at `url` (all of it if `part` is absent
    or the server ignores the Range header). Returns None once the server's whole file
    is in `part`, else why not; an interrupted transfer leaves `part` to be resumed."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=TIMEOUT
        )
    except urllib.error.HTTPError as e:
        if e.code == 416:  # `part` is no prefix of the file: it is of no use
            part.unlink()
        return _why(e)
    except (OSError, http.client.HTTPException) as e:
        return _why(e)
    # 206: the rest, appended. 200 (or None, a file:// URL): the whole file, anew.
    if response.status != 206:
        offset = 0
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length and length.isdigit() else None
    bar = tqdm(
        total=total,
        initial=offset,
        desc=part.name.removesuffix(".part"),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not progress,
    )
    with response, bar, part.open("ab" if offset else "wb") as out:
        while True:
            # Only the network's errors are the mirror's fault; a full disk is raised.
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as e:
                return f"{_why(e)} after {out.tell()} bytes"
            if not chunk:
                break
            out.write(chunk)
            bar.update(len(chunk))
        # http.client ends a short body quietly when the peer closes the connection.
        if total is not None and out.tell() < total:
            return f"the connection closed after {out.tell()} of {total} bytes"
    return None


def _attempt(url: str, part: Path, check: Callable[[Path], str | None], progress):
    """One try at `url`: the transfer, then the check. None on success (`part` passed
    the check), else why not; a file that fails the check is deleted."""
    reason = _transfer(url, part, progress)
    if reason is None:
        reason = check(part)
        if reason is not None:
            part.unlink()
            reason += "; deleted it"
    return reason


def download(
    name: str,
    folder: Path,
    urls: Sequence[str],
    check: Callable[[Path], str | None],
    progress: bool = True,
) -> str | None:
    """Puts file `name` into `folder`, from the first of the base `urls` that serves
    it whole and passing `check` (which returns None for a good file, else what is
    wrong with it). The bytes go to `<name>.part`, renamed to `name` only after the
    check; a `.part` left by an interrupted call is resumed with an HTTP Range request.

    Returns None on success, else one line naming each URL tried and why it failed.
    """
    part = folder / f"{name}.part"
    tried = []
    for base in urls:
        url = base + name
        resumed = part.exists()
        reason = _attempt(url, part, check, progress)
        if reason is not None and resumed and not part.exists():
            # The kept start was not this file's (a stale one, or another mirror's
            # compression): start over here.
            reason = _attempt(url, part, check, progress)
        if reason is None:
            part.replace(folder / name)
            return None
        tried.append(f"{url} ({reason})")
    return "; ".join(tried)
