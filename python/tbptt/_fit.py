"""The epochs of `Trainer.fit`, in named steps: check the arguments, then for every epoch feed
its blocks (`_blocks`) to `Trainer.train` with the learning rate of the schedule and the resets
of the policy, record the epoch, validate, keep the best parameters and decide whether to stop
(budgets, patience, the callback, Ctrl-C; with MPI every rank agrees).

Also the checks of fit's data, shared with `evaluate` and the sweep.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import _blocks, _checks, _progress, _units, schedules
from .datasets import Task
from .history import History

Arrays = (
    tuple  # (x, y, mask, resets): x (T, B, I) or (T, B), y (T, B, O) or (T, B), the rest (T, B)
)


# ---- the data ---------------------------------------------------------------------------------


def arrays(x: Any, y: Any = None, mask: Any = None, resets: Any = None) -> Arrays:
    """(x, y, mask, resets) from arrays or a Task; checks that they share (T, B)."""
    if isinstance(x, Task):
        if y is not None or mask is not None or resets is not None:
            raise TypeError(
                "when x is a tbptt.datasets.Task, y, mask and resets come from it: do not pass them"
            )
        x, y, mask, resets = x.x, x.y, x.mask, x.resets
    if y is None:
        raise TypeError("y (the targets) is required, unless x is a tbptt.datasets.Task")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim not in (2, 3):
        raise ValueError(f"x must have shape (T, B, I) or (T, B), got {x.shape}")
    T, B = x.shape[:2]
    if T == 0 or B == 0:
        raise ValueError(f"x must have T >= 1 steps and B >= 1 streams, got shape {x.shape}")
    for name, a in (("y", y), ("mask", mask), ("resets", resets)):
        if a is not None and np.shape(a)[:2] != (T, B):
            raise ValueError(
                f"{name} must start with x's (T, B) = {(T, B)}, got shape {np.shape(a)}"
            )
    return x, y, mask, resets


def validation_arrays(validation: Any) -> Arrays:
    """(x, y, mask, resets) of fit's `validation`: (x, y[, mask[, resets]]) or a Task."""
    if isinstance(validation, Task):
        return arrays(validation)
    if not isinstance(validation, (tuple, list)) or not 2 <= len(validation) <= 4:
        raise TypeError(
            "validation must be (x, y), (x, y, mask), (x, y, mask, resets) or a "
            f"tbptt.datasets.Task, got {type(validation).__name__}"
        )
    x, y, mask, resets = (*validation, None, None)[:4]
    return arrays(x, y, mask, resets)


# ---- the arguments ----------------------------------------------------------------------------


@dataclass
class Options:
    """fit's arguments, checked (see `Trainer.fit`)."""

    data: Arrays
    validation: Arrays | None
    epochs: int
    initial_epoch: int
    initial_step: int
    resets: _blocks.Resets
    max_time: float | None
    max_updates: int | None
    block: int
    schedule: Callable[[float], float] | None
    restore_best: bool
    patience: int | None
    progress: bool
    checkpoint: Any
    callback: Callable | None
    unit: _units.Unit = _units.Unit("", 1.0)  # what the bar and the epoch lines show losses in
    samples_per_step: int = 0  # B, or the sum of every rank's B

    @property
    def T(self) -> int:
        return self.data[0].shape[0]

    @property
    def B(self) -> int:
        return self.data[0].shape[1]


def options(
    trainer,
    x,
    y,
    mask,
    resets,
    *,
    epochs,
    validation,
    reset,
    max_time,
    max_updates,
    progress,
    checkpoint,
    callback,
    block,
    initial_epoch,
    initial_step,
    schedule,
    restore_best,
    patience,
    loss_unit=None,
) -> Options:
    """fit's arguments checked and completed (the default block, MPI's common values)."""
    data = arrays(x, y, mask, resets)
    T, B = data[0].shape[0], data[0].shape[1]
    epochs = _checks.positive_int("epochs", epochs)
    initial_epoch, initial_step = _start(initial_epoch, initial_step, epochs, T)
    if max_time is not None and _checks.finite_float("max_time", max_time) <= 0:
        raise ValueError(f"max_time must be > 0 seconds or None, got {max_time}")
    if max_updates is not None:
        max_updates = _checks.positive_int("max_updates", max_updates)
    if block is None:
        block = trainer.k1 * max(1, (32768 // B) // trainer.k1)
    if schedule is not None and not callable(schedule):
        raise TypeError(
            f"schedule must be a tbptt.Schedule (or a callable progress -> factor) "
            f"or None, got {type(schedule).__name__}"
        )
    if (restore_best or patience is not None) and validation is None:
        raise ValueError("restore_best and patience need validation data")
    opts = Options(
        data,
        None if validation is None else validation_arrays(validation),
        epochs,
        initial_epoch,
        initial_step,
        _blocks.Resets(reset, data[3]),
        max_time,
        max_updates,
        _checks.positive_int("block", block),
        schedule,
        restore_best,
        None if patience is None else _checks.positive_int("patience", patience),
        progress,
        checkpoint,
        callback,
        _units.unit(loss_unit, trainer.loss),
        samples_per_step=B,
    )
    return _agree(trainer._group, opts)


def _start(initial_epoch, initial_step, epochs: int, T: int) -> tuple:
    """The checked (initial_epoch, initial_step) of fit."""
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)):
        raise TypeError(f"initial_epoch must be an int, got {type(initial_epoch).__name__}")
    if isinstance(initial_step, bool) or not isinstance(initial_step, (int, np.integer)):
        raise TypeError(f"initial_step must be an int, got {type(initial_step).__name__}")
    if not 0 <= initial_epoch < epochs:
        raise ValueError(
            f"initial_epoch must be in [0, epochs={epochs}) (epochs is the total, "
            f"counted from epoch 0), got {initial_epoch}"
        )
    if not 0 <= initial_step < T:
        raise ValueError(f"initial_step must be in [0, T={T}), got {initial_step}")
    return int(initial_epoch), int(initial_step)


def _agree(group, opts: Options) -> Options:
    """With MPI: the same calls on every rank (the smallest block), samples counted over all
    ranks, and rank 0's bar alone."""
    if group is None:
        return opts
    group.check_same(
        "fit",
        T=opts.T,
        epochs=opts.epochs,
        initial_epoch=opts.initial_epoch,
        initial_step=opts.initial_step,
        max_updates=opts.max_updates or 0,
    )
    opts.block = group.minimum(opts.block)
    opts.samples_per_step = int(group.sum([opts.B])[0])
    opts.progress = opts.progress and group.rank == 0
    return opts


# ---- the call ---------------------------------------------------------------------------------


def fit(trainer, x, y, mask, resets, **kwargs) -> History:
    """`Trainer.fit` of tbptt.Trainer and of tbptt.torch.Trainer: the run, then Ctrl-C (the
    checkpoint saved, KeyboardInterrupt) or a divergence (a RuntimeWarning) reported. The trainer
    provides train, reset_state, updates, pending_steps, k1, lr, `_step_lr(lr)` (the learning
    rate of the next updates, its own `lr` untouched), `_evaluate`, `_keep_best`, `_load_best`,
    `save` and `_group` (None without MPI)."""
    checkpoint = kwargs["checkpoint"]
    run = Run(trainer, options(trainer, x, y, mask, resets, **kwargs))
    history = run.run()
    if history.stop_reason == "interrupted":
        message = f"fit interrupted after {run.updates} updates"
        if checkpoint is not None:
            trainer.save(checkpoint)
            message += f"; trainer checkpoint saved to {checkpoint}"
        raise KeyboardInterrupt(message)
    if history.diverged:
        warnings.warn(
            f"fit stopped: training diverged ({history.diverged}). The model keeps "
            f"the parameters of the last good update; lower the learning rate or "
            f"clip gradients (clip_norm), then fit again.",
            RuntimeWarning,
            stacklevel=3,
        )
    return history


# ---- the loop ---------------------------------------------------------------------------------


class _Epoch:
    """The running sums of one epoch."""

    def __init__(self) -> None:
        self.loss_sum, self.loss_count, self.samples, self.seconds = 0.0, 0, 0, 0.0


class Run:
    """One call of fit: `run()` trains, records and returns the History (also trainer.history);
    the caller reports an interruption or a divergence."""

    def __init__(self, trainer, opts: Options):
        self.trainer, self.opts, self.group = trainer, opts, trainer._group
        self.history = trainer.history = History()
        trainer.best = None
        self.start, self.first_update = time.perf_counter(), trainer.updates
        self.history.resume_at = (opts.initial_epoch, opts.initial_step)
        self.base_lr = self.lr_now = trainer.lr
        self.val_seconds: float | None = None  # the last validation's: max_time keeps room
        self.interrupted: list = []

    @property
    def updates(self) -> int:
        """Updates this fit made so far."""
        return self.trainer.updates - self.first_update

    def run(self) -> History:
        """Every epoch until one stops the fit; then the learning rate and, with restore_best,
        the best parameters go back into place."""
        opts, history = self.opts, self.history
        self.bar = _progress.bar(1.0, enabled=opts.progress, unit=None)  # the run's share
        self.shown = 0.0  # of the run, on the bar
        try:
            with _deferred_interrupt() as self.interrupted:
                for epoch in range(opts.initial_epoch, opts.epochs):
                    if self._epoch(epoch):
                        break
                else:
                    history.stop_reason = "epochs"
                if self._any(bool(self.interrupted)):  # Ctrl-C after the last block (in
                    history.stop_reason = "interrupted"  # validation, a callback)
        finally:
            self._finish()
        return history

    def _epoch(self, epoch: int) -> bool:
        """Train, record and validate one epoch; True if the fit stops after it."""
        opts, history = self.opts, self.history
        self.bar.set_description(
            f"epoch {epoch + 1}/{opts.epochs}"
            + (f" ({opts.max_time:g} s budget)" if opts.max_time else "")
        )
        sums = _Epoch()
        first = opts.initial_step if epoch == opts.initial_epoch else 0
        for block in _blocks.blocks(
            opts.T, epoch * opts.T + first, (epoch + 1) * opts.T, grid=opts.block
        ):
            reason = self._block(block, sums)
            if reason:
                history.stop_reason = reason
                break
        self._record(sums)
        if opts.validation is not None and history.stop_reason != "interrupted":
            self._validate(epoch)
        if opts.progress:
            self.bar.write(
                f"epoch {epoch + 1}/{opts.epochs}: " + _summary(history, opts.unit), sys.stderr
            )
        if not history.stop_reason:
            history.stop_reason = self._after_epoch()
        return bool(history.stop_reason)

    def _block(self, block: _blocks.Block, sums: _Epoch) -> str:
        """Train one block; the reason to stop after it, or ""."""
        opts, trainer, history = self.opts, self.trainer, self.history
        if opts.resets.at_pass_start(block):
            trainer.reset_state()
        if opts.max_updates is not None:  # end the call exactly at the last update
            needed = opts.max_updates - self.updates
            block = block._replace(
                end=min(block.end, block.start + needed * trainer.k1 - trainer.pending_steps)
            )
        self._set_lr(block.step)
        s, e = block.start, block.end
        x, y, mask, _ = opts.data
        tic = time.perf_counter()
        try:
            new = trainer.train(
                x[s:e], y[s:e], None if mask is None else mask[s:e], opts.resets.of(block, opts.B)
            )
        except FloatingPointError as error:  # the failed block is dropped
            history.diverged = str(error)
            history.resume_at = _blocks.position(block, opts.T)
            return "diverged"
        except KeyboardInterrupt:  # raised by something other than Ctrl-C
            return "interrupted"
        seconds = time.perf_counter() - tic
        self._count(block, new, seconds, sums)
        return self._stop_after_block(seconds, e - s)

    def _set_lr(self, step: int) -> None:
        """The block's learning rate: the optimiser's, times the schedule at the fit's progress."""
        opts = self.opts
        if opts.schedule is None:
            return
        elapsed = time.perf_counter() - self.start
        if self.group is not None and opts.max_time:  # the same lr on every rank
            elapsed = self.group.maximum(elapsed)
        share = schedules.progress(step, opts.epochs * opts.T, elapsed, opts.max_time)
        self.lr_now = self.base_lr * float(opts.schedule(share))
        self.trainer._step_lr(self.lr_now)

    def _count(self, block: _blocks.Block, new: np.ndarray, seconds: float, sums: _Epoch) -> None:
        """Add a trained block to the epoch's sums, the history and the bar."""
        samples = (block.end - block.start) * self.opts.samples_per_step
        sums.seconds += seconds
        sums.samples += samples
        self.history.resume_at = _blocks.position(block, self.opts.T)
        self.history._losses.append(new)
        sums.loss_sum, sums.loss_count = (
            sums.loss_sum + float(new.sum()),
            sums.loss_count + new.size,
        )
        if not self.opts.progress:
            return
        elapsed = time.perf_counter() - self.start
        if sums.loss_count:
            rate = (self.history.samples + sums.samples) / elapsed if elapsed > 0 else 0.0
            self.bar.set_postfix_str(
                _postfix(sums.loss_sum / sums.loss_count, self.history, self.opts.unit, rate),
                refresh=False,
            )
        share = schedules.progress(
            block.step + block.end - block.start,
            self.opts.epochs * self.opts.T,
            elapsed,
            self.opts.max_time,
        )
        self.bar.update(max(0.0, share - self.shown))
        self.shown = max(self.shown, share)

    def _stop_after_block(self, last: float, steps: int) -> str:
        """Ctrl-C, max_updates, or max_time if one more block and a validation would overrun it;
        with MPI any rank's reason stops every rank."""
        opts, reason = self.opts, ""
        if self.interrupted:
            reason = "interrupted"
        elif opts.max_updates is not None and self.updates >= opts.max_updates:
            reason = "max_updates"
        elif opts.max_time is not None:
            val = self.val_seconds  # before any: as slow as training (it is faster)
            if val is None:
                v = opts.validation
                val_samples = 0 if v is None else v[0].shape[0] * v[0].shape[1]
                val = val_samples * last / (steps * opts.B)
            if time.perf_counter() - self.start + last + val >= opts.max_time:
                reason = "max_time"
        return reason if self.group is None else self.group.stop_reason(reason)

    def _record(self, sums: _Epoch) -> None:
        """The epoch's line of the history (the partial epoch of a stop too)."""
        history = self.history
        history.train_loss.append(sums.loss_sum / sums.loss_count if sums.loss_count else math.nan)
        history.samples_per_s.append(sums.samples / sums.seconds if sums.seconds > 0 else math.nan)
        history.epoch_updates.append(sum(a.size for a in history._losses))
        history.samples += sums.samples
        history.train_time += sums.seconds
        history.lr.append(self.lr_now)

    def _validate(self, epoch: int) -> None:
        """Evaluate, keep the best parameters, and stop early when patience runs out."""
        opts, history, trainer = self.opts, self.history, self.trainer
        assert opts.validation is not None
        tic = time.perf_counter()
        result = trainer._evaluate(
            *opts.validation, block=opts.block, stop=self.interrupted if self.group is None else ()
        )
        self.val_seconds = time.perf_counter() - tic
        if result is None:
            history.stop_reason = "interrupted"
            return
        history.val_loss.append(result["loss"])
        if "accuracy" in result:
            history.val_accuracy.append(result["accuracy"])
        trainer._keep_best(epoch, result["loss"])
        if opts.patience is not None and epoch - trainer.best["epoch"] >= opts.patience:
            history.stop_reason = "early_stopping"

    def _after_epoch(self) -> str:
        """The callback's verdict; with MPI, every rank's (and Ctrl-C on any rank)."""
        callback = self.opts.callback
        reason = "callback" if callback is not None and callback(self.trainer, self.history) else ""
        if self.group is not None:
            reason = self.group.stop_reason("interrupted" if self.interrupted else reason)
        return reason

    def _any(self, flag: bool) -> bool:
        return self.group.any(flag) if self.group is not None else flag

    def _finish(self) -> None:
        self.bar.close()
        self.history.wall_time = time.perf_counter() - self.start
        if self.opts.schedule is not None:
            self.trainer._step_lr(self.base_lr)
        if self.opts.restore_best and self.trainer.best is not None:
            self.trainer._load_best()


# ---- the bar and Ctrl-C -----------------------------------------------------------------------


def _postfix(loss: float, history: History, unit: _units.Unit, rate: float) -> str:
    """The bar's text after the time: the epoch's running mean loss, the last val_loss, the
    samples per second of the fit so far."""
    parts = [f"loss {unit.show(loss)}"]
    if history.val_loss:
        parts.append(f"val_loss {unit.show(history.val_loss[-1])}")
    return ", ".join(parts + [f"{rate:,.0f} samples/s"])


def _summary(history: History, unit: _units.Unit) -> str:
    """One line about the last epoch of `history`."""
    parts = [f"loss {unit.show(history.train_loss[-1])}"]
    if len(history.val_loss) == history.epochs:
        parts.append(f"val_loss {unit.show(history.val_loss[-1])}")
    if len(history.val_accuracy) == history.epochs:
        parts.append(f"val_accuracy {history.val_accuracy[-1]:.4f}")
    parts.append(f"{history.samples_per_s[-1]:,.0f} samples/s")
    return ", ".join(parts)


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[list]:
    """Within this block Ctrl-C only appends to the yielded list, which fit checks between train
    calls: an update (Python code in the NumPy backend) is never cut in half. Only in the main
    thread, and only over Python's default handler (a handler of the user's own stays)."""
    flag: list = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield flag
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.append(signum))
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
