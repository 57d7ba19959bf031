"""tbptt's files: an .npz archive of plain arrays plus a JSON header, never pickled, and every
file written atomically.

Layout: `__header__` holds UTF-8 JSON {"format": "tbptt", "version": N, "kind": ..., ...}; every
other member is one array. `tbptt.checkpoint` puts models and trainers in it; the command line
and the sweep write their other files (histories, tables, pictures) with `atomic_write`.
An atomic write goes to a temporary file in the same folder, is fsync'ed, then `os.replace`d over
the target, so a crash midway leaves the previous file intact.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from typing import Any, BinaryIO, Callable, Dict, Tuple, Union, cast

import numpy as np

FORMAT = "tbptt"
VERSION = 1
HEADER = "__header__"

#: A file name: a str or an os.PathLike (pathlib.Path).
PathLike = Union[str, "os.PathLike[str]"]


_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it)
os.umask(_UMASK)


def atomic_write(path: PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write(file)` on a temporary file beside `path`, then move it into place."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it 0600; open() would honour the umask
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def save_arrays(path: PathLike, header: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
    """Write `arrays` (name -> array) and `header` (JSON) into an .npz file at `path`,
    atomically."""
    header = {"format": FORMAT, "version": VERSION, **header}
    blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)

    def write(f):
        # cast: numpy's stubs would match an array's name to savez's `allow_pickle: bool`
        np.savez(f, **cast(Dict[str, Any], {HEADER: blob}), **cast(Dict[str, Any], arrays))

    atomic_write(path, write)


def load_arrays(path: PathLike, kind: str) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """(header, arrays) of a file written by save_arrays; ValueError if it is not one we can read.
    A missing file is a FileNotFoundError (other OS errors, e.g. permissions, pass through too)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            damaged = archive.testzip()  # every member's CRC: catches flipped bytes, not just cuts
        if damaged is not None:
            raise ValueError(f"member {damaged!r} fails its CRC check")
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it is a single array, not an .npz archive")
        arrays = {name: archive[name] for name in archive.files}
    except Exception as error:  # noqa: BLE001 - zipfile, zlib, numpy format errors: "not our file"
        raise ValueError(
            f"{path} is not a readable tbptt file (truncated, damaged or foreign): "
            f"{type(error).__name__}: {error}"
        ) from None
    if HEADER not in arrays:
        raise ValueError(f"{path} is not a tbptt file: it has no {HEADER} member")
    try:
        header = json.loads(arrays.pop(HEADER).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} has a damaged header: {error}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a tbptt file (format "
            f"{header.get('format') if isinstance(header, dict) else header!r})"
        )
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path} has an invalid file format version {version!r}")
    if version > VERSION:
        raise ValueError(
            f"{path} was written by a newer tbptt (file format version "
            f"{version}, this tbptt reads up to {VERSION}): upgrade tbptt"
        )
    if header.get("kind") != kind:
        raise ValueError(f"{path} holds a {header.get('kind')!r}, not a {kind!r}")
    return header, arrays
