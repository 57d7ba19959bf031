"""History: what `Trainer.fit` records, for reading, saving as JSON and plotting.

Not a logger: it holds numbers in memory (the loss of every update is one float64 each) and
knows how to turn them into a dict and a PNG. matplotlib is an optional extra (`tbptt[plot]`).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


class History:
    """The record of one `Trainer.fit` call.

    Attributes:
        losses: (U,) float64, the loss of every update that carried loss, in order (a property).
        train_loss: per epoch, the mean loss of that epoch's updates (NaN if it made none).
        val_loss: per epoch, the validation loss (empty without validation data).
        val_accuracy: per epoch, the validation accuracy (cross-entropy only; else empty).
        samples_per_s: per epoch, training throughput: time steps x streams per second of `train`
            calls (validation excluded), as docs/semantics.md §5 counts samples.
        epoch_updates: per epoch, len(losses) at its end: where the epoch ends on the update axis.
        wall_time: seconds the whole fit took, validation included.
        train_time: seconds spent in `train` calls.
        samples: time steps x streams trained on.
        stop_reason: "epochs" (all done), "max_time", "max_updates", "callback",
            "early_stopping", "diverged" or "interrupted". When a budget stops fit mid-epoch, that
            last epoch is partial but is still recorded (and validated).
        diverged: None, or the message of the FloatingPointError that stopped training.
        resume_at: (epoch, step), where in the data training stopped: pass them to
            `fit(..., initial_epoch=epoch, initial_step=step)` to go on as if it had not stopped.
        lr: per epoch, the learning rate of its last block (the schedule's, if fit had one).

    A run resumed by later fit calls is recorded by `extend`: an epoch stopped midway then
    appears twice, as its part before and its part after the stop.
    """

    def __init__(self):
        self._losses = []  # one array per train call: no per-update Python floats
        self.train_loss = []
        self.val_loss = []
        self.val_accuracy = []
        self.samples_per_s = []
        self.epoch_updates = []
        self.wall_time = 0.0
        self.train_time = 0.0
        self.samples = 0
        self.stop_reason = None
        self.diverged = None
        self.resume_at = (0, 0)
        self.lr = []

    @property
    def losses(self) -> np.ndarray:
        """Every update's training loss, in order: (number of updates,) float64."""
        return np.concatenate(self._losses) if self._losses else np.zeros(0)

    @property
    def best_epoch(self) -> Optional[int]:
        """The epoch (from 0) of the lowest validation loss, or None without validation."""
        finite = [v if math.isfinite(v) else math.inf for v in self.val_loss]
        return int(np.argmin(finite)) if finite and min(finite) < math.inf else None

    @property
    def epochs(self) -> int:
        """Epochs recorded (the last one may be partial, see `stop_reason`)."""
        return len(self.train_loss)

    def to_dict(self) -> dict:
        """Plain lists and numbers, ready for `json.dump` (NaN becomes None)."""

        def clean(values):
            return [None if not math.isfinite(v) else float(v) for v in values]

        return {
            "losses": clean(self.losses.tolist()),
            "train_loss": clean(self.train_loss),
            "val_loss": clean(self.val_loss),
            "val_accuracy": clean(self.val_accuracy),
            "samples_per_s": clean(self.samples_per_s),
            "epoch_updates": list(self.epoch_updates),
            "epochs": self.epochs,
            "wall_time": self.wall_time,
            "train_time": self.train_time,
            "samples": self.samples,
            "stop_reason": self.stop_reason,
            "diverged": self.diverged,
            "resume_at": list(self.resume_at),
            "lr": clean(self.lr),
            "best_epoch": self.best_epoch,
        }

    @classmethod
    def from_dict(cls, d) -> History:
        """The History that `to_dict` described (None becomes NaN again)."""

        def floats(values):
            return [math.nan if v is None else float(v) for v in values]

        history = cls()
        history._losses = [np.array(floats(d["losses"]), dtype=np.float64)]
        for name in ("train_loss", "val_loss", "val_accuracy", "samples_per_s"):
            setattr(history, name, floats(d[name]))
        history.lr = floats(d.get("lr", []))  # files before schedules have none
        history.epoch_updates = [int(n) for n in d["epoch_updates"]]
        history.wall_time, history.train_time = float(d["wall_time"]), float(d["train_time"])
        history.samples, history.stop_reason = int(d["samples"]), d["stop_reason"]
        history.diverged, history.resume_at = d["diverged"], tuple(d.get("resume_at", (0, 0)))
        return history

    def extend(self, later) -> None:
        """Append the record of a later fit that went on from where this one stopped."""
        offset = self.losses.size
        self._losses.extend(later._losses)
        for name in ("train_loss", "val_loss", "val_accuracy", "samples_per_s", "lr"):
            getattr(self, name).extend(getattr(later, name))
        self.epoch_updates.extend(offset + n for n in later.epoch_updates)
        self.wall_time += later.wall_time
        self.train_time += later.train_time
        self.samples += later.samples
        self.stop_reason, self.diverged = later.stop_reason, later.diverged
        self.resume_at = later.resume_at

    def plot(self, path, loss_unit: Optional[str] = None) -> None:
        """Write a PNG of the loss curves (atomically): every update's loss (and a running mean)
        against the update index, with each epoch's train and validation loss at the update where
        it ended. loss_unit: the unit on the axis, "nats", "bits", "bits/char" (the losses
        divided by ln 2) or "mse"; None: the axis says "loss" alone."""
        from . import _plots, _units

        unit = _units.unit(loss_unit)
        fig = _plots.figure("History.plot's curves", figsize=(8, 4.5))
        ax = fig.add_subplot()
        losses = self.losses * unit.factor
        updates = np.arange(1, losses.size + 1)
        ax.plot(updates, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="update loss")
        width = max(1, losses.size // 50)
        if losses.size > width:
            running = np.convolve(losses, np.ones(width) / width, mode="valid")
            ax.plot(
                updates[width - 1 :],
                running,
                color="tab:blue",
                label=f"running mean ({width} updates)",
            )
        ends = np.asarray(self.epoch_updates)
        if ends.size:
            ax.plot(
                ends,
                np.asarray(self.train_loss) * unit.factor,
                "o-",
                color="tab:green",
                label="train (epoch mean)",
            )
        if self.val_loss:
            ax.plot(
                ends[: len(self.val_loss)],
                np.asarray(self.val_loss) * unit.factor,
                "s-",
                color="tab:red",
                label="validation",
            )
        ax.set_xlabel("update")
        ax.set_ylabel(f"loss ({unit.label})" if unit.label else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
        _plots.save(fig, path)

    def __repr__(self) -> str:
        last = f", val_loss={self.val_loss[-1]:.4f}" if self.val_loss else ""
        return (
            f"History(updates={self.losses.size}, epochs={self.epochs}{last}, "
            f"stop_reason={self.stop_reason!r})"
        )
