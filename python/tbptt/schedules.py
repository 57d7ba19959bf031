"""Learning-rate schedules for `Trainer.fit`: the learning rate as a factor of the optimiser's own
`lr`, a function of the fit's progress in [0, 1].

Progress is the larger of the share of the fit's steps done (all its epochs) and, with `max_time`,
the share of the time budget used: a run that its time budget cuts short still ends at the low end
of its schedule. A resumed fit (`initial_epoch`, `initial_step`) continues the schedule where it
stopped (the time share then counts this session's budget).
"""

from __future__ import annotations

import math
from typing import Optional

from . import _checks

SHAPES = ("cosine", "linear", "constant")


class Schedule:
    """Warm-up, then decay: the factor rises linearly from 0 to 1 over the first `warmup` of the
    progress, then falls to `final` at progress 1, along a half cosine ("cosine") or a straight
    line ("linear"), or stays at 1 ("constant").

    warmup: share of the progress in [0, 1). final: the factor at the end, in [0, 1].
    """

    def __init__(self, shape: str = "cosine", warmup: float = 0.0, final: float = 0.0) -> None:
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
        self.shape = shape
        self.warmup = _checks.finite_float("warmup", warmup, minimum=0.0, below=1.0)
        self.final = _checks.finite_float("final", final, minimum=0.0)
        if self.final > 1:
            raise ValueError(f"final must be in [0, 1], got {final}")

    def __call__(self, progress: float) -> float:
        """The factor of the learning rate at `progress` (clamped to [0, 1])."""
        progress = min(1.0, max(0.0, float(progress)))
        if progress < self.warmup:
            return progress / self.warmup
        if self.shape == "constant":
            return 1.0
        t = (progress - self.warmup) / (1.0 - self.warmup)  # 0 .. 1 after the warm-up
        if self.shape == "linear":
            decay = 1.0 - t
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * t))
        return self.final + (1.0 - self.final) * decay

    def config(self) -> dict:
        """The schedule as JSON-able values (kept in trainer files and run settings)."""
        return {"shape": self.shape, "warmup": self.warmup, "final": self.final}

    def __repr__(self) -> str:
        return f"Schedule({self.shape!r}, warmup={self.warmup}, final={self.final})"


def progress(
    steps_done: int,
    steps_total: Optional[int],
    seconds: Optional[float] = None,
    max_time: Optional[float] = None,
) -> float:
    """The fit's progress: the larger of the share of steps and the share of the time budget."""
    share = steps_done / steps_total if steps_total else 1.0
    if max_time:
        assert seconds is not None, "progress: max_time needs seconds"
        share = max(share, seconds / max_time)
    return min(1.0, share)
