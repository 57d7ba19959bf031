"""Trainer: TBPTT(k1, k2) over streams whose state is carried across calls.

Every k1 steps it makes an update: the loss of the k1 newest steps, its gradient with the
recurrence cut k2 steps back, optional global-norm clipping, then the optimiser step. Steps
since the last update stay pending across calls, so `train(x[:a]); train(x[a:])` equals
`train(x)`. The numerical work happens in a backend engine:

- "cpp": the C++/Eigen engine (`tbptt._core`), the fast one;
- "numpy": the NumPy reference (`tbptt.engines.reference`), written to be read next to the math.

Both take arrays that passed the checks below and implement exactly the same algorithm.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, Literal, Optional, Tuple, Union, overload

import numpy as np

from . import _checks, _files, _fit, _pickled, _sizes
from .data import ArrayLike
from .engines import BACKENDS, make_engine
from .engines import old_files as _old_files
from .errors import Divergence
from .history import History
from .losses import LOSSES
from .model import Recurrent
from .optim import OPTIMIZERS, Adam, Optimizer
from .optim import from_config as optimizer_from_config

if TYPE_CHECKING:
    from .contract import Engine

MAX_K = 2**30  # the window holds max(k1, k2) + 1 steps; "never truncate" is k = the data's length


class Trainer:
    """Train `model` in place with TBPTT(k1, k2).

    k1: steps between updates. k2: steps each update backpropagates through.
    k1 = k2 = k is chunked TBPTT (detach every k steps); k1 = k2 = T is full BPTT; k2 > k1 gives
    overlapping windows (Williams & Peng's BPTT(h; h')); k2 < k1 lets the first k1 - k2 steps of
    each segment only warm the state up.
    seed: the dropout masks' (when the model has dropout): a mask is a function of the seed, the
    layer, the step since training began, the stream and the unit, the same in both backends, so
    a run is reproducible and resumes exactly.
    recompute: when k2 > k1 an update's window reaches into steps computed before the previous
    update, with older weights, whose stored activations the backward uses as they are. With
    recompute=True, after each update the forward runs again with the new weights over the
    steps the next update's window reads (from the stored state entering them, with the same
    inputs, resets and dropout masks), so every update's loss and gradient are exactly those of
    the truncated loss, and the carried state (and every prediction from it) is the current
    weights' (docs/semantics.md §3). It costs the forward of k2 - k1 + 1 more steps per update,
    and matters only when k2 > k1 (and for a `flush()` whose window reaches past its pending
    steps): otherwise the results are those of recompute=False, bit for bit.

    comm: an mpi4py communicator (e.g. `MPI.COMM_WORLD`) for data-parallel training
    (docs/semantics.md §7): every rank builds the same trainer and calls `train` with its own
    streams (B may differ) and the same T; each update sums the ranks' gradients and loss sums in
    one all-reduce, so every rank returns the same losses and keeps the same parameters (rank 0's
    are broadcast here). `train`, `flush`, `fit` and `save` are then collective: every rank must
    call them. None (the default): one process, and mpi4py is never imported.
    """

    history: History  # the last fit's record: set by `fit`

    def __init__(
        self,
        model: Recurrent,
        k1: int,
        k2: int,
        loss: str = "mse",
        optimizer: Optional[Optimizer] = None,
        clip_norm: Optional[float] = None,
        backend: str = "cpp",
        seed: int = 0,
        comm: Any = None,
        recompute: bool = False,
    ) -> None:
        if not isinstance(model, Recurrent):
            raise TypeError(f"model must be a tbptt.LSTM, GRU or RNN, got {type(model).__name__}")
        self.model = model
        self.k1 = _checks.positive_int("k1", k1, maximum=MAX_K)
        self.k2 = _checks.positive_int("k2", k2, maximum=MAX_K)
        if not isinstance(loss, str) or loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {loss!r}")
        LOSSES[loss].check_output_size(model.output_size)
        self.loss = loss
        if optimizer is None:
            optimizer = Adam()
        if not isinstance(optimizer, OPTIMIZERS):
            raise TypeError(
                f"optimizer must be tbptt.SGD, tbptt.Adam or tbptt.AdamW, got "
                f"{type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        if clip_norm is not None:
            clip_norm = _checks.finite_float("clip_norm", clip_norm)
            if clip_norm <= 0:
                raise ValueError(f"clip_norm must be > 0 or None, got {clip_norm}")
        self.clip_norm = clip_norm
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.seed = _checks.nonnegative_int("seed", seed, maximum=2**64 - 1)
        if not isinstance(recompute, (bool, np.bool_)):
            raise TypeError(f"recompute must be a bool, got {type(recompute).__name__}")
        self.recompute = bool(recompute)
        # fit(restore_best=True | patience=N): the best epoch's {epoch, val_loss, parameters}
        self.best: Any = None
        self.num_streams = None  # B, fixed by the first call to train
        self._engine = self._make_engine()
        self._offset_known = False  # data-parallel: set at the first train call (B known)
        self._group = None if comm is None else self._join(comm)

    def _make_engine(self):
        return make_engine(
            self.backend,
            self.model.spec,
            self.k1,
            self.k2,
            self.loss,
            self.optimizer.config(),
            self.clip_norm,
            self.seed,
            recompute=self.recompute,
        )

    def _join(self, comm):
        """Data-parallel: check the ranks built the same trainer, take rank 0's parameters, and
        make every update all-reduce its buffer."""
        from ._mpi import Group

        model = self.model
        group = Group(comm)
        group.check_same(
            "Trainer(comm=...)",
            parameters=model.flat_parameters.size,
            itemsize=model.flat_parameters.itemsize,
            k1=self.k1,
            k2=self.k2,
            layers=model.num_layers,
            hidden_size=model.hidden_size,
            recompute=self.recompute,
        )
        group.broadcast(model.flat_parameters)
        group.attach(self._engine)
        return group

    @property
    def engine(self) -> Engine:
        """The backend engine doing the numerical work (`tbptt.contract.Engine`): the C++ one
        or the NumPy reference. For inspection (`engine.gradient()`, `engine.snapshot()`) and
        tools built on the trainer; `train` and the other methods here check their input first,
        the engine does not."""
        return self._engine

    @property
    def comm(self) -> Any:
        """The mpi4py communicator of data-parallel training, or None."""
        return None if self._group is None else self._group.comm

    # ---- training -----------------------------------------------------------------------------
    @overload
    def train(
        self,
        x: ArrayLike,
        y: ArrayLike,
        mask: Optional[ArrayLike] = None,
        resets: Optional[ArrayLike] = None,
        *,
        return_outputs: Literal[False] = False,
    ) -> np.ndarray: ...

    @overload
    def train(
        self,
        x: ArrayLike,
        y: ArrayLike,
        mask: Optional[ArrayLike] = None,
        resets: Optional[ArrayLike] = None,
        *,
        return_outputs: Literal[True],
    ) -> Tuple[np.ndarray, np.ndarray]: ...

    def train(
        self,
        x: ArrayLike,
        y: ArrayLike,
        mask: Optional[ArrayLike] = None,
        resets: Optional[ArrayLike] = None,
        *,
        return_outputs: bool = False,
    ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Process T more steps of the B streams; make an update every k1 steps.

        x: (T, B, I) features or (T, B) integer token ids. y: (T, B, O) for "mse", (T, B) integer
        class ids for "cross_entropy", (T, B, O / 2) for "gaussian" (the outputs: O / 2 means,
        then O / 2 raw scales; tbptt.losses.gaussian_parameters). mask: optional (T, B) loss
        weights. resets: optional (T, B) bool, zero stream b's state before step t. Time-major:
        a batch-first (B, T, I) array, as torch's `batch_first=True` and Keras use, is taken as
        T = B steps of T streams without an error when its sizes fit (pass x.swapaxes(0, 1));
        once the trainer's B is known, an x whose first axis is that B is refused with a hint.
        Returns the loss of each update made in this call (float64 array); with
        return_outputs=True, `(losses, outputs)`: outputs (T, B, O) of the model's dtype, each
        step's outputs as the forward pass computed them, before any update that used that
        step's target (test-then-train: the prequential predictions, at no extra cost; logits
        for "cross_entropy").
        Raises tbptt.Divergence (a FloatingPointError) if an update's loss or gradient is not
        finite (see docs/semantics.md §3.6); its `losses` attribute holds the losses of the
        updates this call applied before it (and with return_outputs, its `outputs` attribute the
        outputs, NaN from the failed update on).
        With a comm: collective; every rank passes its own streams and the same T, and gets the
        same global losses. Invalid input on any rank, or ranks with different T, raise on every
        rank (ValueError/TypeError) before any update; a divergence raises on every rank.
        """
        if self._group is None:
            return self._train(*self._checked(x, y, mask, resets), return_outputs=return_outputs)
        try:
            args, error = self._checked(x, y, mask, resets), None
        except Exception as caught:  # noqa: BLE001 - raised on this rank after the others know
            args, error = None, caught
        self._group.agree_on_call(None if args is None else args[0].shape[0], error)
        assert args is not None  # else agree_on_call raised on every rank
        if not self._offset_known:  # the ranks' streams are one batch, rank by rank (dropout)
            self._engine.set_stream_offset(self._group.stream_offset(args[0].shape[1]))
            self._offset_known = True
        return self._train(*args, return_outputs=return_outputs)

    def _checked(self, x, y, mask, resets) -> Tuple[np.ndarray, bool, np.ndarray, Any, Any]:
        """train's arguments, checked and converted: (x, tokens, y, mask, resets)."""
        model = self.model
        x, tokens = _checks.inputs("x", x, model.input_size, model.dtype)
        T, B = x.shape[0], x.shape[1]
        y = _checks.targets("y", y, self.loss, (T, B), model.output_size, model.dtype)
        mask = _checks.mask(mask, (T, B), model.dtype)
        resets = _checks.resets(resets, (T, B))
        if T == 0:
            return x, tokens, y, mask, resets
        if B == 0:
            raise ValueError("x must have at least one stream: got B = 0 (x.shape[1])")
        if self.num_streams is None:
            _sizes.check_window(
                model, self.k1, self.k2, B, tokens
            )  # before the engine allocates it
            self.num_streams = B
        elif B != self.num_streams:
            raise ValueError(
                f"x has B = {B} streams, but this trainer was started with "
                f"B = {self.num_streams} (x.shape[1] must stay the same)"
                + _checks.batch_first_hint(x.shape, self.num_streams)
            )
        return x, tokens, y, mask, resets

    def _train(self, x, tokens, y, mask, resets, *, return_outputs=False):
        model = self.model
        T, B = x.shape[0], x.shape[1]
        if T == 0:
            return (
                (np.zeros(0), np.zeros((0, B, model.output_size), model.dtype))
                if return_outputs
                else np.zeros(0)
            )
        outputs = (
            np.full((T, B, model.output_size), np.nan, dtype=model.dtype)
            if return_outputs
            else None
        )
        try:
            losses = self._engine.train(x, tokens, y, mask, resets, outputs)
        except FloatingPointError as error:  # either engine's: one class, tbptt.Divergence
            raise Divergence.of(error, outputs) from None
        losses = np.asarray(losses, dtype=np.float64)
        return (losses, outputs) if return_outputs else losses

    def predict_next(self, x: ArrayLike) -> np.ndarray:
        """The outputs (B, O) the next step would give for x, (B, I) features or (B,) integer
        token ids, from the carried state and the current parameters, without advancing
        anything: what the next `train` call computes for that step (so a test-then-train loop
        can predict before it learns). Before the first `train` call it fixes B as train does."""
        model = self.model
        x, tokens = _checks.inputs("x", np.asarray(x)[None], model.input_size, model.dtype)
        B = x.shape[1]
        if B == 0:
            raise ValueError("x must have at least one stream: got B = 0 (x.shape[0])")
        if self.num_streams is None:
            _sizes.check_window(model, self.k1, self.k2, B, tokens)
            self.num_streams = B
        elif B != self.num_streams:
            raise ValueError(
                f"x has B = {B} streams, but this trainer was started with "
                f"B = {self.num_streams} (x.shape[0] must stay the same)"
            )
        outputs = np.empty((B, model.output_size), dtype=model.dtype)
        self._engine.peek(x[0], tokens, outputs)
        return outputs

    def flush(self) -> Optional[float]:
        """Make the update over the pending steps (fewer than k1) now. Returns its loss, or None
        if no step is pending or no pending position carries loss. With a comm: collective (the
        ranks have the same pending steps, so they make the update together)."""
        try:
            return self._engine.flush()
        except FloatingPointError as error:
            raise Divergence.of(error) from None

    def reset_state(self) -> None:
        """Zero every stream's state before the next step (pending steps stay pending)."""
        self._engine.reset_state()

    @property
    def pending_steps(self) -> int:
        """Steps processed since the last update."""
        return int(self._engine.pending_steps)

    @property
    def updates(self) -> int:
        """Updates made so far (including those that made no optimiser step)."""
        return int(self._engine.updates)

    @property
    def lr(self) -> float:
        """The optimiser's (base) learning rate; setting it takes effect at the next update."""
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer.lr = _checks.finite_float("lr", value, minimum=0.0)
        self._engine.set_lr(self.optimizer.lr)

    def state(self) -> Any:
        """The carried state as the next step will see it (resets requested by reset_state()
        applied): (h, c) for an LSTM, h for a GRU or RNN, each (num_layers, B, H); None before
        the first call."""
        parts = self._engine.state()  # a tuple, one array per name in model.STATE
        return None if parts is None else self.model._user_state(parts)

    # ---- epochs -------------------------------------------------------------------------------
    def fit(
        self,
        x,
        y=None,
        mask=None,
        resets=None,
        *,
        epochs=1,
        validation=None,
        reset="epoch",
        max_time=None,
        max_updates=None,
        progress=True,
        checkpoint=None,
        callback=None,
        block=None,
        initial_epoch=0,
        initial_step=0,
        schedule=None,
        restore_best=False,
        patience=None,
        loss_unit=None,
    ) -> History:
        """Train for `epochs` passes over time-major data; returns a `History` (also
        `self.history`).

        x, y, mask, resets: as for `train`: x (T, B, I) or (T, B) token ids, y (T, B, O) or (T, B)
            class ids, mask (T, B) loss weights, resets (T, B) bool. Or x is a
            `tbptt.datasets.Task` (then y, mask, resets come from it).
        epochs: passes over the data. Each pass feeds `train` in blocks of `block` time steps
            (default: about 32k samples, a multiple of k1), so memory beyond the data itself stays
            bounded and the progress bar, budgets and Ctrl-C act between blocks. Results do not
            depend on `block` (stream invariance; to the bit only for the same `block`, whose
            grid a resumed fit keeps). Steps pending at the end of an epoch (T not a
            multiple of k1) stay pending into the next epoch, and after fit (call `flush()` to use
            them now): so fit(epochs=1) twice equals fit(epochs=2).
        validation: (x, y), (x, y, mask), (x, y, mask, resets) or a Task, evaluated after every
            epoch with `evaluate` (forward only, state carried over the whole set from zeros).
        reset: when the streams' state is zeroed, independently of when updates happen (k1):
            "epoch" (default) before every epoch, the first included: each pass starts the
            streams from zeros, as they started; "never": the state is carried across epochs and
            from earlier calls; an int N: every N steps, counted from the start of this call
            (steps 0, N, 2N, ...; across epoch boundaries). The explicit `resets` array applies
            in addition. As everywhere, no gradient crosses a reset.
        initial_epoch, initial_step: where in the data to begin, to go on after a fit that
            stopped (its `history.resume_at`, with the trainer it left, e.g. from a checkpoint):
            training begins at step `initial_step` of epoch `initial_epoch` (0-based), without the
            epoch's reset when it begins midway, and `epochs` is then the total, counted from
            the first epoch (as Keras's `initial_epoch`). reset=N counts steps from step 0 of
            epoch 0 too. So a fit stopped anywhere and resumed so gives the same parameters as
            one that never stopped.
        max_time: seconds of wall time for the whole fit, validation included: it stops before
            a block that would end past it (judged by the last block's and the last validation's
            durations). The partial epoch is still recorded and validated.
        max_updates: stop after exactly this many updates of this call.
        progress: show a tqdm bar of the whole run (the larger of the share of its steps and of
            `max_time` used: it ends when the run does, whichever limit ends it; with the time
            left, the running loss of the epoch, the validation loss, samples/s); when stderr is
            not a terminal (a log file), a line every 10 s instead. A line per epoch stays
            either way.
        loss_unit: what the bar and the epoch lines show losses in: None (the loss function's
            own: "nats" for cross_entropy, "mse"), or for cross_entropy "bits" or "bits/char"
            (loss / ln 2). The History keeps the loss function's own values either way.
        checkpoint: a path; on KeyboardInterrupt `self.save(checkpoint)` runs before re-raising.
        callback: `callback(trainer, history)` after every epoch (after validation); a true
            return value stops fit (say, early stopping).
        schedule: None (the optimiser's lr throughout) or a `tbptt.Schedule` (any callable
            progress -> factor): before every block the engine steps with lr x schedule(progress),
            progress being the larger of the share of the fit's steps done and of `max_time`
            used (tbptt/schedules.py); the optimiser's own `lr` is left as it was, and is what
            `train` uses again after fit. `history.lr` holds each epoch's last learning rate.
        restore_best: load the parameters of the epoch with the lowest validation loss into the
            model when fit ends (the optimiser and the carried state stay those of the last
            update). With validation, fit always keeps them: `trainer.best` = {"epoch" (from
            `initial_epoch`, as `history.best_epoch` counts from 0), "val_loss", "parameters"}.
        patience: with validation, stop ("early_stopping") after this many epochs in a row
            without a new lowest validation loss.

        Divergence (an update with a non-finite loss or gradient, see `train`) stops fit: the
        model keeps the parameters of the last good update, `history.diverged` holds the message,
        a RuntimeWarning says so, and the history is returned; the trainer can go on (e.g. with a
        lower `lr`). Ctrl-C never cuts an update in half: it is deferred to the end of the current
        block; then the history is recorded, the checkpoint saved, and KeyboardInterrupt raised.
        """
        return _fit.fit(
            self,
            x,
            y,
            mask,
            resets,
            epochs=epochs,
            validation=validation,
            reset=reset,
            max_time=max_time,
            max_updates=max_updates,
            progress=progress,
            checkpoint=checkpoint,
            callback=callback,
            block=block,
            initial_epoch=initial_epoch,
            initial_step=initial_step,
            schedule=schedule,
            restore_best=restore_best,
            patience=patience,
            loss_unit=loss_unit,
        )

    def _step_lr(self, lr: float) -> None:
        """fit's schedule: the learning rate of the next updates (the optimiser's `lr` stays)."""
        self._engine.set_lr(lr)

    def evaluate(
        self,
        x: Any,
        y: Optional[ArrayLike] = None,
        mask: Optional[ArrayLike] = None,
        resets: Optional[ArrayLike] = None,
        *,
        block: Optional[int] = None,
    ) -> Dict[str, float]:
        """Loss (and accuracy for cross-entropy) of the model on data, forward only.

        x, y, mask, resets: as for `fit` (arrays (T, B, ...) or a Task). The state starts at zeros
        and is carried over the whole of x (resets zero it where they say); the trainer's own
        state is left alone. The loss is the one training minimises: the mask-weighted mean over
        positions (MSE also averaged over outputs). Returns {"loss": float[, "accuracy": float]}.
        """
        x, y, mask, resets = _fit.arrays(x, y, mask, resets)
        if block is None:
            block = max(1, 32768 // x.shape[1])
        # With a comm: collective, the loss over every rank's streams.
        return self._evaluate(x, y, mask, resets, block=_checks.positive_int("block", block))

    def _evaluate(self, x, y, mask, resets, *, block, stop=()):
        """`evaluate`, in blocks of time steps; None if `stop` became true between blocks. With a
        comm: over every rank's streams (collective)."""
        model, T = self.model, x.shape[0]
        cuts = set(range(0, T, block))
        if resets is not None:  # cut the forward pass where a stream's state must be zeroed
            resets = np.asarray(resets) != 0
            cuts |= set(np.flatnonzero(resets.any(axis=1)).tolist())
        starts = sorted(cuts) + [T]
        state, loss, correct, weight, spec = None, 0.0, 0.0, 0.0, LOSSES[self.loss]
        for s, e in zip(starts[:-1], starts[1:]):
            if stop:
                return None
            if state is not None and resets is not None and resets[s].any():
                zero = resets[s][None, :, None]  # state is (h, c) or h, each (L, B, H)
                state = (
                    tuple(np.where(zero, 0, a) for a in state)
                    if isinstance(state, tuple)
                    else np.where(zero, 0, state)
                )
            out, state = model.predict(x[s:e], state)
            out = out.astype(np.float64)
            w = np.ones(out.shape[:2]) if mask is None else np.asarray(mask[s:e], dtype=np.float64)
            target = np.asarray(y[s:e]) if spec.classes else np.asarray(y[s:e], dtype=np.float64)
            loss += float((w * spec.loss(out, target)).sum())
            if spec.classes:
                correct += float((w * (out.argmax(axis=-1) == target)).sum())
            weight += float(w.sum())
        if self._group is not None:
            loss, correct, weight = self._group.sum([loss, correct, weight])
        if weight == 0:
            raise ValueError("no position of the evaluation data carries loss (mask is all zeros)")
        result = {"loss": loss / weight}
        if spec.classes:
            result["accuracy"] = correct / weight
        return result

    def _keep_best(self, epoch, val_loss):
        """Remember the parameters if `val_loss` is the lowest this fit has seen."""
        if self.best is None or val_loss < self.best["val_loss"]:
            self.best = {
                "epoch": epoch,
                "val_loss": float(val_loss),
                "parameters": self.model.flat_parameters.copy(),
            }

    def _load_best(self) -> None:
        """fit(restore_best=True): the kept parameters back into the model."""
        self.model.flat_parameters[:] = self.best["parameters"]

    # ---- the gradient horizon -----------------------------------------------------------------
    def horizon(self) -> dict:
        """How the gradient fades with distance: for j = 0 .. k2-1 steps back from each update's
        newest step, the mean over updates of ||dL/dh_{t-j}|| and, for an LSTM, ||dL/dc_{t-j}||
        (Frobenius norm over all streams) of every layer, since training began or the last
        `reset_horizon()`.

        Returns {"dh": (L, k2), "dc": (L, k2) (LSTM only), "updates": (k2,)}: "updates"[j]
        counts the updates whose window reached j steps back; the means are NaN where it is 0. A
        gradient that vanishes shows as norms falling by orders of magnitude with j; one cut by
        resets is 0."""
        sums, updates = self._engine.horizon()
        L = self.model.num_layers
        if len(updates) == 0:
            sums, updates = np.zeros((2, L, self.k2)), np.zeros(self.k2, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(updates > 0, sums / np.maximum(updates, 1), np.nan)
        result = {"dh": means[0]}
        if "c" in self.model.STATE:  # the engines return zeros in place of dL/dc for other cells
            result["dc"] = means[1]
        result["updates"] = np.asarray(updates)
        return result

    def reset_horizon(self) -> None:
        """Start averaging the gradient horizon afresh."""
        self._engine.reset_horizon()

    # ---- checkpoints --------------------------------------------------------------------------
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write a checkpoint atomically: model, optimiser state, carried state, pending steps and
        schedule. `tbptt.load_trainer(path)` resumes exactly where this trainer is now.

        With a comm, every rank writes its own file, since each holds its own streams' state:
        rank 0 `path` (a complete checkpoint, also readable by `tbptt.load_trainer(path)` without
        MPI for its model), rank r `<stem>.rank<r><suffix>`; `tbptt.load_trainer(path,
        comm=comm)` on the same number of ranks goes on exactly."""
        self._save(path)

    def _save(self, path, extra: dict | None = None) -> None:
        """`save`, with `extra` (JSON) in the file's header: `tbptt.checkpoint.save_trainer`."""
        group = self._group
        if group is not None:
            path = group.rank_path(path)
            extra = {**(extra or {}), "rank": group.rank, "ranks": group.size}
        header = {
            **(extra or {}),
            "kind": "trainer",
            "model": self.model.config(),
            "trainer": self._settings(),
        }
        arrays = {f"model/{name}": value for name, value in self.model.state_dict().items()}
        arrays.update(
            {f"engine/{key}": np.asarray(value) for key, value in self._engine.snapshot().items()}
        )
        _files.save_arrays(path, header, arrays)

    def _settings(self) -> Dict[str, Any]:
        """The constructor's arguments but the model and comm, and B: what a trainer file's
        header and a pickled trainer keep (`_from_settings` builds the trainer again)."""
        return {
            "k1": self.k1,
            "k2": self.k2,
            "loss": self.loss,
            "optimizer": self.optimizer.config(),
            "clip_norm": self.clip_norm,
            "backend": self.backend,
            "num_streams": self.num_streams,
            "seed": self.seed,
            "recompute": self.recompute,
        }

    @classmethod
    def _from_settings(
        cls,
        model: Recurrent,
        settings: Dict[str, Any],
        backend: Optional[str] = None,
        comm: Any = None,
    ) -> Trainer:
        """A new trainer of `model` with `_settings()` (another backend if given); its engine
        is fresh: `_restore_engine` next."""
        trainer = cls(
            model,
            settings["k1"],
            settings["k2"],
            loss=settings["loss"],
            optimizer=optimizer_from_config(settings["optimizer"]),
            clip_norm=settings["clip_norm"],
            backend=settings["backend"] if backend is None else backend,
            comm=comm,
            seed=settings.get("seed", 0),  # files before dropout: no seed
            recompute=settings.get("recompute", False),
        )  # nor before recompute
        trainer.num_streams = settings["num_streams"]
        return trainer

    def _restore_engine(self, snapshot: Dict[str, np.ndarray], written_by: str) -> None:
        """Restore an engine snapshot written by the `written_by` backend (ValueError if it does
        not fit): in the current schema, which suits either backend, once an older file's form
        is converted (`tbptt.engines.old_files`)."""
        self._engine.restore(
            _old_files.upgrade(
                snapshot,
                written_by,
                self.model.spec,
                self.k1,
                self.k2,
                self.loss,
                self.optimizer.config(),
            )
        )

    # ---- pickle and copy.deepcopy -------------------------------------------------------------
    def __getstate__(self) -> Dict[str, Any]:
        """What a checkpoint holds (tbptt._pickled): the model (its config and parameters), the
        settings, the engine's snapshot in the shared schema, and `best` and `history`. No
        engine: the unpickled trainer builds its own and restores the snapshot, so it goes on
        exactly as this one would, in another process, with another instruction-set module.
        The gradient horizon (a diagnostic) starts afresh, as after `load_trainer`."""
        if self._group is not None:
            raise TypeError(
                "a data-parallel Trainer (comm=...) cannot be pickled or copied: its "
                "communicator belongs to this process. Trainer.save writes each "
                "rank's file; tbptt.load_trainer(path, comm=...) reads them"
            )
        return _pickled.state(
            "tbptt.Trainer",
            model=self.model,
            trainer=self._settings(),
            engine=self._engine.snapshot(),
            best=self.best,
            history=self.__dict__.get("history"),
        )

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state = _pickled.check(state, "tbptt.Trainer")
        trainer = Trainer._from_settings(state["model"], state["trainer"])
        trainer._restore_engine(state["engine"], state["trainer"]["backend"])
        trainer.best = state["best"]
        if state["history"] is not None:
            trainer.history = state["history"]
        self.__dict__.update(trainer.__dict__)

    def __repr__(self) -> str:
        ranks = "" if self._group is None else f", comm=<{self._group.size} ranks>"
        return (
            f"Trainer(k1={self.k1}, k2={self.k2}, loss={self.loss!r}, optimizer={self.optimizer}, "
            f"clip_norm={self.clip_norm}, backend={self.backend!r}"
            f"{', recompute=True' if self.recompute else ''}{ranks})"
        )
