"""Online learning in river's protocol: one sample at a time, test-then-train, TBPTT(k1, k2).

    from river import evaluate, metrics
    import tbptt.river
    model = tbptt.river.Regressor()               # LSTM, H = 32, TBPTT(1, 20), Adam 3e-3
    evaluate.progressive_val_score(dataset, model, metrics.MAE())

`Regressor` and `Classifier` implement river's `base.Regressor` and `base.Classifier` (install
the extra: `pip install tbptt[river]`); without river installed they are plain classes with the
same methods (what `tbptt online` uses). The recurrent model reads the stream in order, one step
per `learn_one`, and carries its state from one sample to the next: unlike a window re-run from
zeros, its memory is not cut at k2 steps (only its gradient is). `predict_one` predicts from the
carried state without advancing it, so the river loop

    y_pred = model.predict_one(x)    # the next step, as the forward pass will compute it
    model.learn_one(x, y)            # that step, its loss, one update (k1 = 1)

costs one step forward for the prediction and one TBPTT(k1, k2) step for learning, and the
prediction equals what `Trainer.train(..., return_outputs=True)` returns for that step.

What the learner does (each part chosen from measurements, docs/online.md):
- the network's inputs: the sample's features and (previous_target=True) the previous target,
  and (changes=True) the change of each since the sample before; each standardised by running
  means and standard deviations of the samples before this one, robustly (clip=5: a value
  counts at most 5 standard deviations away, and inputs are clipped there);
- its target (predict_change=True): the change of the target from the previous one, divided by
  its running standard deviation, and its head starts at zero, so that an untrained network
  predicts exactly the last value;
- the gate (gate=True): the prediction is the last value plus 0, 1/2 or all of the predicted
  change, whichever has lately beaten the last value by more than luck (see
  `Regressor._weigh`). So the learner stays with the last value until the network has shown it
  does better, and goes back to it if the network stops doing better.
The first sample only starts the statistics (the model takes its first step at the second);
until two changes have been seen the learner predicts the last value and makes no update.

Inputs by name: each feature is bound to its input column by its key, whatever the dict's order
(`keys_`, in column order). A key first seen by `learn_one` gets new input columns whose weights
start at zero (nothing learnt changes; `added_features` counts them); a known key missing from a
sample is imputed with its running mean (`imputed_values` counts them). Checks are made once per
sample on the dict (values must be finite real numbers; a refused call changes nothing); the
one-sample path then writes into reused buffers and calls the engine directly, with no further
argument checks or allocation. pickle and copy.deepcopy go through the state `save` keeps and the
trainer's snapshot (tbptt._pickled). An update that
diverges (a non-finite loss or gradient) is not applied, the state is reset and the learner
goes on; `skipped_updates` counts them.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # the type checker sees the plain classes, whether river is installed or not
    _RegressorBase = object
    _ClassifierBase = object
    _ForecasterBase = object
else:
    try:
        from river import base
        from river.time_series.base import Forecaster as _ForecasterBase

        _RegressorBase, _ClassifierBase = base.MiniBatchRegressor, base.MiniBatchClassifier
    except ImportError:  # without river the learners still work (`tbptt online` uses them)
        _RegressorBase = _ClassifierBase = _ForecasterBase = object

from .. import _checks, _pickled, checkpoint
from ..engines import forward
from ..model import MODELS, build
from ..optim import SGD, Adam
from ..trainer import Trainer

__all__ = ["Regressor", "Classifier", "Forecaster", "load"]

KIND = "online"  # the header entry of a checkpoint written by save()
VERSION = 3  # of that entry; 1 (no "version"): a Regressor before the change inputs and the
# gate; 2: before features could come and go (one count for all statistics)


_M2_MAX = 1e300  # the largest sum of squares kept, so that 1 / standard deviation stays > 0


class _Stats:
    """Running means and standard deviations of a few values, as plain floats (fast per sample).

    Robust to outliers (`clip` standard deviations, None: plain Welford): once a value's scale is
    known, a new value further than `clip` standard deviations from its mean counts as if it
    were `clip` away (a winsorised Welford update), so that one shock (a sensor dropping to zero,
    a jump of 50 standard deviations) does not inflate the scale for the rest of the stream; a
    lasting change of scale is still followed, each sample moving the estimate a little.
    Each value has its own count `n[i]`: a value given as None (a feature missing from the
    sample) is left out. `inv[i]` is 1 / the standard deviation of value i, 1.0 while it is
    unknown (fewer than two samples, or all equal): standardising is then `(v - mean[i]) *
    inv[i]`."""

    __slots__ = ("n", "mean", "m2", "inv", "clip")
    n: list
    mean: list
    m2: list
    inv: list

    def __init__(self, size, clip=None):
        self.n, self.mean, self.m2, self.inv = [0] * size, [0.0] * size, [0.0] * size, [1.0] * size
        self.clip = clip

    def add(self, values):
        counts, mean, m2, inv, clip = self.n, self.mean, self.m2, self.inv, self.clip
        sqrt = math.sqrt
        for i, v in enumerate(values):  # Welford, with locals: this runs for every value
            if v is None:
                continue
            n = counts[i] = counts[i] + 1
            q = m2[i]
            d = v - mean[i]
            if q > 0.0 and clip is not None:  # the scale is known: winsorise
                limit = clip / inv[i]
                if d > limit:
                    d = limit
                elif d < -limit:
                    d = -limit
            mean[i] += d / n
            q += d * d * ((n - 1) / n)  # d * (v - new mean) = d * d * (n - 1) / n
            if q > _M2_MAX:  # values beyond ~1e150 overflowed it: a scale that stays finite
                q = _M2_MAX
            m2[i] = q
            if q > 0.0:
                inv[i] = sqrt((n - 1) / q)

    def known(self, i):
        return self.m2[i] > 0.0

    def insert(self, index, count):
        """Make room for `count` new values before value `index`, with nothing seen yet."""
        for values, empty in ((self.n, 0), (self.mean, 0.0), (self.m2, 0.0), (self.inv, 1.0)):
            values[index:index] = [empty] * count

    def to_dict(self):
        return {"n": list(self.n), "mean": list(self.mean), "m2": list(self.m2)}

    @classmethod
    def from_dict(cls, d, clip=None):
        stats = cls(len(d["mean"]), clip)
        n = d["n"]  # one count for every value in files before features could come and go
        stats.n = [int(v) for v in n] if isinstance(n, list) else [int(n)] * len(d["mean"])
        stats.mean, stats.m2 = [float(v) for v in d["mean"]], [float(v) for v in d["m2"]]
        stats.inv = [math.sqrt((k - 1) / v) if v > 0.0 else 1.0 for k, v in zip(stats.n, stats.m2)]
        return stats


def _number(name, value):
    """`value` as a finite float, else TypeError / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _numbers(name, x):
    """The numbers of x (a dict, or None for none): a Forecaster's features."""
    if x is None:
        return {}
    if not isinstance(x, dict):
        raise TypeError(f"{name} must be a dict of features or None, got {type(x).__name__}")
    return {k: v for k, v in x.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}


def _label(name, value):
    """`value` as a class label: hashable and not None, else TypeError naming it."""
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"{name} must be a label (a str, int, bool...), got an unhashable "
            f"{type(value).__name__}"
        ) from None
    if value is None or (isinstance(value, float) and value != value):
        raise TypeError(f"{name} must be a label (a str, int, bool...), got {value!r}")
    return value


def _records(X):
    """The rows of a pandas DataFrame as dicts, without their NaN (pandas' missing value)."""
    return [
        {k: v for k, v in row.items() if not (isinstance(v, float) and v != v)}
        for row in X.to_dict(orient="records")
    ]


def _changes(values, previous):
    """values[i] - previous[i], None where either is missing."""
    return [None if a is None or b is None else a - b for a, b in zip(values, previous)]


def _flat_view(array):
    """A flat memoryview of a C-contiguous array: reading or writing one item through it costs
    a fraction of NumPy's indexing."""
    return memoryview(array).cast("B").cast(array.dtype.char)


def _standardise(buffer, offset, values, stats, clip, standardize=True):
    """buffer[offset + i] = values[i] standardised by `stats` (a _Stats) and clipped at +-clip
    (standardize=False: the values as they are). A value that is None (missing), or that has
    no statistics yet, is imputed with its running mean: 0 once standardised."""
    mean, inv, counts = stats.mean, stats.inv, stats.n
    if not standardize:
        for i, v in enumerate(values):
            buffer[offset + i] = mean[i] if v is None else v
        return
    low = -clip
    for i, v in enumerate(values):
        if v is None or not counts[i]:
            buffer[offset + i] = 0.0
            continue
        z = (v - mean[i]) * inv[i]
        buffer[offset + i] = z if low <= z <= clip else (clip if z > clip else low)


def _ordered(keys):
    """Feature names in a fixed order whatever the dict's order (river's features come in any):
    by type, then by repr, so that a sample and its shuffled twin make the same columns."""
    return sorted(keys, key=lambda k: (type(k).__name__, repr(k)))


def _widened(trainer, columns, input_size):
    """A trainer going on exactly where `trainer` is, with input_size inputs: old input column j
    is new column columns[j]; the new columns' weights (and their optimiser moments) start at
    zero, so the network computes what it computed before, whatever the new inputs hold. Built
    through the engine's snapshot (the held steps' new inputs are 0: nothing was known)."""
    from ..cells import CELLS
    from ..model import from_config, parameter_shapes

    old = trainer.model
    config = {**old.config(), "input_size": input_size}
    model = from_config(config)
    name = f"{CELLS[model.cell].prefix}.weight_ih_l0"
    old_shapes = parameter_shapes(
        old.input_size, old.hidden_size, old.output_size, old.num_layers, old.cell
    )

    def widen(flat):  # a (P,) vector laid out like old.flat_parameters, for the new model
        parts, offset = [], 0
        for key, shape in old_shapes:
            size = int(np.prod(shape))
            part = flat[offset : offset + size].reshape(shape)
            offset += size
            if key == name:
                wide = np.zeros((shape[0], input_size), flat.dtype)
                wide[:, columns] = part
                part = wide
            parts.append(part.ravel())
        return np.concatenate(parts)

    model.flat_parameters[:] = widen(old.flat_parameters)
    snapshot = trainer.engine.snapshot()
    x = snapshot["window/x"]
    wide = np.zeros(x.shape[:-1] + (input_size,), x.dtype)
    wide[..., columns] = x
    snapshot["window/x"] = wide
    for key in ("optimizer/m", "optimizer/v"):
        snapshot[key] = widen(snapshot[key])
    resumed = Trainer._from_settings(model, trainer._settings())
    resumed._restore_engine(snapshot, trainer.backend)
    return resumed


class _Online:
    """What Regressor and Classifier share: the model, its trainer, the feature keys, the running
    statistics, the input buffer and the checkpoint."""

    # For the type checker (annotations only: nothing is set here). The constructor's arguments,
    # which each subclass's __init__ sets:
    cell: str
    hidden_size: int
    num_layers: int
    k1: int
    k2: int
    lr: float
    optimizer: str
    clip_norm: Optional[float]
    clip: Optional[float]
    recompute: bool
    backend: str
    seed: Optional[int]
    # What `_reset` sets to None and the first sample (`_start`) or a restore fills: Any, as the
    # one-sample path reads them without a check.
    keys_: Any
    trainer_: Any
    _stats: Any
    _y: Any

    if TYPE_CHECKING:  # what each subclass defines

        def _layout(self, F: int) -> list: ...
        @staticmethod
        def _stats_size(F: int) -> int: ...
        def _own_state(self) -> dict: ...
        def _restore_own(self, state: dict) -> None: ...

    def _check_settings(self):
        if self.cell not in MODELS:
            raise ValueError(f"cell must be one of {tuple(MODELS)}, got {self.cell!r}")
        _checks.positive_int("hidden_size", self.hidden_size)
        _checks.positive_int("num_layers", self.num_layers)
        _checks.positive_int("k1", self.k1)
        _checks.positive_int("k2", self.k2)
        _checks.finite_float("lr", self.lr, minimum=0.0)
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.clip_norm is not None and _checks.finite_float("clip_norm", self.clip_norm) <= 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm}")
        if self.clip is not None and _checks.finite_float("clip", self.clip) <= 0:
            raise ValueError(f"clip must be > 0 or None, got {self.clip}")
        if not isinstance(self.recompute, bool):
            raise TypeError(f"recompute must be a bool, got {type(self.recompute).__name__}")
        if self.backend not in ("cpp", "numpy"):
            raise ValueError(f"backend must be 'cpp' or 'numpy', got {self.backend!r}")

    def _reset(self):
        """Forget everything learnt: no keys, no model (built at the first sample)."""
        self.keys_ = None  # the feature names, in the order of their input columns
        self.target_name = None  # what y is called, if the caller says (kept by save)
        self.trainer_ = None
        self.skipped_updates = 0
        self.added_features = 0  # features first seen after the first sample (new columns)
        self.imputed_values = 0  # features missing from a learnt sample (imputed: their mean)
        self._stats = None  # _Stats over the features, then the learner's own values
        self._filled = None  # the features whose inputs the input buffer holds, if valid

    def _start(self, x, output_size, loss):
        """Fix the keys from the first sample and build the model and its trainer."""
        checked = self._checked(x)  # before anything changes
        keys = tuple(_ordered(checked))
        input_size = len(self._layout(len(keys)))
        if input_size == 0:
            raise ValueError(
                "the first sample has no features and previous_target is False: "
                "the network would have no input"
            )
        self.keys_ = keys
        # PyTorch's initialisation, without build's forget bias of 1 for an LSTM: learning
        # online from the first samples, 0 was better on 5 of the 6 streams of docs/online.md
        model = build(
            self.cell,
            input_size,
            self.hidden_size,
            output_size,
            self.num_layers,
            seed=self.seed,
            forget_bias=0.0,
        )
        params = model.parameter_views  # the head starts at zero: an untrained learner predicts no
        params["head.weight"][...] = 0.0  # change (the last value), or the mean
        params["head.bias"][...] = 0.0
        optimizer = Adam(self.lr) if self.optimizer == "adam" else SGD(self.lr)
        self.trainer_ = Trainer(
            model,
            self.k1,
            self.k2,
            loss=loss,
            optimizer=optimizer,
            clip_norm=self.clip_norm,
            backend=self.backend,
            recompute=self.recompute,
        )
        self._stats = _Stats(self._stats_size(len(keys)), self.clip)
        self._buffers()

    def _buffers(self):
        """The arrays the one-sample path reuses: x (1, 1, I), y, mask (1, 1), outputs."""
        model = self.trainer_.model
        self._key_set = frozenset(self.keys_)
        self._x = np.zeros((1, 1, model.input_size), model.dtype)
        self._x_step = self._x[0]  # (1, I): the one step of predict
        self._x_values = _flat_view(self._x)  # item access without NumPy's per-call overhead
        self._mask = np.ones((1, 1), model.dtype)
        self._mask_values = _flat_view(self._mask)
        self._out = np.zeros((1, 1, model.output_size), model.dtype)
        self._out_step = self._out[0]
        self._out_values = _flat_view(self._out)
        self._engine = self.trainer_.engine
        self._filled = None
        self.trainer_.num_streams = 1  # B = 1: the engine's window is sized by its first call

    def _features(self, x, learn=False):
        """The sample's features in column order, checked (finite floats), None where one is
        missing. learn=True: features never seen before get input columns first (see
        `_add_features`); otherwise they are ignored (their weights would be zero). The common
        case (a plain dict of floats with the known keys) takes a fast path."""
        if type(x) is dict and x.keys() == self._key_set:
            values = [x[k] for k in self.keys_]
            for v in values:
                if type(v) is not float or v - v != 0.0:  # not a float, or NaN / infinity
                    break
            else:
                return values
        checked = self._checked(x)
        if learn:
            new = [k for k in checked if k not in self._key_set]
            if new:
                self._add_features(_ordered(new))
        return [checked.get(k) for k in self.keys_]

    @staticmethod
    def _checked(x, name="x"):
        """x's values as finite floats, by key; TypeError / ValueError naming the first bad one."""
        if not isinstance(x, dict):
            raise TypeError(f"{name} must be a dict of features, got {type(x).__name__}")
        return {k: _number(f"{name}[{k!r}]", v) for k, v in x.items()}

    def _add_features(self, new):
        """Give features never seen before input columns: the network is rebuilt one input
        wider per column (`_layout` says where each goes), with zero weights there, through its
        trainer's snapshot: nothing it computes changes until the new weights learn."""
        F = len(self.keys_)
        before = self._layout(F)
        after = self._layout(F + len(new))
        place = {name: j for j, name in enumerate(after)}
        self.trainer_ = _widened(self.trainer_, [place[name] for name in before], len(after))
        self.keys_ += tuple(new)
        self._stats.insert(F, len(new))
        self._grow(F, len(new))
        self.added_features += len(new)
        self._buffers()

    def _grow(self, index, count):
        """Make room for `count` new features before feature `index` in the learner's own
        per-feature state."""

    def _fill(self, features, extra):
        """Write the standardised features and `extra` (already standardised) into the input
        buffer. Features are standardised by the statistics of the samples before this one."""
        values = self._x_values
        _standardise(values, 0, features, self._stats, self._clip_value)
        n = len(features)
        for j, v in enumerate(extra):
            values[n + j] = v

    @property
    def _clip_value(self):
        return math.inf if self.clip is None else self.clip

    def _learn(self, weight):
        """One TBPTT step on the filled inputs and self._y, with loss weight `weight`; the
        model's output for the step (before the update) lands in self._out. A diverged update
        is skipped: False."""
        self._mask_values[0] = weight
        try:
            self._engine.train(self._x, False, self._y, self._mask, None, self._out)
        except FloatingPointError:
            self.skipped_updates += 1  # not applied; the engine reset the state
            return False
        return True

    def _forward_step(self):
        """step(x, state) -> (outputs, state): the model forward from an engine-form state, by
        the trainer's backend (the inputs are the learner's own, already checked)."""
        spec, backend = self.trainer_.model.spec, self.backend
        return lambda x, state: forward(backend, spec, x, False, state)

    def _inputs_of(self, rows, fill):
        """(R, I) network inputs of R rows of features: fill(features) writes one row's into the
        input buffer."""
        inputs = np.empty((len(rows), self._x.shape[-1]), self._x.dtype)
        for r, features in enumerate(rows):
            fill(features)
            inputs[r] = self._x[0, 0]
        self._filled = None
        return inputs

    def _run_rows(self, inputs):
        """The network's outputs (R, O) for R input rows (R, I), each as the next step from the
        carried state, advancing nothing: one engine call, the rows running as R parallel
        streams from copies of the carried state."""
        state = tuple(np.repeat(part, len(inputs), axis=1) for part in self._engine.state())
        out, _ = self._forward_step()(inputs[None], state)
        return out[0]

    def _peek(self):
        self._engine.peek(self._x_step, False, self._out_step)
        return self._out_values[0]

    # ---- checkpoints, pickle and copy.deepcopy ----------------------------------------------
    def _params(self):
        """The constructor's arguments, by name."""
        return {name: getattr(self, name) for name in inspect.signature(type(self)).parameters}

    def _state(self):
        """Everything besides the trainer that the next samples depend on, as plain data: what
        a file's header keeps (`save`) and what pickle carries besides the trainer."""
        return {
            "class": type(self).__name__,
            "version": VERSION,
            "params": self._params(),
            "keys": list(self.keys_),
            "stats": self._stats.to_dict(),
            "skipped_updates": self.skipped_updates,
            "target_name": self.target_name,
            "added_features": self.added_features,
            "imputed_values": self.imputed_values,
            **self._own_state(),
        }

    def save(self, path):
        """Write everything the next samples depend on, atomically: the trainer (model,
        optimiser, carried state, window), the keys and the running statistics.
        `tbptt.river.load(path)` resumes exactly where this learner is."""
        if self.trainer_ is None:
            raise ValueError("nothing to save yet: the learner has not seen a sample")
        for what, names in (("feature names", self.keys_), ("labels", self._labels())):
            for name in names:
                if not isinstance(name, (str, int)):
                    raise ValueError(
                        f"save() keeps {what} as text or integers; {name!r} is a "
                        f"{type(name).__name__} (pickle keeps any)"
                    )
        checkpoint.save_trainer(self.trainer_, path, extra={KIND: self._state()})

    def _labels(self):
        return ()

    def __getstate__(self):
        """The constructor's arguments, the learner's state as `save` keeps it, and the trainer
        (which pickles through its engine's snapshot, tbptt._pickled): an unpickled learner, or
        a deep copy, goes on exactly as this one would."""
        return _pickled.state(
            f"tbptt.river.{type(self).__name__}",
            params=self._params(),
            learner=None if self.trainer_ is None else self._state(),
            trainer=self.trainer_,
        )

    def __setstate__(self, state):
        state = _pickled.check(state, f"tbptt.river.{type(self).__name__}")
        type(self).__init__(self, **state["params"])
        if state["learner"] is not None:
            self._restore(state["learner"], state["trainer"])

    def _restore(self, state, trainer):
        self.keys_ = tuple(state["keys"])
        self._stats = _Stats.from_dict(state["stats"], self.clip)
        self.skipped_updates = int(state["skipped_updates"])
        self.added_features = int(state.get("added_features", 0))  # files before: none
        self.imputed_values = int(state.get("imputed_values", 0))
        self.target_name = state.get("target_name")
        self.trainer_ = trainer
        self._buffers()
        self._restore_own(state)


GATE = (0.5, 1.0)  # the shrunk predicted changes the gate weighs against none (the last value)
GATE_KEEP = 0.997  # the gate's evidence fades by this factor a sample (a memory of ~300)


class _Regression(_Online):
    """What Regressor and Forecaster share: a recurrent net learning a numeric stream online
    (see Regressor for the arguments)."""

    # For the type checker (set by `_restore_own`, which `_start_regressor` calls):
    last_change_: Optional[float]
    _previous: Optional[list]
    _changes: _Stats
    _gate_sums: list
    _y_values: memoryview

    def __init__(
        self,
        hidden_size=32,
        k1=1,
        k2=20,
        cell="lstm",
        lr=3e-3,
        optimizer="adam",
        clip_norm=1.0,
        previous_target=True,
        changes=True,
        predict_change=True,
        gate=True,
        standardize=True,
        clip=5.0,
        num_layers=1,
        recompute=True,
        backend="cpp",
        seed=0,
    ):
        self.hidden_size, self.k1, self.k2, self.cell = hidden_size, k1, k2, cell
        self.lr, self.optimizer, self.clip_norm = lr, optimizer, clip_norm
        self.previous_target, self.changes = previous_target, changes
        self.predict_change, self.gate = predict_change, gate
        self.standardize, self.clip = standardize, clip
        self.num_layers, self.backend, self.seed = num_layers, backend, seed
        self.recompute = recompute
        self._check_settings()
        self._reset()
        self.last_ = None  # the previous target, None before the first sample

    # Statistics: self._stats over the features and the target (last), self._changes over their
    # changes from one sample to the next. The network's inputs, two blocks: the features and
    # the previous target, then (changes=True) their changes since the sample before; each
    # standardised and clipped at +-clip (without previous_target, the target is left out).
    def _learn_sample(self, x, y):
        """Advance the state by one step with x (a dict of numbers) and learn from the value y."""
        if type(y) is not float or y - y != 0.0:  # not a float, or NaN / infinity
            y = _number("y", y)
        if self.trainer_ is None:
            self._start_regressor(x)
        features = self._features(x, learn=True)
        if len(features) != len(x):  # the fast path returns as many features as x has
            self.imputed_values += features.count(None)
        if self.last_ is not None:  # the first sample only starts the statistics
            if features != self._filled:
                self._fill_inputs(features, self.last_, self._previous, self.last_change_)
            z, weight = self._target(y)
            self._y_values[0] = z
            if self._learn(weight) and weight and self.gate and self.predict_change:
                self._weigh(y - self.last_, self._change_of(self._out_values[0]))
        features.append(y)  # from here on: the levels of this sample, features and target
        if self.last_ is not None:
            changes = _changes(features, self._previous)
            self._changes.add(changes)
            self.last_change_ = changes[-1]
        self._stats.add(features)
        self._previous = features
        self.last_ = y
        self._filled = None  # the statistics moved: the inputs must be recomputed

    def _predict_sample(self, x):
        """The next value predicted from the carried state and x (a dict), advancing nothing."""
        if self.last_ is None:
            self._checked(x)
            return 0.0
        features = self._features(x)
        fallback = self._fallback()
        if fallback is not None:
            return fallback
        if features != self._filled:
            self._fill_inputs(features, self.last_, self._previous, self.last_change_)
            self._filled = features
        return self._from_output(self._peek(), self.last_)

    def _predict_rows(self, rows):
        """_predict_sample of each row (dicts), in one engine call."""
        if self.last_ is None:
            for row in rows:
                self._checked(row)
            return [0.0] * len(rows)
        features = [self._features(row) for row in rows]
        fallback = self._fallback()
        if fallback is not None or not rows:
            return [fallback] * len(rows)
        inputs = self._inputs_of(
            features, lambda f: self._fill_inputs(f, self.last_, self._previous, self.last_change_)
        )
        return [self._from_output(float(o), self.last_) for o in self._run_rows(inputs)[:, 0]]

    def _fallback(self):
        """What to predict while the scale of the network's output is unknown (the last value,
        or the mean), else None: the network's output is used."""
        if self.predict_change:
            stats, fallback = self._changes, self.last_
        else:
            stats, fallback = self._stats, self._stats.mean[-1]
        return fallback if self.standardize and not stats.known(len(stats.mean) - 1) else None

    def _from_output(self, out, level):
        """The prediction, in the data's units, that the network's output `out` means when the
        previous value is `level`."""
        if self.predict_change:
            return level + self.gate_ * self._change_of(out)
        if not self.standardize:
            return out
        return self._stats.mean[-1] + out / self._stats.inv[-1]

    def _start_regressor(self, x):
        self._start(x, 1, "mse")
        F = len(self.keys_)
        self._restore_own(
            {
                "last": None,
                "last_change": None,
                "previous": None,
                "changes": _Stats(F + 1).to_dict(),
                "gate": [0.0] * (2 * len(GATE)),
            }
        )

    def _layout(self, F):
        """What each input column holds with F features: the levels of the features (and of
        the previous target), then (changes=True) their changes."""
        levels = [("level", i) for i in range(F)] + (
            [("level", "y")] if self.previous_target else []
        )
        return levels + ([("change", name[1]) for name in levels] if self.changes else [])

    @staticmethod
    def _stats_size(F):
        return F + 1  # the features and the target

    def _grow(self, index, count):
        self._changes.insert(index, count)
        if self._previous is not None:
            self._previous[index:index] = [None] * count

    def _change_of(self, out):
        """The network's output as a change of the target, in the data's units."""
        return out / self._changes.inv[-1] if self.standardize else out

    def _target(self, y):
        """The network's target for y and its loss weight: the change from the last value (or y),
        standardised (the change by its scale only: no change stays 0). Weight 0 while the
        scale is unknown: the step advances the state and learns nothing."""
        if not self.standardize:
            return (y - self.last_ if self.predict_change else y), 1.0
        if self.predict_change:
            stats, value, centre = self._changes, y - self.last_, 0.0
        else:
            stats, value = self._stats, y
            centre = stats.mean[-1]
        if not stats.known(len(stats.mean) - 1):
            return 0.0, 0.0
        return (value - centre) * stats.inv[-1], 1.0

    def _weigh(self, change, predicted):
        """The gate: for each factor a in GATE, the running evidence D (and its sum of squares
        Q) that the last value plus a times the predicted change beats the last value, in
        absolute error, fading by GATE_KEEP a sample. The gate uses the factor with the most
        evidence, if that evidence exceeds its own standard deviation (D > sqrt(Q): more than
        luck), else none: so the learner predicts the last value until the network has shown,
        and goes on showing, that it does better."""
        sums, keep = self._gate_sums, GATE_KEEP
        best, factor = 0.0, 0.0
        base = abs(change)
        for k, a in enumerate(GATE):
            gain = base - abs(change - a * predicted)
            d = sums[2 * k] = keep * sums[2 * k] + gain
            q = sums[2 * k + 1] = keep * sums[2 * k + 1] + gain * gain
            if d > best and d * d > q:
                best, factor = d, a
        self.gate_ = factor

    def _fill_inputs(self, features, last, previous, last_change):
        """Write the network's inputs for a sample with these features into the input buffer
        (see learn_one), the previous target being `last`, the previous sample's levels
        `previous` and the target's last change `last_change`; standardised by the statistics
        of the samples learnt so far."""
        buffer, stats, changes = self._x_values, self._stats, self._changes
        clip = self._clip_value if self.standardize else math.inf
        levels = features + [last] if self.previous_target else features
        _standardise(buffer, 0, levels, stats, clip, self.standardize)
        if self.changes:  # (no statistics yet, at the second sample: zeros)
            moves = _changes(features, previous)
            if self.previous_target:
                moves.append(last_change)
            _standardise(buffer, len(levels), moves, changes, clip, self.standardize)

    def _own_state(self):
        return {
            "last": self.last_,
            "last_change": self.last_change_,
            "previous": self._previous,
            "changes": self._changes.to_dict(),
            "gate": list(self._gate_sums),
            "gate_factor": self.gate_,
        }

    def _restore_own(self, state):
        self.last_, self.last_change_ = state["last"], state["last_change"]
        self._previous = (
            None
            if state["previous"] is None
            else [None if v is None else float(v) for v in state["previous"]]
        )
        self._changes = _Stats.from_dict(state["changes"], self.clip)
        self._gate_sums = [float(v) for v in state["gate"]]
        self.gate_ = float(state.get("gate_factor", 0.0)) if self.gate else 1.0
        self._y = np.zeros((1, 1, 1), self.trainer_.model.dtype)
        self._y_values = _flat_view(self._y)
        self._filled = None


class Regressor(_Regression, _RegressorBase):
    """A recurrent net learning a stream online, in river's protocol (see the module's text).

    hidden_size, num_layers, cell ("lstm", "gru", "rnn"): the model. k1, k2: TBPTT(k1, k2), an
    update every k1 samples through the last k2 steps. lr, optimizer ("adam" or "sgd"),
    clip_norm: the update. previous_target: feed the previous target as an input.
    changes: also feed the change of every feature, and of the target, since the previous
    sample. predict_change: predict the change from the previous target rather than the target.
    gate: use the predicted change only as far as it has beaten the last value lately.
    standardize: standardise inputs and targets online (False: the network sees raw values);
    clip: robust standardisation, at `clip` standard deviations (None: plain).
    recompute: after each update, run the last k2 - k1 + 1 steps again with the new weights
    (Trainer's recompute): exact gradients, and predictions from the current weights' state.
    backend: "cpp" (fast) or "numpy" (the reference). seed: the model's initialisation.
    As it learns: `last_` (the previous target), `gate_` (the share of the predicted change in
    use: 0, 0.5 or 1), `skipped_updates`, `keys_` (the features, in input-column order),
    `added_features` (features first seen after the first sample), `imputed_values` (missing
    features imputed with their running mean).
    """

    def learn_one(self, x, y):
        """Advance the state by one step with x (a dict of numbers) and learn from the value y (a
        float)."""
        self._learn_sample(x, y)

    def predict_one(self, x):
        """The next value predicted from the carried state and x (a dict), advancing nothing."""
        return self._predict_sample(x)

    # river's mini-batch protocol (pandas)
    def learn_many(self, X, y):
        """Learn the rows of X (a pandas DataFrame) with the targets y (a Series), in order: they
        are consecutive steps of the stream, exactly as learn_one row by row (NaN in X: a
        missing value)."""
        for x, target in zip(_records(X), y):
            self._learn_sample(x, target)

    def predict_many(self, X):
        """predict_one of each row of X (a pandas DataFrame): each row as the next step from the
        carried state, advancing nothing, all in one engine call (the rows run as parallel
        streams from copies of the carried state). A pandas Series."""
        import pandas as pd

        return pd.Series(self._predict_rows(_records(X)), index=X.index, dtype=float)


class Forecaster(_Regression, _ForecasterBase):
    """A recurrent net forecasting a stream online, in river's time-series protocol
    (`river.time_series.base.Forecaster`): `learn_one(y, x=None)` takes one step of the stream
    (y, a float, and optional exogenous features x, a dict) and learns it as the Regressor does;
    `forecast(horizon, xs=None)` returns the next `horizon` values, running the recurrent state
    forward on its own predictions (each fed back as the previous target, its change as the
    target's change), with `xs` the known future features (a list of `horizon` dicts; without
    it the features are missing, imputed with their running means). Forecasting changes
    nothing: the carried state, the statistics and the model stay as they were.

    The features are x's numbers; its other values (a date, a text: what river's series carry
    beside the value) are not features and are left out, as river's own forecasters leave out
    x. A number that is NaN or infinite is refused (ValueError naming it).

    The arguments and attributes are the Regressor's, and so are the defaults but one, measured
    on river's series and tbptt's at horizon 12 (docs/online.md, `python benchmarks/online.py
    --forecaster-grid`): gate=False. The Regressor's gate weighs one-step evidence; rolled out
    over twelve steps it shrank every predicted change (the mean MAE over horizons 1..12 relative
    to the last value's: 0.801 without it against 0.808 with it in geometric mean over the four
    series, 0.950 against 0.973 on WaterFlow, the worst).
    """

    def __init__(
        self,
        hidden_size=32,
        k1=1,
        k2=20,
        cell="lstm",
        lr=3e-3,
        optimizer="adam",
        clip_norm=1.0,
        previous_target=True,
        changes=True,
        predict_change=True,
        gate=False,
        standardize=True,
        clip=5.0,
        num_layers=1,
        recompute=True,
        backend="cpp",
        seed=0,
    ):
        super().__init__(
            hidden_size,
            k1,
            k2,
            cell,
            lr,
            optimizer,
            clip_norm,
            previous_target,
            changes,
            predict_change,
            gate,
            standardize,
            clip,
            num_layers,
            recompute,
            backend,
            seed,
        )

    def learn_one(self, y, x=None):
        """Advance the state by one step with the value y (a float) and the features x (a dict,
        or None for none), and learn from it."""
        self._learn_sample(_numbers("x", x), y)

    def forecast(self, horizon, xs=None):
        """The next `horizon` values (a list of floats), from the carried state, advancing
        nothing. xs: None, or the features of each of those steps (`horizon` dicts)."""
        horizon = _checks.positive_int("horizon", horizon)
        futures = self._futures(horizon, xs)
        if self.last_ is None:  # nothing learnt yet
            return [0.0] * horizon
        fallback = self._fallback()
        if fallback is not None:
            return [fallback] * horizon
        step = self._forward_step()
        state = self._engine.state()  # a copy: (h, c) or (h,), each (L, 1, H)
        level, previous, last_change = self.last_, self._previous, self.last_change_
        values = []
        for known in futures:
            features = [known.get(k) for k in self.keys_]
            self._fill_inputs(features, level, previous, last_change)
            out, state = step(self._x, state)
            value = self._from_output(float(out[0, 0, 0]), level)
            values.append(value)
            previous, last_change, level = features, value - level, value
        self._filled = None  # the input buffer holds the last future step's inputs
        return values

    def _futures(self, horizon, xs):
        """The future steps' features, checked: a list of `horizon` dicts."""
        if xs is None:
            return [{}] * horizon
        if isinstance(xs, (dict, str, bytes)) or not hasattr(xs, "__len__"):
            raise TypeError(
                f"xs must be a list of horizon = {horizon} dicts of features, got "
                f"{type(xs).__name__}"
            )
        if len(xs) != horizon:
            raise ValueError(f"xs must hold horizon = {horizon} dicts of features, got {len(xs)}")
        return [self._checked(_numbers(f"xs[{i}]", x), f"xs[{i}]") for i, x in enumerate(xs)]


class Classifier(_Online, _ClassifierBase):
    """A recurrent net classifying a stream online, in river's protocol.

    Labels get class ids in the order they first appear, up to `max_classes` (the model's
    outputs); a further label is a ValueError. previous_target: feed the previous label (one-hot)
    as an input. predict_proba_one gives the softmax over the labels seen so far. Other
    arguments as for `Regressor`.
    """

    def __init__(
        self,
        hidden_size=32,
        k1=1,
        k2=20,
        cell="lstm",
        lr=3e-3,
        optimizer="adam",
        clip_norm=1.0,
        previous_target=True,
        max_classes=16,
        clip=5.0,
        num_layers=1,
        recompute=True,
        backend="cpp",
        seed=0,
    ):
        self.hidden_size, self.k1, self.k2, self.cell = hidden_size, k1, k2, cell
        self.lr, self.optimizer, self.clip_norm = lr, optimizer, clip_norm
        self.previous_target, self.max_classes, self.clip = previous_target, max_classes, clip
        self.num_layers, self.backend, self.seed = num_layers, backend, seed
        self.recompute = recompute
        _checks.positive_int("max_classes", max_classes)
        self._check_settings()
        self._reset()
        self.classes_ = []  # labels in order of first appearance: class id = position
        self.last_ = None  # the previous label's class id

    @property
    def _multiclass(self):
        return True

    def learn_one(self, x, y):
        """Advance the state by one step with x (a dict) and learn the class y (TBPTT(k1, k2))."""
        _label("y", y)
        if self.trainer_ is None:
            self._start(x, self.max_classes, "cross_entropy")
            self._restore_own({"classes": [], "last": None})
        if y not in self.classes_ and len(self.classes_) == self.max_classes:
            raise ValueError(
                f"y = {y!r} would be label number {self.max_classes + 1}, but the "
                f"model has max_classes = {self.max_classes} outputs"
            )
        features = self._features(x, learn=True)
        if len(features) != len(x):
            self.imputed_values += features.count(None)
        label = self._class_id(y)
        self._fill_inputs(features)
        self._y[0, 0] = label
        self._learn(1.0)
        self._stats.add(features)
        self.last_ = label

    def predict_proba_one(self, x):
        """{class: probability} for the next step from the carried state, without advancing it."""
        if self.trainer_ is None or not self.classes_:
            self._checked(x)
            return {}
        self._fill_inputs(self._features(x))
        self._engine.peek(self._x_step, False, self._out_step)
        logits = self._out_step[0, : len(self.classes_)].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return dict(zip(self.classes_, p.tolist()))

    def predict_one(self, x):
        """The most probable label (None before any), as river's base.Classifier derives it:
        defined here too so that the class works without river."""
        proba = self.predict_proba_one(x)
        return max(proba, key=proba.get) if proba else None

    # river's mini-batch protocol (pandas)
    def learn_many(self, X, y):
        """Learn the rows of X (a pandas DataFrame) with the labels y (a Series), in order:
        consecutive steps of the stream, exactly as learn_one row by row (NaN: a missing value)."""
        for x, label in zip(_records(X), y):
            self.learn_one(x, label)

    def predict_proba_many(self, X):
        """predict_proba_one of each row of X (a pandas DataFrame), each as the next step from
        the carried state, in one engine call: a DataFrame, one column per label seen."""
        import pandas as pd

        rows = _records(X)
        if self.trainer_ is None or not self.classes_:
            for row in rows:
                self._checked(row)
            return pd.DataFrame(index=X.index)
        inputs = self._inputs_of([self._features(row) for row in rows], self._fill_inputs)
        logits = self._run_rows(inputs)[:, : len(self.classes_)].astype(np.float64)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return pd.DataFrame(p, index=X.index, columns=list(self.classes_))

    def predict_many(self, X):
        """predict_one of each row of X: the most probable label (None before any)."""
        import pandas as pd

        proba = self.predict_proba_many(X)
        if proba.shape[1] == 0:
            return pd.Series([None] * len(X), index=X.index, dtype=object)
        return proba.idxmax(axis=1)

    def _class_id(self, y):
        try:
            return self.classes_.index(y)
        except ValueError:
            self.classes_.append(y)  # learn_one checked there is room
            return len(self.classes_) - 1

    def _layout(self, F):
        """What each input column holds with F features: the features, then (previous_target)
        the previous label, one-hot over max_classes."""
        classes = [("class", c) for c in range(self.max_classes)] if self.previous_target else []
        return [("level", i) for i in range(F)] + classes

    @staticmethod
    def _stats_size(F):
        return F

    def _fill_inputs(self, features):
        extra: Sequence[float] = ()
        if self.previous_target:
            one_hot = [0.0] * self.max_classes
            if self.last_ is not None:
                one_hot[self.last_] = 1.0
            extra = one_hot
        self._fill(features, extra)

    def _labels(self):
        return self.classes_

    def _own_state(self):
        return {"classes": list(self.classes_), "last": self.last_}

    def _restore_own(self, state):
        self.classes_ = list(state["classes"])
        self.last_ = state["last"]
        self._y = np.zeros((1, 1), np.int64)


LEARNERS = {"Regressor": Regressor, "Classifier": Classifier, "Forecaster": Forecaster}


def load(path):
    """The Regressor, Classifier or Forecaster that `save(path)` wrote, ready to go on."""
    header, _ = checkpoint.load_arrays(path, "trainer")
    state = header.get(KIND)
    if not isinstance(state, dict) or state.get("class") not in LEARNERS:
        raise ValueError(f"{path} is a trainer checkpoint, not one of a tbptt.river learner")
    version = state.get("version", 1)
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(
            f"{path} holds a {state['class']} written by a newer tbptt (online format "
            f"{version!r}; this one reads up to {VERSION}): upgrade tbptt to go on"
        )
    if state["class"] != "Classifier" and version < 2:
        raise ValueError(
            f"{path} holds a Regressor of an earlier tbptt (before the change inputs "
            f"and the gate), which this version cannot go on with: start a new one"
        )
    try:
        params = {"recompute": False, **state["params"]}  # files from before it: without
        learner = LEARNERS[state["class"]](**params)
        learner._restore(state, checkpoint.load_trainer(path))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path} has a damaged online-learner header: {error}") from None
    return learner


# Pickles name a class by its module: the learners' public path, which the versions before the
# move to tbptt.apps read too (tbptt.river is the same module object).
for _learner in (Regressor, Classifier, Forecaster):
    _learner.__module__ = "tbptt.river"
