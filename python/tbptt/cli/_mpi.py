"""The commands under an MPI launcher: the world communicator when there are several ranks, and
each rank's share of the streams."""

from __future__ import annotations

import os
import sys

import numpy as np

# Set by MPI launchers to the number of ranks: MPICH / Intel MPI (and srun --mpi=pmi2), Open MPI,
# MVAPICH, Slurm.
_LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS")


def world():
    """MPI.COMM_WORLD when this process is one of several MPI ranks, else None (then mpi4py is
    not even imported, unless `python -m mpi4py` already did)."""
    launched = max(int(os.environ.get(name, "1") or 1) for name in _LAUNCHER_SIZES) > 1
    if not launched and "mpi4py.MPI" not in sys.modules:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(
            "started by an MPI launcher with several ranks, but mpi4py is not "
            "installed: pip install 'tbptt[mpi]'"
        ) from None
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def rank(comm) -> int:
    return 0 if comm is None else comm.Get_rank()


def quiet(*args, **kwargs) -> None:
    """print on ranks other than 0."""


def share(arrays: tuple, comm, what: str) -> tuple:
    """This rank's slice of the streams (axis 1) of (x, y, mask, resets): contiguous, as even as
    can be. With fewer streams than ranks, `what` = "validation" goes whole to every rank (the
    reduced loss is then the same), "training" is an error."""
    B, ranks = arrays[0].shape[1], comm.Get_size()
    if B < ranks:
        if what == "validation":
            return arrays
        raise ValueError(
            f"--batch {B} is smaller than the number of MPI ranks ({ranks}): every "
            f"rank needs a stream of its own"
        )
    mine = np.array_split(np.arange(B), ranks)[comm.Get_rank()]
    return tuple(
        None if a is None else np.ascontiguousarray(a[:, mine[0] : mine[-1] + 1]) for a in arrays
    )
