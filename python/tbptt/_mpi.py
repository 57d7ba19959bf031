"""Data-parallel training over MPI (docs/semantics.md §7): the collective steps a Trainer takes with
a `comm`.

Every rank runs the same program on its own streams. Where ranks must agree, one collective call
decides for all of them, so that a fault on one rank becomes the same exception on every rank
instead of a rank waiting forever in a call the others never make:

- construction: the ranks check that they build the same trainer, then rank 0's parameters are
  broadcast;
- every `train` call: the ranks agree that every input was valid and that T is the same;
- every update: one in-place all-reduce of the engine's buffer (gradient, Σ w·loss, Σ w), between
  backward and apply; apply then sees the same numbers everywhere, so a divergence is seen
  everywhere;
- `fit`: one small all-reduce per block decides whether to stop, and why.

mpi4py is imported here only, and only when a comm is given: tbptt works without it.
"""

from __future__ import annotations

import os

import numpy as np

# fit's reasons to stop, in priority order: when ranks differ, the later one wins
STOP_REASONS = ("", "max_updates", "max_time", "callback", "interrupted")


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError("comm= needs mpi4py: pip install 'tbptt[mpi]'") from error
    return MPI


class Group:
    """The ranks of one data-parallel trainer: `comm` (an mpi4py communicator) and its helpers."""

    def __init__(self, comm):
        MPI = _mpi()
        if not isinstance(comm, MPI.Comm):
            raise TypeError(
                f"comm must be an mpi4py communicator (e.g. MPI.COMM_WORLD), got "
                f"{type(comm).__name__}"
            )
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    # ---- construction ------------------------------------------------------------------------
    def check_same(self, context, **values) -> None:
        """ValueError on every rank unless every rank passed the same integers."""
        names = sorted(values)
        mine = np.array([int(values[name]) for name in names], dtype=np.int64)
        low, high = mine.copy(), mine.copy()
        self.comm.Allreduce(self.MPI.IN_PLACE, low, op=self.MPI.MIN)
        self.comm.Allreduce(self.MPI.IN_PLACE, high, op=self.MPI.MAX)
        differ = [
            f"{name} ({low[i]} .. {high[i]})" for i, name in enumerate(names) if low[i] != high[i]
        ]
        if differ:
            raise ValueError(
                f"{context}: the ranks passed different {', '.join(differ)}; every "
                f"rank must pass the same"
            )

    def broadcast(self, array) -> None:
        """Rank 0's values of `array` on every rank, in place."""
        self.comm.Bcast(array, root=0)

    def attach(self, engine) -> None:
        """Make the engine all-reduce its update buffer (a view of its own memory: no copies, no
        pickling) between backward and apply of every update."""
        buffer = engine.reduce_buffer()
        comm, in_place = self.comm, self.MPI.IN_PLACE
        engine.set_reduce(lambda: comm.Allreduce(in_place, buffer))

    def check_all(self, error, what) -> None:
        """Raise on every rank if any rank failed at `what` (`error`: this rank's exception, or
        None): the failing rank raises its own, the others a ValueError. One all-reduce."""
        if self.any(error is not None):
            if error is not None:
                raise error
            raise ValueError(f"{what} failed on another rank (its error says why)")

    # ---- train -------------------------------------------------------------------------------
    def agree_on_call(self, T, error) -> None:
        """Before a train call's first update: raise on every rank if any rank's input was invalid
        (`error`, that rank's exception, else None) or the ranks' T differ. One all-reduce."""
        flags = np.array(
            [T if T is not None else -1, -(T if T is not None else -1), error is not None],
            dtype=np.int64,
        )
        self.comm.Allreduce(self.MPI.IN_PLACE, flags, op=self.MPI.MAX)
        if error is not None:
            raise error
        if flags[2]:
            raise ValueError(
                "train: another rank's input was invalid (its error says why); no rank trained"
            )
        if flags[0] != -flags[1]:
            raise ValueError(
                f"train: every rank must pass the same number of steps T (x.shape[0]); "
                f"this rank passed T = {T}, others between {-flags[1]} and {flags[0]}"
            )

    def stream_offset(self, B: int) -> int:
        """The index of this rank's first stream when every rank's B streams are taken as one
        batch, rank by rank (the dropout masks' stream index). One exclusive scan."""
        return int(self.comm.exscan(int(B)) or 0)

    # ---- fit ---------------------------------------------------------------------------------
    def stop_reason(self, reason) -> str:
        """The reason to stop that wins over all ranks ("" to go on): one all-reduce."""
        code = np.array([STOP_REASONS.index(reason or "")], dtype=np.int64)
        self.comm.Allreduce(self.MPI.IN_PLACE, code, op=self.MPI.MAX)
        return STOP_REASONS[int(code[0])]

    def any(self, flag) -> bool:
        return bool(self.comm.allreduce(bool(flag), op=self.MPI.LOR))

    def sum(self, values) -> np.ndarray:
        """The float64 sums over ranks of `values`."""
        values = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, values)
        return values

    def minimum(self, value: int) -> int:
        return int(self.comm.allreduce(int(value), op=self.MPI.MIN))

    def maximum(self, value: float) -> float:
        return float(self.comm.allreduce(float(value), op=self.MPI.MAX))

    def rank_path(self, path) -> str:
        """Where this rank keeps its trainer file: `path` on rank 0, `stem.rank<r><suffix>` on
        rank r > 0 (each rank's streams have their own state)."""
        return rank_path(path, self.rank)


def rank_path(path, rank) -> str:
    path = os.fspath(path)
    if rank == 0:
        return path
    root, suffix = os.path.splitext(path)
    return f"{root}.rank{rank}{suffix}"
