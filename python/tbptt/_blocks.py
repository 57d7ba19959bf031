"""Where the training calls fall: blocks of time steps over passes of the data, and the state
resets of a reset policy. One schedule for `Trainer.fit` (epochs of `block` steps) and for the
sweep (a budget of steps with a learning curve's points), so that both reset alike.

Steps are counted globally, from step 0 of the first pass (epoch 0): the step of data position
`s` in pass `p` is `p * T + s`. A reset policy "N" zeroes the state at global steps 0, N, 2N, ...
(across pass boundaries); "epoch" at the start of every pass; "never" only where the data's own
resets say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple, Union

import numpy as np

from . import _checks

Policy = Union[str, int]


class Block(NamedTuple):
    """One training call: data steps [start, end) of pass `epoch`; `step` is the global step of
    `start` (epoch * T + start)."""

    epoch: int
    start: int
    end: int
    step: int


def reset_every(policy: Policy) -> int | None:
    """The N of a reset policy N; None for "never" and "epoch". ValueError for anything else."""
    if isinstance(policy, str) and policy in ("never", "epoch"):
        return None
    if isinstance(policy, bool) or not isinstance(policy, (int, np.integer)):
        raise ValueError(f"reset must be 'never', 'epoch' or an int N >= 1, got {policy!r}")
    return _checks.positive_int("reset", policy)


class Resets:
    """A reset policy applied to blocks: when to zero the state, on top of the data's resets."""

    def __init__(self, policy: Policy, data_resets: np.ndarray | None = None):
        self.policy = policy
        self.every = reset_every(policy)
        self.data = data_resets  # (T, B) or None: the data's own episode boundaries

    def at_pass_start(self, block: Block) -> bool:
        """True if the whole state is zeroed before `block` (policy "epoch", a pass begins)."""
        return self.policy == "epoch" and block.start == 0

    def of(self, block: Block, B: int) -> np.ndarray | None:
        """The (end - start, B) resets of `block`'s train call, or None when there are none."""
        s, e = block.start, block.end
        resets = None if self.data is None else self.data[s:e]
        if self.every is None:
            return resets
        due = np.repeat(((block.step + np.arange(e - s)) % self.every == 0)[:, None], B, 1)
        return due if resets is None else due | (resets != 0)


def blocks(
    T: int, begin: int, end: int, grid: int | None = None, stops: Iterable[int] = ()
) -> Iterator[Block]:
    """The blocks covering global steps [begin, end) of data of T steps, used pass after pass.

    A block ends at the end of a pass, on a grid of `grid` steps from each pass's start (so that
    a fit resumed between two blocks makes the same calls as one that never stopped), and at each
    global step of `stops` (the points of a learning curve)."""
    cuts = sorted(set(stops))
    step = begin
    while step < end:
        epoch, s = divmod(step, T)
        e = T if grid is None else min(T, (s // grid + 1) * grid)
        e = min(e, end - epoch * T)
        later = [c for c in cuts if step < c < epoch * T + e]
        if later:
            e = later[0] - epoch * T
        yield Block(epoch, s, e, step)
        step = epoch * T + e


def position(block: Block, T: int) -> tuple:
    """(epoch, step) where training goes on after `block`: the next pass's first step when the
    block ends its pass."""
    return (block.epoch + 1, 0) if block.end >= T else (block.epoch, block.end)
