"""`tbptt.torch.Trainer`: TBPTT(k1, k2) for any PyTorch module, with the semantics of
docs/semantics.md §3 and `recompute=True` (docs/torch.md, "Training any model").

To be read next to §3. The trainer keeps, per held step, what the step needs to run again (its
inputs, targets, loss weights and resets), never activations: every forward it needs runs again
from a state it stored, detached. Three marks on the time axis (indices count the steps since
training began) hold all of §3:

    origin   where the recurrence starts: 0, or the step after a divergence (the module's
             initial state, `state=None`, enters it)
    fresh    `a` and `S_a`: the steps [a, now) are the current weights' forward from the state
             S_a entering step a (before step a's resets). §3's "the forward runs again with the
             new weights over the steps the next window reads, from the stored state entering
             them" is this mark: after an update at t it moves to t - (k2 - k1) when k2 > k1
             (t + 1 when k2 <= k1) and S_a is the state the update's own forward had there.
    before   `p`, `S_p` and the weights θ_old before the last optimiser step: the steps
             [p, a) are θ_old's forward from S_p. Only a `flush()` reaching past `a` reads it
             (§3: "an update whose window still reaches into steps computed with older weights
             first computes its window again the same way").

An update at step t over its r pending steps (§3 items 1-3):
    w0 = max(t - k2 + 1, origin)                          the window's oldest step
    S_w0 = the forward [a, w0) from S_a, no gradient       (or [p, w0) from S_p with θ_old)
    outputs of (t - r, t]: the forward [w0, t] from S_w0 with autograd (the steps of the
        k1 newest before w0, when k2 < k1, from the no-gradient part: constants; a declared
        `head` still trains on them, as the engine's linear head does)
    L = Σ w·loss / Σ w over the positions with w > 0;  backward; check; clip; step.
The carried state is never kept up to date between updates: `state()` runs [a, now) from S_a.
So the forward in training is the window's forward, k2 steps, plus one step (the state entering
the next window, with the new weights), per update.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import _checks, _fit, _pickled
from ..datasets import Task
from ..engines.native import core
from ..history import History

__all__ = ["Trainer", "optimizer_for"]

LOSSES = ("mse", "cross_entropy")
MAX_K = 2**30
LossFn = Callable[[Tensor, Tensor], Tensor]


def _checked_loss(loss: Any) -> Union[str, LossFn]:
    """Trainer's `loss`: a name of LOSSES or a callable; ValueError / TypeError naming it."""
    if isinstance(loss, str):
        if loss == "gaussian":  # the engines' likelihood head; torch has its own NLL
            raise ValueError(
                "loss='gaussian' is tbptt.Trainer's; for a torch module pass a "
                "callable, e.g. the per-position torch.nn.GaussianNLLLoss("
                "reduction='none', full=True) of the mean and softplus(raw) ** 2 "
                "(docs/torch.md)"
            )
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} or a callable, got {loss!r}")
    elif not callable(loss):
        raise TypeError(f"loss must be one of {LOSSES} or a callable, got {type(loss).__name__}")
    return loss


def optimizer_for(settings: Any, params: Any) -> torch.optim.Optimizer:
    """The torch optimiser doing what a `tbptt.SGD / Adam / AdamW` does (docs/semantics.md
    §3 item 3), over `params`."""
    c = settings.config()
    if c["name"] == "sgd":
        return torch.optim.SGD(
            params, lr=c["lr"], momentum=c["momentum"], weight_decay=c.get("weight_decay", 0.0)
        )
    if c["name"] == "adam":
        return torch.optim.Adam(params, lr=c["lr"], betas=tuple(c["betas"]), eps=c["eps"])
    if c["name"] == "adamw":
        return torch.optim.AdamW(
            params,
            lr=c["lr"],
            betas=tuple(c["betas"]),
            eps=c["eps"],
            weight_decay=c["weight_decay"],
        )
    raise ValueError(f"no torch optimiser for {c['name']!r}")


class _Step:
    """One held time step: what running it again needs, and the loss it carries."""

    __slots__ = ("x", "y", "w", "reset")

    def __init__(self, x: Tensor, y: Tensor, w: Tensor, reset: Optional[Tensor]) -> None:
        self.x, self.y, self.w = x, y, w
        self.reset = reset  # (B,) bool: zero the stream's state before this step; None: none


def _map(state: Any, f: Callable[[Tensor], Tensor]) -> Any:
    """f applied to every tensor of a state: a tensor or a (nested) tuple / list of tensors."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return f(state)
    if isinstance(state, (tuple, list)):
        parts = [_map(s, f) for s in state]
        if hasattr(state, "_fields"):  # a namedtuple
            return type(state)(*parts)
        return type(state)(parts)
    raise TypeError(
        f"the module's state must be a tensor or a (nested) tuple of tensors, got "
        f"{type(state).__name__}"
    )


def _tensors(state: Any) -> List[Tensor]:
    out: List[Tensor] = []

    def keep(t: Tensor) -> Tensor:
        out.append(t)
        return t

    _map(state, keep)
    return out


def _detached(state: Any) -> Any:
    # a copy: a kernel may hand out memory it reuses, and a stored state must stay as it was
    return _map(state, lambda t: t.detach().clone())


class Trainer:
    """Train a PyTorch module in place with TBPTT(k1, k2), exactly as `tbptt.Trainer(...,
    recompute=True)` trains its own models (docs/semantics.md §3; docs/torch.md).

    module: `module(x, state) -> (outputs, state)` over a run of steps, x (T, B, ...) time-major,
        `state=None` meaning the module's initial state; the state is a tensor or a (nested)
        tuple of tensors with the B streams on dim `state_batch_dim` (torch's (num_layers, B, H)).
    loss: "mse" (y (T, B, ...) like the outputs; the mean over the output elements, as
        `nn.MSELoss`), "cross_entropy" (outputs (T, B, C) logits, y (T, B) class ids), or a
        callable `loss(outputs, targets) -> (T, B)` per-position losses of a run of steps. An
        update's loss is the mask-weighted mean over the positions of its k1 newest steps.
    optimizer: a `torch.optim.Optimizer` over the module's (and head's) parameters (default
        `torch.optim.Adam(..., lr=1e-3)`). clip_norm: as `torch.nn.utils.clip_grad_norm_`.
    head: None, or a module applied to the module's outputs (then `module` returns features and
        `head(features)` the outputs): with k2 < k1, the steps of an update before its window
        still train the head, as the engine's linear head (without one they count in the loss
        and train nothing: everything computed there is a constant, §3 item 2).
    state_batch_dim: the dim of every state tensor that holds the streams.
    horizon: measure the gradient horizon (`horizon()`): the window's forward then runs one
        step per call of the module, to reach the state between two steps.
    """

    history: History  # the last fit's record: set by `fit`

    def __init__(
        self,
        module: nn.Module,
        k1: int,
        k2: int,
        loss: Union[str, LossFn] = "mse",
        optimizer: Optional[torch.optim.Optimizer] = None,
        clip_norm: Optional[float] = None,
        *,
        head: Optional[nn.Module] = None,
        state_batch_dim: int = 1,
        horizon: bool = False,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if head is not None and not isinstance(head, nn.Module):
            raise TypeError(f"head must be a torch.nn.Module or None, got {type(head).__name__}")
        self.module, self.head = module, head
        self.k1 = _checks.positive_int("k1", k1, maximum=MAX_K)
        self.k2 = _checks.positive_int("k2", k2, maximum=MAX_K)
        self.loss = _checked_loss(loss)
        named = dict(module.named_parameters())
        if head is not None:
            named.update({f"head.{k}": v for k, v in head.named_parameters()})
        self._names = {id(p): name for name, p in named.items()}
        if optimizer is None:
            optimizer = torch.optim.Adam(list(named.values()), lr=1e-3)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        for p in self._params:
            if id(p) not in self._names:
                raise ValueError(
                    f"optimizer holds a parameter of shape {tuple(p.shape)} that is "
                    f"not the module's (nor the head's)"
                )
        if clip_norm is not None:
            clip_norm = _checks.finite_float("clip_norm", clip_norm)
            if clip_norm <= 0:
                raise ValueError(f"clip_norm must be > 0 or None, got {clip_norm}")
        self.clip_norm = clip_norm
        self.state_batch_dim = _checks.nonnegative_int("state_batch_dim", state_batch_dim)
        floats = [p for p in named.values() if p.is_floating_point()]
        self.dtype = floats[0].dtype if floats else torch.get_default_dtype()
        self.device = floats[0].device if floats else torch.device("cpu")
        self._np_dtype = torch.empty(0, dtype=self.dtype).numpy().dtype
        self._forget()
        self.num_streams: Optional[int] = None  # B, fixed by the first call
        self._shapes: Optional[Dict[str, Any]] = None  # x's and y's trailing shapes, ids or not
        self._updates = 0
        # fit (tbptt._fit): no MPI group; the best epoch; the lrs a schedule scales
        self._group = None
        self.best: Any = None
        self._lr_base: Optional[List[float]] = None
        if not isinstance(horizon, (bool, np.bool_)):
            raise TypeError(f"horizon must be a bool, got {type(horizon).__name__}")
        # the gradient horizon (horizon=True): (sums (n, k2) or None, updates (k2,))
        self._horizon: Optional[Tuple[Any, np.ndarray]] = (
            (None, np.zeros(self.k2, np.int64)) if horizon else None
        )

    def _forget(self, origin: int = 0) -> None:
        """No held step: the recurrence starts at `origin` from the module's initial state."""
        self._held: List[_Step] = []
        self._held_from = origin  # the index of self._held[0]
        self._count = origin  # steps since training began (the next step's index)
        self._origin = origin
        self._fresh = origin  # a: [a, now) is the current weights' forward from S_a
        self._fresh_state: Any = None
        self._before: Optional[Tuple[int, Any, List[Tensor]]] = None  # (p, S_p, θ_old)
        self._pending = 0
        self._reset_next = False

    # ---- public -------------------------------------------------------------------------------
    @property
    def pending_steps(self) -> int:
        """Steps processed since the last update."""
        return self._pending

    @property
    def updates(self) -> int:
        """Updates made so far (including those that made no optimiser step)."""
        return self._updates

    def train(self, x: Any, y: Any, mask: Any = None, resets: Any = None) -> np.ndarray:
        """Process T more steps of the B streams; make an update every k1 steps.

        x: (T, B, ...) (floats are converted to the module's dtype, integers stay int64),
        y: (T, B, ...), mask: optional (T, B) loss weights >= 0, resets: optional (T, B) bool
        (zero stream b's state before step t). Tensors or arrays. Returns the loss of each update
        made in this call (float64). Raises `FloatingPointError` (tbptt's Divergence) when an
        update's loss or gradient is not finite: nothing of it is applied, its steps are
        dropped, every stream starts again from the initial state; its `losses` attribute holds
        the losses of the updates this call applied before it (docs/semantics.md §3.6)."""
        x, y, mask, resets = self._checked(x, y, mask, resets)
        losses: List[float] = []
        for t in range(x.shape[0]):
            reset = None if resets is None else resets[t]
            if self._reset_next:
                reset = torch.ones(x.shape[1], dtype=torch.bool, device=self.device)
                self._reset_next = False
            if reset is not None and not bool(reset.any()):
                reset = None
            w = (
                torch.ones(x.shape[1], dtype=self.dtype, device=self.device)
                if mask is None
                else mask[t].clone()
            )
            self._held.append(
                _Step(x[t].clone(), y[t].clone(), w, None if reset is None else reset.clone())
            )
            self._count += 1
            self._pending += 1
            if self._pending == self.k1:
                try:
                    loss = self._update()
                except FloatingPointError as error:
                    setattr(error, "losses", np.asarray(losses, np.float64))
                    raise
                if loss is not None:
                    losses.append(loss)
        return np.asarray(losses, dtype=np.float64)

    def flush(self) -> Optional[float]:
        """Make the update over the pending steps (fewer than k1) now. Returns its loss, or None
        if no step is pending or no pending position carries loss."""
        if self._pending == 0:
            return None
        return self._update()

    def reset_state(self) -> None:
        """Zero every stream's state before the next step (pending steps stay pending): a row
        of `resets` at the next step."""
        self._reset_next = True

    def state(self) -> Any:
        """The carried state as the next step will see it (a `reset_state()` applied), the
        current weights' forward over the steps since the fresh mark; None while it is the
        module's initial state (before the first step, after a divergence)."""
        with torch.no_grad():
            _, _, state = self._run(self._fresh, self._count, self._fresh_state)
        if self._reset_next:
            state = _map(state, torch.zeros_like)
        return state

    def evaluate(
        self,
        x: Any,
        y: Any = None,
        mask: Any = None,
        resets: Any = None,
        *,
        block: Optional[int] = None,
    ) -> Dict[str, float]:
        """The loss training minimises (the mask-weighted mean over positions), and the
        accuracy for cross-entropy, of the module on data (arrays, tensors or a
        `tbptt.datasets.Task`), forward only: from the initial state over the whole of x (resets
        zero it where they say), in runs of at most `block` steps; the trainer's state is left
        alone. Returns {"loss": float[, "accuracy": float]}."""
        if isinstance(x, Task):
            x, y, mask, resets = _fit.arrays(x, y, mask, resets)
        xa, ya = self._array("x", x), self._array("y", y)
        if xa.ndim < 2 or ya.shape[:2] != xa.shape[:2]:
            raise ValueError(
                f"x and y must be time-major with the same (T, B): got {xa.shape} and {ya.shape}"
            )
        if block is None:
            block = max(1, 32768 // max(xa.shape[1], 1))
        result = self._evaluate(xa, ya, mask, resets, block=_checks.positive_int("block", block))
        assert result is not None
        return result

    def _evaluate(
        self, x: Any, y: Any, mask: Any, resets: Any, *, block: int, stop: Any = ()
    ) -> Optional[Dict[str, float]]:
        """`evaluate` of checked-shape data, in runs of `block` steps; None if `stop` became
        true between two runs (fit's Ctrl-C)."""
        xa, ya = self._array("x", x), self._array("y", y)
        T, B = xa.shape[:2]
        m = _checks.mask(
            None if mask is None else self._array("mask", mask), (T, B), self._np_dtype
        )
        r = _checks.resets(None if resets is None else self._array("resets", resets), (T, B))
        xt, yt = self._values("x", xa), self._values("y", ya)
        w = (
            torch.ones((T, B), dtype=self.dtype, device=self.device)
            if m is None
            else torch.from_numpy(m).to(self.device)
        )
        if not bool(w.sum() > 0):
            raise ValueError("no position of the evaluation data carries loss (mask is all zeros)")
        starts = set(range(0, T, block))
        if r is not None:
            starts |= {t for t in range(1, T) if r[t].any()}
        cuts = sorted(starts) + [T]
        state, loss, correct = None, 0.0, 0.0
        with torch.no_grad():
            for lo, hi in zip(cuts[:-1], cuts[1:]):
                if stop:
                    return None
                if r is not None and r[lo].any():
                    state = self._reset(state, torch.from_numpy(r[lo] != 0).to(self.device))
                out, state = self._forward(xt[lo:hi], state)
                loss += float(self._loss(out, yt[lo:hi], w[lo:hi], normalise=False))
                if self.loss == "cross_entropy":
                    hits = (out.argmax(dim=-1) == yt[lo:hi]).to(self.dtype)
                    correct += float((w[lo:hi] * hits).sum())
        weight = float(w.sum())
        result = {"loss": loss / weight}
        if self.loss == "cross_entropy":
            result["accuracy"] = correct / weight
        return result

    # ---- fit ----------------------------------------------------------------------------------
    def fit(
        self,
        x: Any,
        y: Any = None,
        mask: Any = None,
        resets: Any = None,
        *,
        epochs: int = 1,
        validation: Any = None,
        reset: Any = "epoch",
        max_time: Optional[float] = None,
        max_updates: Optional[int] = None,
        progress: bool = True,
        checkpoint: Any = None,
        callback: Any = None,
        block: Optional[int] = None,
        initial_epoch: int = 0,
        initial_step: int = 0,
        schedule: Any = None,
        restore_best: bool = False,
        patience: Optional[int] = None,
        loss_unit: Optional[str] = None,
    ) -> History:
        """Train for `epochs` passes over time-major data (x (T, B, I) or (T, B) ids, or a
        Task): `tbptt.Trainer.fit`, the same code and arguments (docs/semantics.md §4). The
        schedule scales every parameter group's learning rate for the fit's duration;
        restore_best loads the best epoch's module (and head) state; checkpoint is written
        with `save`. Returns the `History` (also `self.history`)."""
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

    @property
    def lr(self) -> float:
        """The first parameter group's learning rate (fit's schedule scales every group's)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def _step_lr(self, lr: float) -> None:
        """fit's schedule: the learning rate of the next updates; every group scaled alike, and
        put back exactly when `lr` is the base again."""
        groups = self.optimizer.param_groups
        if self._lr_base is None:
            self._lr_base = [g["lr"] for g in groups]
        base = self._lr_base[0]
        for g, own in zip(groups, self._lr_base):
            g["lr"] = lr if own == base else own * (lr / base if base else 0.0)
        if lr == base:
            self._lr_base = None

    def _keep_best(self, epoch: int, val_loss: float) -> None:
        if self.best is None or val_loss < self.best["val_loss"]:
            self.best = {
                "epoch": epoch,
                "val_loss": float(val_loss),
                "parameters": {
                    "module": copy.deepcopy(self.module.state_dict()),
                    "head": None if self.head is None else copy.deepcopy(self.head.state_dict()),
                },
            }

    def _load_best(self) -> None:
        best = self.best["parameters"]
        self.module.load_state_dict(best["module"])
        if self.head is not None:
            self.head.load_state_dict(best["head"])

    def save(self, path: Any) -> None:
        """`torch.save(self.state_dict(), path)`, written to a temporary file in the same folder
        and renamed over `path` (fit's checkpoint on Ctrl-C). Resume with
        `trainer.load_state_dict(torch.load(path))`."""
        target = os.fspath(path)
        temporary = f"{target}.tmp{os.getpid()}"
        torch.save(self.state_dict(), temporary)
        os.replace(temporary, target)

    def horizon(self) -> Dict[str, np.ndarray]:
        """How the gradient fades with distance, for a trainer made with `horizon=True`: for
        j = 0 .. k2-1, the mean over updates of ||dL/ds|| for every tensor s of the state
        entering step t-j (t the update's newest step; before that step's resets), Frobenius
        over all streams: the gradient that crosses back from step t-j into the steps before
        it (at j = k2-1, into the constant state entering the window).

        Returns {"dh": (n, k2), one row per state tensor in the state's order ((h, c) of an
        LSTM: h, then c), "updates": (k2,)}: updates[j] counts the updates whose window reached
        j steps back (with a state to hold the gradient: the initial state `None` holds none);
        the means are NaN where it is 0. Without `horizon=True`: NaN (1, k2), zero updates."""
        if self._horizon is None or self._horizon[0] is None:
            return {"dh": np.full((1, self.k2), np.nan), "updates": np.zeros(self.k2, np.int64)}
        sums, updates = self._horizon
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(updates > 0, sums / np.maximum(updates, 1), np.nan)
        return {"dh": means, "updates": updates.copy()}

    def reset_horizon(self) -> None:
        """Start averaging the gradient horizon afresh."""
        if self._horizon is not None:
            self._horizon = (None, np.zeros(self.k2, np.int64))

    def _watcher(
        self, t: int, squares: Dict[Tuple[int, int], Tensor]
    ) -> Callable[[int, Any], None]:
        """watch(s, state) for `_run`: hooks that add Σ (dL/ds)² of every state tensor entering
        step s into squares[(tensor, t - s)]."""

        def watch(s: int, state: Any) -> None:
            for i, tensor in enumerate(_tensors(state)):
                if tensor.requires_grad:  # 0 unless the gradient reaches it (a reset cuts it)
                    squares[(i, t - s)] = torch.zeros((), dtype=torch.float64)
                    tensor.register_hook(lambda g, key=(i, t - s): self._square(squares, key, g))

        return watch

    @staticmethod
    def _square(squares: Dict[Tuple[int, int], Tensor], key: Tuple[int, int], g: Tensor) -> None:
        squares[key] = squares[key] + g.detach().double().square().sum()

    def _add_to_horizon(self, squares: Dict[Tuple[int, int], Tensor]) -> None:
        """Fold a good update's squares in: its window reached as far back as a state held
        the gradient (the initial state `None` entering it holds none)."""
        assert self._horizon is not None
        sums, updates = self._horizon
        if not squares:
            return
        n = 1 + max(i for i, _ in squares)
        if sums is None:
            sums = np.zeros((n, self.k2))
        reached = 1 + max(j for _, j in squares)
        for (i, j), value in squares.items():
            sums[i, j] += float(value) ** 0.5
        updates[:reached] += 1
        self._horizon = (sums, updates)

    # ---- checks -------------------------------------------------------------------------------
    def _array(self, name: str, value: Any) -> np.ndarray:
        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
        return _checks.numeric_array(name, value)

    def _values(self, name: str, array: np.ndarray) -> Tensor:
        """Integers stay int64 (ids); bool and floats become the module's dtype, finite."""
        if array.dtype.kind in "iu":
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(self.device)
        return torch.from_numpy(_checks._convert(name, array, self._np_dtype)).to(self.device)

    def _checked(self, x: Any, y: Any, mask: Any, resets: Any) -> Tuple[Tensor, Tensor, Any, Any]:
        """train's arguments, checked (nothing is changed before every check passed)."""
        xa = self._array("x", x)
        if xa.ndim < 2:
            raise ValueError(f"x must be time-major, (T, B, ...); got shape {xa.shape}")
        T, B = xa.shape[0], xa.shape[1]
        ya = self._array("y", y)
        if ya.shape[:2] != (T, B):
            raise ValueError(
                f"y must have shape (T, B, ...) with (T, B) = {(T, B)} as x, got {ya.shape}"
            )
        m = _checks.mask(
            None if mask is None else self._array("mask", mask), (T, B), self._np_dtype
        )
        r = _checks.resets(None if resets is None else self._array("resets", resets), (T, B))
        if T > 0 and B == 0:
            raise ValueError("x must have at least one stream: got B = 0 (x.shape[1])")
        if self.num_streams is not None and B != self.num_streams and T > 0:
            raise ValueError(
                f"x has B = {B} streams, but this trainer was started with "
                f"B = {self.num_streams} (x.shape[1] must stay the same)"
            )
        shapes = {
            "x": xa.shape[2:],
            "x ids": xa.dtype.kind in "iu",
            "y": ya.shape[2:],
            "y ids": ya.dtype.kind in "iu",
        }
        if self.loss == "cross_entropy":
            if not shapes["y ids"]:
                raise TypeError(
                    f"y must hold integer class ids for loss='cross_entropy', got dtype {ya.dtype}"
                )
            if ya.ndim != 2:
                raise ValueError(
                    f"y must have shape (T, B) = {(T, B)} for loss='cross_entropy', got {ya.shape}"
                )
        elif self.loss == "mse" and shapes["y ids"]:
            raise TypeError(f"y must hold floats for loss='mse', got dtype {ya.dtype}")
        if self._shapes is not None and T > 0:
            for key in ("x", "x ids", "y", "y ids"):
                if shapes[key] != self._shapes[key]:
                    name = key.split()[0]
                    what = "trailing shape" if key in ("x", "y") else "kind (ids or values)"
                    raise ValueError(
                        f"{name}'s {what} must stay as in the first call: "
                        f"{self._shapes[key]}, got {shapes[key]}"
                    )
        xt, yt = self._values("x", xa), self._values("y", ya)
        known = self._shapes
        if T > 0 and known is None:
            known = {**shapes, "classes": self._probe(xt, yt, B)}
        if self.loss == "cross_entropy" and ya.size:
            classes = None if known is None else known["classes"]
            if ya.min() < 0 or (classes is not None and ya.max() >= classes):
                bad = ya.min() if ya.min() < 0 else ya.max()
                raise ValueError(
                    f"y class ids must be in [0, {classes}) (the module's outputs' "
                    f"last dim), got {bad}"
                )
        mt = None if m is None else torch.from_numpy(m).to(self.device)
        rt = None if r is None else torch.from_numpy(r != 0).to(self.device)
        if self._shapes is None and known is not None:  # every check passed: B is fixed
            self.num_streams, self._shapes = B, known
        return xt, yt, mt, rt

    def _probe(self, x: Tensor, y: Tensor, B: int) -> Optional[int]:
        """The first call: one step of the module (no gradient, nothing kept) to check the
        outputs, the state's layout and the loss against the data before anything changes.
        Returns the number of classes (cross-entropy) or None."""
        with torch.no_grad():
            out, state = self._forward(x[:1], None)
        if not isinstance(out, Tensor) or out.shape[:2] != (1, B):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"module(x, state) must return (outputs (T, B, ...), state); for x "
                f"of shape {tuple(x[:1].shape)} the outputs are {got}"
            )
        for tensor in _tensors(state):
            dim = self.state_batch_dim
            if tensor.dim() <= dim or tensor.shape[dim] != B:
                raise ValueError(
                    f"the module's state must hold the B = {B} streams on dim "
                    f"state_batch_dim={dim}; got a state tensor of shape "
                    f"{tuple(tensor.shape)} (declare its layout with "
                    f"state_batch_dim)"
                )
        classes = None
        if self.loss == "cross_entropy":
            if out.dim() != 3:
                raise ValueError(
                    f"loss='cross_entropy' takes outputs (T, B, C) of logits; the "
                    f"module gives {tuple(out.shape)}"
                )
            classes = out.shape[2]
        elif self.loss == "mse" and out.shape[2:] != y.shape[2:]:
            raise ValueError(
                f"y must have shape (T, B) + {tuple(out.shape[2:])} (the module's "
                f"outputs) for loss='mse', got {tuple(y.shape)}"
            )
        elif callable(self.loss):
            with torch.no_grad():
                self._per_position(out, y[:1])
        return classes

    # ---- running steps ------------------------------------------------------------------------
    def _forward(self, x: Tensor, state: Any) -> Tuple[Tensor, Any]:
        result = self.module(x, state)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise ValueError(
                f"module(x, state) must return (outputs, state), got {type(result).__name__}"
            )
        out, state = result
        return (out if self.head is None else self.head(out)), state

    def _body(self, x: Tensor, state: Any) -> Tuple[Tensor, Any]:
        """The module alone (its outputs are the head's features when there is a head)."""
        out, state = self.module(x, state)
        return out, state

    def _reset(self, state: Any, reset: Tensor) -> Any:
        """Zero the reset streams' state (None, the initial state, stays None)."""

        def zero(t: Tensor) -> Tensor:
            shape = [1] * t.dim()
            shape[self.state_batch_dim] = -1
            return t * (~reset).to(t.dtype).view(shape)

        return _map(state, zero)

    def _run(
        self,
        lo: int,
        hi: int,
        state: Any,
        cut: Optional[int] = None,
        keep_from: Optional[int] = None,
        watch: Optional[Callable[[int, Any], None]] = None,
    ) -> Tuple[List[Tensor], Any, Any]:
        """The module over the held steps [lo, hi) from `state` (the state entering lo, before
        its resets), in runs split where a stream resets and at `cut`. Returns the module's
        outputs of the steps >= keep_from (a list of runs; none if None), the state entering
        `cut` (before its resets) and the final state. With `watch`, one step per call, and
        `watch(s, state)` sees the state entering every step s (before its resets)."""
        bounds = {lo, hi}
        bounds.update(s for s in range(lo + 1, hi) if self._at(s).reset is not None)
        if cut is not None and lo < cut < hi:
            bounds.add(cut)
        if watch is not None:
            bounds.update(range(lo, hi))
        edges = sorted(bounds)
        outputs: List[Tensor] = []
        at_cut = state if cut == lo else None
        for s, e in zip(edges[:-1], edges[1:]):
            if s == cut:
                at_cut = state
            if watch is not None:
                watch(s, state)
            first = self._at(s)
            if first.reset is not None:
                state = self._reset(state, first.reset)
            x = torch.stack([self._at(i).x for i in range(s, e)])
            out, state = self._body(x, state)
            if keep_from is not None and e > keep_from:
                outputs.append(out[max(keep_from - s, 0) :])
        if cut == hi:
            at_cut = state
        return outputs, at_cut, state

    def _at(self, index: int) -> _Step:
        return self._held[index - self._held_from]

    def _with_weights(self, weights: List[Tensor], run: Callable[[], Any]) -> Any:
        """run() with the optimiser's parameters set to `weights` for its duration."""
        with torch.no_grad():
            current = [p.detach().clone() for p in self._params]
            try:
                for p, w in zip(self._params, weights):
                    p.copy_(w)
                return run()
            finally:
                for p, w in zip(self._params, current):
                    p.copy_(w)

    # ---- the update (docs/semantics.md §3) ----------------------------------------------------
    def _update(self) -> Optional[float]:
        r, self._pending = self._pending, 0
        self._updates += 1
        t = self._count - 1  # the newest step
        w0 = max(t - self.k2 + 1, self._origin)  # the window: [w0, t]
        loss_from = t - r + 1  # the loss: (t - r, t]
        warm: List[Tensor] = []  # outputs of [loss_from, w0), k2 < k1
        with torch.no_grad():
            if w0 >= self._fresh:
                assert loss_from >= self._fresh
                warm, _, entering = self._run(
                    self._fresh,
                    w0,
                    self._fresh_state,
                    keep_from=loss_from if loss_from < w0 else None,
                )
            else:  # a flush reaching into steps of the weights before the last step (§3 item 2)
                assert self._before is not None and loss_from >= w0
                p, state_p, weights = self._before
                entering = self._with_weights(weights, lambda: self._run(p, w0, state_p)[2])
        entering = _detached(entering)
        w = torch.stack([self._at(s).w for s in range(loss_from, t + 1)])
        if not bool((w > 0).any()):  # counts as an update; no optimiser step (§8 The schedule)
            self._fresh, self._fresh_state = w0, entering
            self._drop_old()
            return None
        # After a step, the next window reads from a_next on: the state entering it is kept.
        rerun = self.k2 - self.k1 + 1 if self.k2 > self.k1 else 0
        a_next = max(t + 1 - rerun, self._origin)
        for p in self._params:
            p.grad = None
        squares: Dict[Tuple[int, int], Tensor] = {}  # the horizon's (tensor, j): Σ grad²
        with torch.enable_grad():
            watch = None
            if self._horizon is not None:
                watch = self._watcher(t, squares)
                entering = _map(entering, lambda a: a.detach().requires_grad_())
            runs, at_next, _ = self._run(
                w0, t + 1, entering, cut=a_next, keep_from=max(loss_from, w0), watch=watch
            )
            features = warm + runs
            outputs = torch.cat([f if self.head is None else self.head(f) for f in features])
            y = torch.stack([self._at(s).y for s in range(loss_from, t + 1)])
            loss = self._loss(outputs, y, w)
            loss.backward()
        value = float(loss.detach())
        grads, norm = self._check(value)
        if self._horizon is not None:
            self._add_to_horizon(squares)
        if self.clip_norm is not None:  # clip_grad_norm_, its norm computed once
            nn.utils.clip_grads_with_norm_(grads, self.clip_norm, norm)
        weights_before = [p.detach().clone() for p in self._params]
        self.optimizer.step()
        self._before = (w0, _detached(entering), weights_before)
        self._fresh, self._fresh_state = a_next, _detached(at_next)
        self._drop_old()
        return value

    def _per_position(self, outputs: Tensor, y: Tensor) -> Tensor:
        """The callable loss of a run: (T, B), else ValueError naming `loss`."""
        assert callable(self.loss)
        per = self.loss(outputs, y)
        want = tuple(outputs.shape[:2])
        if not isinstance(per, Tensor) or tuple(per.shape) != want:
            got = tuple(per.shape) if isinstance(per, Tensor) else type(per).__name__
            raise ValueError(
                f"loss(outputs, targets) must return the per-position losses, "
                f"shape (T, B) = {want}; got {got}"
            )
        return per

    def _loss(self, outputs: Tensor, y: Tensor, w: Tensor, normalise: bool = True) -> Tensor:
        """Σ w·loss / Σ w over the positions with w > 0 (the others are left out entirely);
        Σ w·loss alone when not `normalise`."""
        carries = w > 0
        every = bool(carries.all())  # else select the positions carrying loss: (N, ...)
        if callable(self.loss):
            per = self._per_position(outputs, y)
            per = per.flatten() if every else per[carries]
        else:
            out, target = (
                (outputs.flatten(0, 1), y.flatten(0, 1))
                if every
                else (outputs[carries], y[carries])
            )
            if self.loss == "mse":
                per = (out - target).square().flatten(1).mean(dim=1)
            else:
                per = nn.functional.cross_entropy(out, target, reduction="none")
        weights = w.flatten() if every else w[carries]
        if not normalise:
            return (weights * per).sum()
        # the weights over a power of two near Σ w (exact): huge or tiny weights neither
        # overflow nor underflow the sums, as in the engine
        scale = math.ldexp(1.0, -math.frexp(float(w.double().sum()))[1])
        return ((weights * scale) * per).sum() / (w * scale).sum()

    def _check(self, value: float) -> Tuple[List[Tensor], Tensor]:
        """Divergence (§3.6): a loss or gradient that is not finite, in the module's dtype.
        Returns the parameters with a gradient and the gradient's global norm."""
        what, grads, norm = None, [], torch.zeros(())
        if not np.isfinite(value):
            what = f"the loss is {value}"
        else:
            for p in self._params:
                if p.grad is None and p.requires_grad:  # the loss cannot reach it: a zero
                    p.grad = torch.zeros_like(p)  # gradient, it steps all the same (§3.3)
            grads = [p for p in self._params if p.grad is not None]
            norm = nn.utils.get_total_norm([p.grad for p in grads])
            if not bool(torch.isfinite(norm)):
                bad = next((p for p in grads if not bool(torch.isfinite(p.grad).all())), grads[0])
                what = (
                    f"the gradient of {self._names[id(bad)]!r} is not finite"
                    if not bool(torch.isfinite(bad.grad).all())
                    else "the gradient's norm is not finite"
                )
        if what is None:
            return grads, norm
        for p in self._params:
            p.grad = None
        self._forget(self._count)
        raise core().Divergence(
            f"update {self._updates} diverged: {what}. It was not applied: the parameters and "
            f"optimiser state are those of the last good update, its steps were dropped and every "
            f"stream's state was reset to the initial state. Lower the learning rate or set "
            f"clip_norm."
        )

    def _drop_old(self) -> None:
        """Forget the steps no later update can read (memory bounded by k1 + k2 steps)."""
        keep = self._fresh if self._before is None else min(self._fresh, self._before[0])
        if keep > self._held_from:
            del self._held[: keep - self._held_from]
            self._held_from = keep

    # ---- resume -------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The module's, head's and optimiser's state, and the trainer's own: the held steps,
        the marks and states of the recurrence, the counters. `load_state_dict` of it into a
        trainer of the same settings goes on as this one would, bit for bit."""
        return {
            "module": self.module.state_dict(),
            "head": None if self.head is None else self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trainer": self._own_state(),
        }

    def _own_state(self) -> Dict[str, Any]:
        before = self._before
        return {
            "k1": self.k1,
            "k2": self.k2,
            "num_streams": self.num_streams,
            "shapes": None if self._shapes is None else dict(self._shapes),
            "updates": self._updates,
            "pending": self._pending,
            "reset_next": self._reset_next,
            "count": self._count,
            "origin": self._origin,
            "held_from": self._held_from,
            "held": [
                (
                    s.x.clone(),
                    s.y.clone(),
                    s.w.clone(),
                    None if s.reset is None else s.reset.clone(),
                )
                for s in self._held
            ],
            "fresh": self._fresh,
            "fresh_state": _detached(self._fresh_state),
            "before": None
            if before is None
            else (before[0], _detached(before[1]), [w.clone() for w in before[2]]),
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Take `state_dict()` of a trainer with the same k1, k2 and a module of the same
        architecture (ValueError naming what does not fit; this trainer is unchanged then)."""
        if not isinstance(state_dict, dict) or set(state_dict) != {
            "module",
            "head",
            "optimizer",
            "trainer",
        }:
            raise ValueError(
                "state_dict must be a tbptt.torch.Trainer's state_dict(): a dict "
                "with 'module', 'head', 'optimizer' and 'trainer'"
            )
        own = state_dict["trainer"]
        missing = sorted(set(self._own_state()) - set(own)) if isinstance(own, dict) else ["all"]
        if missing:
            raise ValueError(
                f"state_dict['trainer'] lacks {missing}: not a tbptt.torch.Trainer's state_dict()"
            )
        for key in ("k1", "k2"):
            if own[key] != getattr(self, key):
                raise ValueError(
                    f"state_dict is of a trainer with {key}={own[key]}, this one has "
                    f"{key}={getattr(self, key)}"
                )
        if (state_dict["head"] is None) != (self.head is None):
            raise ValueError(
                "state_dict's head does not match this trainer's (one has a head, the other not)"
            )
        self.module.load_state_dict(state_dict["module"])
        if self.head is not None:
            self.head.load_state_dict(state_dict["head"])
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self._restore(own)

    def _restore(self, own: Dict[str, Any]) -> None:
        def here(state: Any) -> Any:
            return _map(state, lambda t: t.detach().clone().to(self.device))

        self.num_streams = own["num_streams"]
        self._shapes = None if own["shapes"] is None else dict(own["shapes"])
        self._updates, self._pending = own["updates"], own["pending"]
        self._reset_next, self._count, self._origin = own["reset_next"], own["count"], own["origin"]
        self._held_from = own["held_from"]
        self._held = [
            _Step(*(None if a is None else a.clone().to(self.device) for a in step))
            for step in own["held"]
        ]
        self._fresh, self._fresh_state = own["fresh"], here(own["fresh_state"])
        before = own["before"]
        self._before = (
            None
            if before is None
            else (before[0], here(before[1]), [w.clone().to(self.device) for w in before[2]])
        )

    # ---- pickle and copy.deepcopy -------------------------------------------------------------
    def __getstate__(self) -> Dict[str, Any]:
        """The module, head, optimiser (pickled together, so the optimiser's parameters stay the
        module's), the settings and the trainer's own state (tbptt._pickled)."""
        return _pickled.state(
            "tbptt.torch.Trainer",
            module=self.module,
            head=self.head,
            optimizer=self.optimizer,
            loss=self.loss,
            clip_norm=self.clip_norm,
            state_batch_dim=self.state_batch_dim,
            horizon=self._horizon is not None,
            trainer=self._own_state(),
            best=self.best,
            history=self.__dict__.get("history"),
        )

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state = _pickled.check(state, "tbptt.torch.Trainer")
        own = state["trainer"]
        trainer = Trainer(
            state["module"],
            own["k1"],
            own["k2"],
            loss=state["loss"],
            optimizer=state["optimizer"],
            clip_norm=state["clip_norm"],
            head=state["head"],
            state_batch_dim=state["state_batch_dim"],
            horizon=state["horizon"],
        )
        trainer._restore(own)
        trainer.best = state["best"]
        if state["history"] is not None:
            trainer.history = state["history"]
        self.__dict__.update(trainer.__dict__)

    def __repr__(self) -> str:
        loss = self.loss if isinstance(self.loss, str) else getattr(self.loss, "__name__", "<fn>")
        return (
            f"tbptt.torch.Trainer(k1={self.k1}, k2={self.k2}, loss={loss!r}, "
            f"optimizer={type(self.optimizer).__name__}, clip_norm={self.clip_norm}"
            f"{', head=' + type(self.head).__name__ if self.head is not None else ''})"
        )
