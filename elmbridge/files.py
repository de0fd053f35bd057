"""Atomic file writes, so that a killed run never leaves a half-written file behind."""

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from elmbridge.errors import UserError

# mkstemp creates files readable by the owner only; a finished file should get the
# permissions any other new file would (0666 minus the umask), so that others sharing a
# dataset or cluster folder can read it. Read once: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    Write the file under the yielded name. If the block raises (or the process dies), the
    original `path` is untouched and the temporary file is removed when possible.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def user_writes(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError of writing `path` (full disk, read-only folder) into one line.

    The writes go through `atomic_path`, so the message can say the old file is intact.
    """
    path = Path(path)
    try:
        yield
    except OSError as err:
        raise UserError(
            f"could not write {path} ({err.strerror or err}); the previous {path.name}, if "
            "any, is intact: free space (or fix the folder's permissions) and run the same "
            "command again"
        ) from err


def _check_parents(path: Path, option: str) -> None:
    """The nearest existing ancestor of `path` must be a writable folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {path} lies under the file {parent}")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{option} {path}: the folder {parent} is not writable")
            return


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work, an output folder that is a file, lies under one, or
    cannot be written. Creates nothing, so a refused command leaves nothing behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; give a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{option} {path}: the folder is not writable")
        return path
    _check_parents(path, option)
    return path


def check_output_file(
    path: str | os.PathLike, option: str = "--out", suffixes: tuple[str, ...] = ()
) -> Path:
    """Refuse, before any work, an output file that is a folder, lies under a file, cannot
    be written, or (with `suffixes`) has another suffix. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give the file to write")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{option} {path}: the file to write must end in {' or '.join(suffixes)}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path} is read-only")
    _check_parents(path, option)
    return path


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8); a full disk is a one-line `UserError`."""
    with user_writes(path), atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV (columns: the union of their keys, first seen first), atomically."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (
        user_writes(path),
        atomic_path(path) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as fh,
    ):
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
