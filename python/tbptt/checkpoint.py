"""Model and trainer files: `model.save(path)` / `tbptt.load(path)`, `trainer.save(path)` /
`tbptt.load_trainer(path)`, in tbptt's file format (`tbptt._files`: an .npz archive of plain
arrays plus a JSON header, written atomically, never pickled).

A model file's header is {"format": "tbptt", "version": N, "kind": "model", "config": {...}};
every other member is one parameter under its torch name. The config names the model's cell
("cell": "lstm" | "gru" | "rnn", and "nonlinearity" for an RNN); a config without one, written
before GRU and RNN existed, is an LSTM's. A trainer file holds the model's parameters under
"model/", the engine's state under "engine/", and the trainer's settings in its header.

This module depends on the model and the trainer, never the reverse: they write their own files
with `tbptt._files`, and this module reads them back.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ._files import FORMAT, HEADER, VERSION, PathLike, atomic_write, load_arrays, save_arrays
from ._mpi import Group, rank_path
from .model import Recurrent, from_config
from .trainer import Trainer

__all__ = [
    "load",
    "load_trainer",
    "save_model",
    "save_trainer",
    "atomic_write",
    "load_arrays",
    "save_arrays",
    "FORMAT",
    "HEADER",
    "VERSION",
]


def _damaged(path, error):
    return ValueError(
        f"{path} has a damaged or inconsistent header/contents: {type(error).__name__}: {error}"
    )


def save_model(model: Recurrent, path: PathLike) -> None:
    """`model.save(path)`."""
    model.save(path)


def load(path: PathLike) -> Recurrent:
    """Read a model written by `model.save(path)`: a tbptt.LSTM, GRU or RNN as it was saved."""
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
    trainer._save(path, extra)


def load_trainer(path: PathLike, comm: Any = None, backend: Optional[str] = None) -> Trainer:
    """A Trainer (and its model) exactly as `trainer.save(path)` left it.

    backend: "cpp" or "numpy" to resume with that backend, whichever wrote the file (the two
    share one snapshot schema and agree to rounding); None: the one that wrote it. Files of
    older versions are converted to the current schema first (`tbptt.engines.old_files`); a C++ file
    from before the engine kept its pending steps' targets, saved with pending steps, resumes
    with backend "cpp" only.

    comm: for a trainer saved by data-parallel ranks (Trainer(comm=...).save(path)): every rank
    calls this with the same `path` and reads its own file (see Trainer.save); the number of ranks
    must be the one that saved. Without comm, rank 0's file of such a run loads as a one-process
    trainer of rank 0's streams (say, to look at the model)."""
    rank, ranks = 0, 1
    if comm is not None:
        group = Group(comm)
        rank, ranks = group.rank, group.size
        path = rank_path(path, rank)
        error: Optional[Exception]
        try:  # a missing or damaged file on one rank raises on every rank
            (header, arrays), error = load_arrays(path, "trainer"), None
        except FileNotFoundError:
            error = ValueError(
                f"{path} does not exist: was the trainer saved by fewer ranks? "
                f"Resume with the same number of ranks"
            )
        except (OSError, ValueError) as caught:
            error = caught
        group.check_all(error, f"load_trainer({path!r})")
    else:
        header, arrays = load_arrays(path, "trainer")
    saved_by = header.get("ranks", 1)
    if comm is not None and (saved_by != ranks or header.get("rank", 0) != rank):
        raise ValueError(
            f"{path} was saved by rank {header.get('rank', 0)} of {saved_by}, but "
            f"this is rank {rank} of {ranks}: resume with the same number of ranks"
        )
    try:
        model = from_config(header["model"])
        settings = header["trainer"]
        num_streams = settings["num_streams"]
    except (KeyError, TypeError, ValueError) as error:
        raise _damaged(path, error) from None
    model.load_state_dict(
        {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
    )
    try:
        trainer = Trainer._from_settings(model, settings, backend=backend, comm=comm)
    except (KeyError, TypeError, ValueError) as error:
        raise _damaged(path, error) from None
    trainer._restore_engine(
        {k[len("engine/") :]: v for k, v in arrays.items() if k.startswith("engine/")},
        settings["backend"],
    )
    state = trainer.engine.state()
    engine_streams = None if state is None else state[0].shape[1]
    if engine_streams != num_streams:
        raise ValueError(
            f"{path}: the header says {num_streams} streams, the engine state holds "
            f"{engine_streams}"
        )
    return trainer
