"""Model files: an .npz archive of plain arrays plus a JSON header, written atomically, never pickled.

Layout: `__header__` holds UTF-8 JSON {"format": "tbptt", "version": N, "kind": "model",
"config": {...}}; every other member is one parameter under its torch name. The config names the
model's cell ("cell": "lstm" | "gru" | "rnn", and "nonlinearity" for an RNN); a config without one,
written before GRU and RNN existed, is an LSTM's.
An atomic write goes to a temporary file in the same folder, is fsync'ed, then `os.replace`d over
the target, so a crash midway leaves the previous file intact.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Dict, Optional, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # imported where used: model and trainer import this module
    from .model import Recurrent
    from .trainer import Trainer

#: A file name: a str or an os.PathLike (pathlib.Path).
PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "tbptt"
VERSION = 1
HEADER = "__header__"


_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it)
os.umask(_UMASK)


def atomic_write(path: PathLike, write: Callable[[BinaryIO], object]) -> None:
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
    header = {"format": FORMAT, "version": VERSION, **header}
    blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)

    def write(f):
        np.savez(f, **{HEADER: blob}, **arrays)

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
    except Exception as error:  # zipfile, zlib, numpy format errors: all mean "not our file"
        raise ValueError(f"{path} is not a readable tbptt file (truncated, damaged or foreign): "
                         f"{type(error).__name__}: {error}") from None
    if HEADER not in arrays:
        raise ValueError(f"{path} is not a tbptt file: it has no {HEADER} member")
    try:
        header = json.loads(arrays.pop(HEADER).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} has a damaged header: {error}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tbptt file (format "
                         f"{header.get('format') if isinstance(header, dict) else header!r})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path} has an invalid file format version {version!r}")
    if version > VERSION:
        raise ValueError(f"{path} was written by a newer tbptt (file format version "
                         f"{version}, this tbptt reads up to {VERSION}): upgrade tbptt")
    if header.get("kind") != kind:
        raise ValueError(f"{path} holds a {header.get('kind')!r}, not a {kind!r}")
    return header, arrays


def _damaged(path, error):
    return ValueError(f"{path} has a damaged or inconsistent header/contents: "
                      f"{type(error).__name__}: {error}")


def save_model(model: Recurrent, path: PathLike) -> None:
    save_arrays(path, {"kind": "model", "config": model.config()}, model.state_dict())


def load(path: PathLike) -> Recurrent:
    """Read a model written by `model.save(path)`: a tbptt.LSTM, GRU or RNN as it was saved."""
    from .model import from_config

    header, arrays = load_arrays(path, "model")
    try:
        model = from_config(header["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise _damaged(path, error) from None
    model.load_state_dict(arrays)  # ValueError naming a missing / misshapen parameter
    return model


def save_trainer(trainer: Trainer, path: PathLike, extra: Optional[Dict[str, Any]] = None) -> None:
    """Everything training depends on: the model, the optimiser state, the carried state and the
    window of activations, the pending steps and the update schedule. Resuming from it gives the
    same parameters as never having stopped. `extra`: more JSON for the header (`tbptt train`
    keeps its run's settings and position there); `load_arrays(path, "trainer")` reads it.
    A data-parallel trainer (comm=...) writes one file per rank (see Trainer.save)."""
    group = trainer._group
    if group is not None:
        path = group.rank_path(path)
        extra = {**(extra or {}), "rank": group.rank, "ranks": group.size}
    header = {**(extra or {}),
        "kind": "trainer",
        "model": trainer.model.config(),
        "trainer": {"k1": trainer.k1, "k2": trainer.k2, "loss": trainer.loss,
                    "optimizer": trainer.optimizer.config(), "clip_norm": trainer.clip_norm,
                    "backend": trainer.backend, "num_streams": trainer.num_streams,
                    "seed": trainer.seed},
    }
    arrays = {f"model/{name}": value for name, value in trainer.model.state_dict().items()}
    arrays.update({f"engine/{key}": np.asarray(value)
                   for key, value in trainer.engine.snapshot().items()})
    save_arrays(path, header, arrays)


def load_trainer(path: PathLike, comm: Any = None, backend: Optional[str] = None) -> Trainer:
    """A Trainer (and its model) exactly as `trainer.save(path)` left it.

    backend: "cpp" or "numpy" to resume with that backend, whichever wrote the file (the two
    share one snapshot schema and agree to rounding); None: the one that wrote it. Files written
    before the shared schema resume with the backend that wrote them only.

    comm: for a trainer saved by data-parallel ranks (Trainer(comm=...).save(path)): every rank
    calls this with the same `path` and reads its own file (see Trainer.save); the number of ranks
    must be the one that saved. Without comm, rank 0's file of such a run loads as a one-process
    trainer of rank 0's streams (say, to look at the model)."""
    from .model import from_config as model_from_config
    from .optim import from_config
    from .trainer import Trainer

    rank, ranks = 0, 1
    if comm is not None:
        from ._mpi import Group, rank_path
        group = Group(comm)
        rank, ranks = group.rank, group.size
        path = rank_path(path, rank)
        error: Optional[Exception]
        try:  # a missing or damaged file on one rank raises on every rank
            (header, arrays), error = load_arrays(path, "trainer"), None
        except FileNotFoundError:
            error = ValueError(f"{path} does not exist: was the trainer saved by fewer ranks? "
                               f"Resume with the same number of ranks")
        except (OSError, ValueError) as caught:
            error = caught
        group.check_all(error, f"load_trainer({path!r})")
    else:
        header, arrays = load_arrays(path, "trainer")
    saved_by = header.get("ranks", 1)
    if comm is not None and (saved_by != ranks or header.get("rank", 0) != rank):
        raise ValueError(f"{path} was saved by rank {header.get('rank', 0)} of {saved_by}, but "
                         f"this is rank {rank} of {ranks}: resume with the same number of ranks")
    try:
        model = model_from_config(header["model"])
        settings = header["trainer"]
        num_streams = settings["num_streams"]
        optimizer = from_config(settings["optimizer"])
    except (KeyError, TypeError, ValueError) as error:
        raise _damaged(path, error) from None
    model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
    try:
        trainer = Trainer(model, settings["k1"], settings["k2"], loss=settings["loss"],
                          optimizer=optimizer, clip_norm=settings["clip_norm"],
                          backend=settings["backend"] if backend is None else backend, comm=comm,
                          seed=settings.get("seed", 0))  # files before dropout: no seed
    except (KeyError, TypeError, ValueError) as error:
        raise _damaged(path, error) from None
    trainer.num_streams = num_streams
    _restore_engine(trainer, {k[len("engine/"):]: v for k, v in arrays.items()
                              if k.startswith("engine/")}, settings["backend"])
    state = trainer.engine.state()
    engine_streams = None if state is None else state[0].shape[1]
    if engine_streams != num_streams:
        raise ValueError(f"{path}: the header says {num_streams} streams, the engine state holds "
                         f"{engine_streams}")
    return trainer


def _restore_engine(trainer: Trainer, snapshot: Dict[str, np.ndarray], written_by: str) -> None:
    """Restore a file's engine snapshot into `trainer`'s engine (ValueError if it does not fit).
    The shared schema suits either backend; a file older than it holds the entries of the backend
    that wrote it, which that backend translates first when the trainer runs the other."""
    from ._snapshot import is_shared
    from .trainer import Trainer

    if trainer.backend != written_by and not is_shared(snapshot):
        writer = Trainer(trainer.model, trainer.k1, trainer.k2, loss=trainer.loss,
                         optimizer=trainer.optimizer, clip_norm=trainer.clip_norm,
                         backend=written_by, seed=trainer.seed)
        writer.engine.restore(snapshot)
        snapshot = writer.engine.snapshot()
    trainer.engine.restore(snapshot)
