"""The user cache and verified downloads.

Data the toolkit needs but does not ship (task data, newer releases; Hay's morphology and
the released models are packaged) is fetched once into a cache and checked against a
known sha256. Offline, or when a
checksum is wrong, the error says where to put the file by hand.
"""

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from elmbridge.errors import MissingDataError, UserError
from elmbridge.files import atomic_path

CACHE_ENV = "ELMBRIDGE_CACHE"


def cache_dir(*parts: str) -> Path:
    """The toolkit's cache folder (or a sub-folder of it), created on demand.

    `$ELMBRIDGE_CACHE` if set, else `$XDG_CACHE_HOME/elmbridge`, else `~/.cache/elmbridge`.
    """
    root = os.environ.get(CACHE_ENV)
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
        root = os.path.join(xdg, "elmbridge")
    path = Path(root).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str | os.PathLike, sha256: str | None) -> bool:
    """True if `path` exists and (when `sha256` is given) has that checksum."""
    path = Path(path)
    return path.is_file() and (sha256 is None or sha256_file(path) == sha256)


def fetch(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None,
    *,
    what: str,
    timeout_s: float = 30.0,
) -> Path:
    """Return `dest`, downloading `url` there first unless a verified copy exists.

    The download goes to a temporary file, is checked against `sha256` (when known) and
    only then moved into place, so a killed download leaves nothing behind.

    Raises:
        MissingDataError: offline, the server refused, or the checksum did not match.
    """
    dest = Path(dest)
    if verify(dest, sha256):
        return dest
    hint = f"Download it by hand from {url} and save it as {dest}"
    if sha256:
        hint += f" (sha256 {sha256})"
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(
                    total=total, unit="B", unit_scale=True, desc=f"downloading {what}"
                ) as bar:
                    while block := response.read(1 << 16):
                        out.write(block)
                        bar.update(len(block))
            if sha256 is not None and (got := sha256_file(tmp)) != sha256:
                raise MissingDataError(
                    f"{what}: the download from {url} has sha256 {got}, expected {sha256}. "
                    f"The file may have changed upstream or the transfer was corrupted. {hint}."
                )
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        if isinstance(err, MissingDataError):
            raise
        raise MissingDataError(
            f"{what} is not available offline and the download failed ({err}). {hint}."
        ) from err
    return dest


def copy_verified(
    src: str | os.PathLike, dest: str | os.PathLike, sha256: str | None, *, what: str
) -> Path:
    """Copy a local file into the cache after checking its checksum."""
    src = Path(src)
    if not verify(src, sha256):
        raise UserError(f"{what}: {src} is missing or does not have sha256 {sha256}.")
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dest)
