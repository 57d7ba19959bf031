"""The TBPTT configuration study: train the same model under a grid of (k1, k2) (and of state-reset
policies) on the same data with the same budget of steps, and compare.

    rows = tbptt.sweep(tbptt.datasets.echo(20_000, 32, delay=5), k1=[2, 5, 10], k2=[2, 5, 10],
                       validation=tbptt.datasets.echo(2_000, 32, delay=5, seed=1),
                       hidden=32, optimizer=tbptt.Adam(1e-2), steps=10_000)
    print(tbptt.sweep_table(rows))
    tbptt.plot_sweep(rows, "figures/")        # curves.png, heatmap.png, horizon.png

Every configuration starts from the same initial parameters (the model is built from `seed`),
sees the same data in the same order, and trains for exactly `steps` time steps (of all B
streams); configurations with a smaller k1 make more updates for the same data. What each row
holds is documented in `sweep`. `tbptt sweep` (see `tbptt sweep --help`) runs this from the shell
and writes the rows (JSON, CSV) and the plots into a folder.

The rows' table, files and plots are in `tbptt.sweep_report`; the command in `tbptt.cli.sweep`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _blocks, _checks, _fit, _progress, _sizes
from .._rss import PeakRSS
from ..datasets import Task
from ..model import build
from ..optim import OPTIMIZERS, Adam, from_config
from ..trainer import BACKENDS, MAX_K, Trainer

__all__ = ["sweep", "ROW_KEYS"]

# The keys of every row `sweep` returns, in table order (see `sweep` for their meaning).
ROW_KEYS = (
    "k1",
    "k2",
    "reset",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "samples_per_s",
    "window_bytes",
    "peak_rss_bytes",
    "updates",
    "steps",
    "samples",
    "seconds",
    "horizon_ratio",
    "diverged",
    "horizon",
    "curve",
)
TAIL = 0.1  # train_loss: the mean loss of the updates in the last 10% of the budget


def sweep(
    data,
    y=None,
    mask=None,
    resets=None,
    *,
    k1,
    k2=None,
    pairs=None,
    reset="epoch",
    steps=None,
    validation=None,
    loss=None,
    input_size=None,
    output_size=None,
    hidden=32,
    layers=1,
    cell="lstm",
    forget_bias=1.0,
    dtype="float32",
    seed=0,
    optimizer=None,
    clip_norm=5.0,
    backend="cpp",
    recompute=False,
    points=20,
    progress=False,
    callback=None,
    comm=None,
    torch_model=None,
    torch_horizon=False,
) -> list:
    """Train one model per configuration of a grid and return the table, one dict per row.

    data, y, mask, resets: a `tbptt.datasets.Task`, or arrays as for `Trainer.train`: x (T, B, I)
        features or (T, B) integer token ids, y (T, B, O) or (T, B) class ids, mask (T, B) loss
        weights, resets (T, B) bool (the data's own episode boundaries; applied in every
        configuration, on top of the reset policy).
    k1: an int or a list of ints. k2: None (then k2 = k1: chunked TBPTT, one configuration per
        k1), an int or a list (then every (k1, k2) of the product). pairs: an explicit list of
        (k1, k2) instead of k1 x k2 (then k1 and k2 must be left out: pass k1=None).
    reset: a reset policy or a list of them (one more axis of the grid), as `Trainer.fit`'s
        `reset`: "epoch" (zero the state at the start of every pass over the data), "never"
        (carry it across passes), or an int N (zero it every N steps, counted from step 0).
    steps: the budget: time steps trained per configuration (default: T, one pass). When
        steps > T the data are used again from the start (another pass).
    validation: (x, y[, mask[, resets]]) or a Task: evaluated (`Trainer.evaluate`, forward only,
        state from zeros) at every point of the learning curve and at the end.
    loss: "mse" or "cross_entropy" (default: the Task's; for arrays, cross-entropy when y holds
        integers, else MSE). input_size, output_size: default from the Task, else from the data
        (features: x.shape[2]; token ids: the largest id in x and validation + 1; likewise y).
    hidden, layers, cell, forget_bias, dtype, seed: the model, a `tbptt.LSTM` (cell "lstm", the
        default; forget_bias applies to it only), `tbptt.GRU` ("gru") or `tbptt.RNN` ("rnn", tanh)
        with that seed: every configuration starts from the same parameters.
    optimizer: `tbptt.Adam` / `tbptt.SGD` settings (default `Adam()`), copied per configuration.
    clip_norm, backend, recompute: as for `Trainer`.
    torch_model: None, or a callable returning a `torch.nn.Module` of `tbptt.torch.Trainer`'s
        protocol (`module(x, state) -> (outputs, state)`), or a (module, head) pair: each
        configuration then trains `torch_model()`, built after `torch.manual_seed(seed)` (so
        every configuration starts from the same parameters), with `tbptt.torch.Trainer` (the
        semantics of `recompute=True`) and the torch optimiser doing what `optimizer` says.
        hidden, layers, cell, forget_bias, dtype, backend and recompute are not used then;
        window_bytes is None. The gradient horizon is NaN unless torch_horizon=True: then
        `tbptt.torch.Trainer(horizon=True)` measures it (the window's forward one step per
        call of the module, slower), a row of "dh" per state tensor entering each step
        (docs/torch.md); horizon_ratio is of the first (h of an LSTM's (h, c)).
    points: points of the learning curve (blocks of steps / points steps each).
    progress: a tqdm bar over all configurations' steps (in a log: a line every 10 s).
    callback: `callback(row)` after each configuration (say, to print it).
    comm: an mpi4py communicator: the configurations are spread over its ranks (rank r trains
        configurations r, r + R, ...; each one in one process, on all the data), and every rank
        returns the whole table. Collective: every rank calls sweep with the same arguments.

    Each row holds:
        k1, k2, reset: the configuration.
        train_loss: the mean loss of the updates made in the last 10% of the budget (NaN if none).
        val_loss, val_accuracy: on `validation` at the end (None without validation; accuracy
            only for cross-entropy).
        samples_per_s: samples (time steps x streams) per second of the `train` calls (updates
            and optimiser included; validation excluded).
        window_bytes: the activations the engine keeps for its backward window: max(k1, k2) + 1
            steps x B streams x (6 H L values + the input + a reset flag), in the C++ engine's
            layout (the memory that grows with k1, k2; the NumPy reference keeps more per step).
        peak_rss_bytes: how far the configuration's `train` calls raised the process's resident
            memory, at their peak (Linux: VmHWM, reset through /proc/self/clear_refs before each
            call; growth that stays after a call, like the window allocated at the first one, is
            carried into the next; evaluations between calls are not counted; None where this
            is not available). It includes the engine's buffers and the per-call copies of the
            data blocks, but memory that an earlier configuration freed and the allocator
            reuses does not show: a rough, process-level number, often 0 after the first
            configuration. window_bytes is the exact one.
        updates: the updates made (`trainer.updates`). steps, samples: trained (fewer than the
            budget only if training diverged). seconds: time in `train` calls.
        horizon: `trainer.horizon()` over the whole run, with numpy arrays: {"dh": (L, k2),
            "dc": (L, k2) (LSTM only), "updates": (k2,)}, the mean ||dL/dh|| and ||dL/dc|| j
            steps back.
        horizon_ratio: ||dL/dh|| of the bottom layer at the oldest step of the window
            (j = k2 - 1) over that at the newest (j = 0): how much of the gradient survives k2
            steps (NaN when undefined).
        diverged: None, or the message of the FloatingPointError that stopped this configuration
            (its row then holds the numbers of the last good parameters).
        curve: {"steps": [...], "train_loss": [...], "val_loss": [...], "val_accuracy": [...]}:
            the mean loss of the updates of each block of steps, and the validation results at
            its end (lists empty without validation / for MSE).
    """
    x, y, mask, resets = _fit.arrays(data, y, mask, resets)
    validation = None if validation is None else _fit.validation_arrays(validation)
    loss, input_size, output_size = _sizes_of(data, x, y, validation, loss, input_size, output_size)
    steps = x.shape[0] if steps is None else _checks.positive_int("steps", steps)
    study = _Study(
        data=(x, y, mask, resets),
        validation=validation,
        steps=steps,
        marks=_marks(steps, _checks.positive_int("points", points)),
        model=dict(
            cell=cell,
            input_size=input_size,
            hidden_size=hidden,
            output_size=output_size,
            num_layers=layers,
            dtype=dtype,
            seed=seed,
            forget_bias=forget_bias,
        ),
        trainer=dict(
            loss=loss,
            optimizer=_optimizer(optimizer),
            clip_norm=clip_norm,
            backend=_backend(backend),
            recompute=recompute,
        ),
        torch_model=torch_model,
        torch_horizon=bool(torch_horizon),
    )
    configs = _grid(k1, k2, pairs, reset)
    if torch_model is None:
        build(**study.model)  # fail on a bad model argument now, not after the first configuration
    elif not callable(torch_model):
        raise TypeError(
            f"torch_model must be a callable returning a torch.nn.Module, got "
            f"{type(torch_model).__name__}"
        )
    if comm is None:
        return study.train_all(configs, progress, callback)
    return _spread(comm, configs, study.train_all, progress, callback)


def _sizes_of(data, x, y, validation, loss, input_size, output_size) -> tuple:
    """(loss, input_size, output_size): given, else the Task's, else from the data."""
    if isinstance(data, Task):
        loss = data.loss if loss is None else loss
        input_size = data.input_size if input_size is None else input_size
        output_size = data.output_size if output_size is None else output_size
    tokens = x.ndim == 2
    if loss is None:
        loss = "cross_entropy" if np.asarray(y).dtype.kind in "iu" and np.ndim(y) == 2 else "mse"
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
    sets = [(x, y)] + ([validation[:2]] if validation is not None else [])
    if input_size is None:
        input_size = (max(int(np.max(a)) for a, _ in sets) + 1) if tokens else x.shape[2]
    if output_size is None:
        output_size = (
            (max(int(np.max(b)) for _, b in sets) + 1)
            if loss == "cross_entropy"
            else np.shape(y)[2]
        )
    return loss, input_size, output_size


def _grid(k1, k2, pairs, reset) -> list:
    """The configurations (k1, k2, reset policy), in the table's order."""
    if pairs is not None:
        if k1 is not None or k2 is not None:
            raise TypeError("pass either pairs=[(k1, k2), ...] or k1 (and k2), not both")
        pairs = [(_k("k1", a), _k("k2", b)) for a, b in pairs]
    else:
        if k1 is None:
            raise TypeError("k1 is required (an int or a list of ints), unless pairs is given")
        k1s = [_k("k1", k) for k in _as_list(k1)]
        pairs = (
            [(k, k) for k in k1s]
            if k2 is None
            else [(a, b) for a in k1s for b in (_k("k2", k) for k in _as_list(k2))]
        )
    policies = _as_list(reset)
    for policy in policies:
        _blocks.reset_every(policy)  # ValueError for a bad policy, before anything runs
    configs = [(a, b, p) for (a, b), p in itertools.product(pairs, policies)]
    if not configs:
        raise ValueError("the grid is empty: give at least one k1 (or pair) and one reset policy")
    if len({(a, b, str(p)) for a, b, p in configs}) != len(configs):
        raise ValueError(f"the grid repeats a configuration: {configs}")
    return configs


def _optimizer(optimizer):
    optimizer = Adam() if optimizer is None else optimizer
    if not isinstance(optimizer, OPTIMIZERS):
        raise TypeError(
            f"optimizer must be tbptt.SGD, tbptt.Adam or tbptt.AdamW, got "
            f"{type(optimizer).__name__}"
        )
    return optimizer


def _backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _marks(steps: int, points: int) -> list:
    """The learning curve's points: the steps after which it is measured."""
    return sorted({int(round(steps * (i + 1) / points)) for i in range(points)} - {0})


@dataclass
class _Study:
    """What every configuration shares: the data, the budget, the model and trainer settings."""

    data: tuple  # (x, y, mask, resets)
    validation: tuple | None
    steps: int
    marks: list
    model: dict  # build()'s arguments
    trainer: dict  # Trainer's, the optimizer copied per configuration
    torch_model: Callable | None = None  # a factory of torch modules (tbptt.torch.Trainer)
    torch_horizon: bool = False  # ... whose trainers measure the gradient horizon

    def train_all(self, share: list, show_progress: bool, report: Callable | None) -> list:
        """The rows of the configurations in `share`, in order."""
        B = self.data[0].shape[1]  # a redrawn bar on a terminal, a line every 10 s in a log
        bar = _progress.bar(len(share) * self.steps * B, enabled=show_progress)
        rows = []
        try:
            for k1, k2, policy in share:
                bar.set_description(f"TBPTT({k1}, {k2}) reset={policy}")
                if self.torch_model is not None:
                    rows.append(_run(self._torch_trainer(k1, k2), self, policy, bar))
                else:
                    model = build(**self.model)
                    trainer = Trainer(
                        model,
                        k1,
                        k2,
                        **{
                            **self.trainer,
                            "optimizer": from_config(self.trainer["optimizer"].config()),
                        },
                    )
                    row = _run(trainer, self, policy, bar)
                    row["window_bytes"] = _sizes.ring_bytes(
                        model, k1, k2, B, self.data[0].ndim == 2
                    )
                    rows.append(row)
                if report is not None:
                    report(row)
        finally:
            bar.close()
        return rows

    def _torch_trainer(self, k1: int, k2: int) -> Any:
        """A tbptt.torch.Trainer of a new `torch_model()` (seeded: the same start every time)."""
        import torch

        from ..torch import Trainer as TorchTrainer
        from ..torch._trainer import optimizer_for

        assert self.torch_model is not None
        torch.manual_seed(self.model["seed"])
        built = self.torch_model()
        module, head = built if isinstance(built, tuple) else (built, None)
        params = list(module.parameters()) + ([] if head is None else list(head.parameters()))
        return TorchTrainer(
            module,
            k1,
            k2,
            loss=self.trainer["loss"],
            head=head,
            optimizer=optimizer_for(self.trainer["optimizer"], params),
            clip_norm=self.trainer["clip_norm"],
            horizon=self.torch_horizon,
        )


def _spread(comm, configs, train_all, progress, callback):
    """The grid over the ranks: rank r trains configurations r, r + R, ... (one rank's bar); every
    rank gets the whole table in the grid's order. A rank that fails makes every rank raise."""
    rank, ranks = comm.Get_rank(), comm.Get_size()
    try:
        mine, error = train_all(configs[rank::ranks], progress and rank == 0, callback), None
    except Exception as caught:  # noqa: BLE001 - raised on every rank once all know (below)
        mine, error = None, caught
    shares = comm.allgather(None if error is not None else mine)
    if error is not None:
        raise error
    if any(share is None for share in shares):
        raise ValueError("sweep: a configuration failed on another rank (its error says why)")
    rows = [None] * len(configs)
    for r, share in enumerate(shares):
        rows[r::ranks] = share
    return rows


def _k(name, value):
    return _checks.positive_int(name, value, maximum=MAX_K)


def _as_list(value):
    if isinstance(value, (list, tuple, range, np.ndarray)):
        return list(value)
    return [value]


def _run(trainer: Any, study: _Study, policy, bar) -> dict:
    """Train one configuration for the study's steps, with a point of the learning curve at each
    of its marks; return its row."""
    x, y, mask, resets = study.data
    T, B = x.shape[0], x.shape[1]
    tail_start = int(math.floor(study.steps * (1 - TAIL)))
    curve: dict = {"steps": [], "train_loss": [], "val_loss": [], "val_accuracy": []}
    point, tail = [], []  # losses since the last point of the curve; losses of the last 10%
    seconds, done, diverged = 0.0, 0, None
    rss, policy_resets = PeakRSS(), _blocks.Resets(policy, resets)
    for block in _blocks.blocks(T, 0, study.steps, stops=[*study.marks, tail_start]):
        if policy_resets.at_pass_start(block):
            trainer.reset_state()
        s, e = block.start, block.end
        rss.before()
        tic = time.perf_counter()
        try:
            new = trainer.train(
                x[s:e], y[s:e], None if mask is None else mask[s:e], policy_resets.of(block, B)
            )
        except FloatingPointError as error:
            diverged, new = str(error), np.zeros(0)
        seconds += time.perf_counter() - tic
        rss.after()
        point.append(new)
        if done >= tail_start:
            tail.append(new)
        if diverged is None:
            bar.update((e - s) * B)
            done += e - s
        if done in study.marks or diverged is not None:
            _point(curve, done, point, trainer, study.validation)
            point = []
        if diverged is not None:
            break
    bar.update((study.steps - done) * B)  # a diverged configuration's unused budget
    return _row(
        trainer,
        policy,
        curve,
        np.concatenate(tail) if tail else np.zeros(0),
        (done, B, seconds),
        rss.peak_growth(),
        diverged,
    )


def _point(curve: dict, done: int, losses: list, trainer: Any, validation) -> None:
    """A point of the learning curve: the mean loss of the updates since the last point, and
    the validation results now."""
    values = np.concatenate(losses) if losses else np.zeros(0)
    curve["steps"].append(done)
    curve["train_loss"].append(float(values.mean()) if values.size else math.nan)
    if validation is not None:
        result = trainer.evaluate(*validation)
        curve["val_loss"].append(result["loss"])
        if "accuracy" in result:
            curve["val_accuracy"].append(result["accuracy"])


def _row(
    trainer: Any,
    policy,
    curve: dict,
    tail: np.ndarray,
    work: tuple,
    peak_rss: int | None,
    diverged: str | None,
) -> dict:
    """A configuration's row (see `sweep`); work: (steps trained, B, seconds in train calls).
    window_bytes is filled in by the caller."""
    horizon = trainer.horizon()
    dh = horizon["dh"][0]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (
            float(dh[-1] / dh[0])
            if dh.size and np.isfinite(dh[[0, -1]]).all() and dh[0] > 0
            else math.nan
        )
    steps, B, seconds = work
    return {
        "k1": trainer.k1,
        "k2": trainer.k2,
        "reset": policy,
        "train_loss": float(tail.mean()) if tail.size else math.nan,
        "val_loss": curve["val_loss"][-1] if curve["val_loss"] else None,
        "val_accuracy": curve["val_accuracy"][-1] if curve["val_accuracy"] else None,
        "samples_per_s": steps * B / seconds if seconds > 0 else math.nan,
        "window_bytes": None,
        "peak_rss_bytes": peak_rss,
        "updates": trainer.updates,
        "steps": steps,
        "samples": steps * B,
        "seconds": seconds,
        "horizon_ratio": ratio,
        "diverged": diverged,
        "horizon": horizon,
        "curve": curve,
    }
