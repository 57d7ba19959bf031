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

Checks are made once per sample on the dict (the feature keys are fixed by the first sample;
values must be finite real numbers); the one-sample path then writes into reused buffers and
calls the engine directly, with no further argument checks or allocation. An update that
diverges (a non-finite loss or gradient) is not applied, the state is reset and the learner
goes on; `skipped_updates` counts them.
"""

from __future__ import annotations

import inspect
import math
import numbers

import numpy as np

try:
    from river import base
    _RegressorBase, _ClassifierBase = base.Regressor, base.Classifier
except ImportError:  # without river the learners still work (`tbptt online` uses them), as plain classes
    _RegressorBase = _ClassifierBase = object

from . import _checks, _pickled, checkpoint
from .model import MODELS, build
from .optim import SGD, Adam
from .trainer import Trainer

__all__ = ["Regressor", "Classifier", "load"]

KIND = "online"  # the header entry of a checkpoint written by save()
VERSION = 2      # of that entry; 1 (no "version"): a Regressor before the change inputs and the gate


_M2_MAX = 1e300  # the largest sum of squares kept, so that 1 / standard deviation stays > 0


class _Stats:
    """Running means and standard deviations of a few values, as plain floats (fast per sample).

    Robust to outliers (`clip` standard deviations, None: plain Welford): once a value's scale is
    known, a new value further than `clip` standard deviations from its mean counts as if it
    were `clip` away (a winsorised Welford update), so that one shock (a sensor dropping to zero,
    a jump of 50 standard deviations) does not inflate the scale for the rest of the stream; a
    lasting change of scale is still followed, each sample moving the estimate a little.
    `inv[i]` is 1 / the standard deviation of value i, 1.0 while it is unknown (fewer than two
    samples, or all equal): standardising is then `(v - mean[i]) * inv[i]`."""

    __slots__ = ("n", "mean", "m2", "inv", "clip")

    def __init__(self, size, clip=None):
        self.n, self.mean, self.m2, self.inv = 0, [0.0] * size, [0.0] * size, [1.0] * size
        self.clip = clip

    def add(self, values):
        self.n += 1
        n, mean, m2, inv, clip = self.n, self.mean, self.m2, self.inv, self.clip
        keep, sqrt = (n - 1) / n, math.sqrt
        for i, v in enumerate(values):  # Welford, with locals: this runs for every value
            q = m2[i]
            d = v - mean[i]
            if q > 0.0 and clip is not None:  # the scale is known: winsorise
                limit = clip / inv[i]
                if d > limit:
                    d = limit
                elif d < -limit:
                    d = -limit
            mean[i] += d / n
            q += d * d * keep  # d * (v - new mean) = d * d * (n - 1) / n
            if q > _M2_MAX:  # values beyond ~1e150 overflowed it: a scale that stays finite
                q = _M2_MAX
            m2[i] = q
            if q > 0.0:
                inv[i] = sqrt((n - 1) / q)

    def known(self, i):
        return self.m2[i] > 0.0

    def to_dict(self):
        return {"n": self.n, "mean": list(self.mean), "m2": list(self.m2)}

    @classmethod
    def from_dict(cls, d, clip=None):
        stats = cls(len(d["mean"]), clip)
        stats.n, stats.mean = int(d["n"]), [float(v) for v in d["mean"]]
        stats.m2 = [float(v) for v in d["m2"]]
        stats.inv = [math.sqrt((stats.n - 1) / v) if v > 0.0 else 1.0 for v in stats.m2]
        return stats


def _number(name, value):
    """`value` as a finite float, else TypeError / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _flat_view(array):
    """A flat memoryview of a C-contiguous array: reading or writing one item through it costs
    a fraction of NumPy's indexing."""
    return memoryview(array).cast("B").cast(array.dtype.char)


def _clipped(z, clip):
    return clip if z > clip else (-clip if z < -clip else z)


def _standardise(buffer, offset, values, mean, inv, clip, standardize=True):
    """buffer[offset + i] = values[i] standardised by (mean, inv) and clipped at +-clip
    (standardize=False: the values as they are)."""
    if not standardize:
        for i, v in enumerate(values):
            buffer[offset + i] = v
        return
    low = -clip
    for i, v in enumerate(values):
        z = (v - mean[i]) * inv[i]
        buffer[offset + i] = z if low <= z <= clip else (clip if z > clip else low)


class _Online:
    """What Regressor and Classifier share: the model, its trainer, the feature keys, the running
    statistics, the input buffer and the checkpoint."""

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
        self.keys_ = None        # the feature names, fixed by the first sample
        self.target_name = None  # what y is called, if the caller says (kept by save)
        self.trainer_ = None
        self.skipped_updates = 0
        self._stats = None       # _Stats over the features, then the learner's own values
        self._filled = None      # the features whose inputs the input buffer holds, if valid

    def _start(self, x, input_size, output_size, loss, stats_size):
        """Fix the keys from the first sample and build the model and its trainer."""
        if not isinstance(x, dict):
            raise TypeError(f"x must be a dict of features, got {type(x).__name__}")
        if input_size == 0:
            raise ValueError("the first sample has no features and previous_target is False: "
                             "the network would have no input")
        self.keys_ = tuple(x)
        # PyTorch's initialisation, without build's forget bias of 1 for an LSTM: learning
        # online from the first samples, 0 was better on 5 of the 6 streams of docs/online.md
        model = build(self.cell, input_size, self.hidden_size, output_size, self.num_layers,
                      seed=self.seed, forget_bias=0.0)
        params = model.parameter_views  # the head starts at zero: an untrained learner predicts no
        params["head.weight"][...] = 0.0  # change (the last value), or the mean
        params["head.bias"][...] = 0.0
        optimizer = Adam(self.lr) if self.optimizer == "adam" else SGD(self.lr)
        self.trainer_ = Trainer(model, self.k1, self.k2, loss=loss, optimizer=optimizer,
                                clip_norm=self.clip_norm, backend=self.backend,
                                recompute=self.recompute)
        self._stats = _Stats(stats_size, self.clip)
        self._buffers()

    def _buffers(self):
        """The arrays the one-sample path reuses: x (1, 1, I), y, mask (1, 1), outputs."""
        model = self.trainer_.model
        self._key_set = frozenset(self.keys_)
        self._x = np.zeros((1, 1, model.input_size), model.dtype)
        self._x_step = self._x[0]                     # (1, I): the one step of predict
        self._x_values = _flat_view(self._x)  # item access without NumPy's per-call overhead
        self._mask = np.ones((1, 1), model.dtype)
        self._mask_values = _flat_view(self._mask)
        self._out = np.zeros((1, 1, model.output_size), model.dtype)
        self._out_step = self._out[0]
        self._out_values = _flat_view(self._out)
        self._engine = self.trainer_.engine
        self._filled = None
        self.trainer_.num_streams = 1  # B = 1: the engine's window is sized by its first call

    def _features(self, x):
        """The sample's features in key order, checked: finite floats. The common case (a
        plain dict of floats with the first sample's keys) takes a fast path."""
        if type(x) is dict and x.keys() == self._key_set:
            values = [x[k] for k in self.keys_]
            for v in values:
                if type(v) is not float or v - v != 0.0:  # not a float, or NaN / infinity
                    break
            else:
                return values
        return self._checked_features(x)

    def _checked_features(self, x):
        if not isinstance(x, dict):
            raise TypeError(f"x must be a dict of features, got {type(x).__name__}")
        keys = self.keys_
        if len(x) != len(keys) or any(k not in x for k in keys):
            missing = [k for k in keys if k not in x]
            extra = [k for k in x if k not in keys]
            raise ValueError(f"x must have the features of the first sample {list(keys)}; "
                             f"missing {missing}, unexpected {extra}")
        return [_number(f"x[{k!r}]", x[k]) for k in keys]

    def _fill(self, features, extra):
        """Write the standardised features and `extra` (already standardised) into the input
        buffer. Features are standardised by the statistics of the samples before this one."""
        values, stats, clip = self._x_values, self._stats, self._clip_value
        mean, inv = stats.mean, stats.inv
        for i, v in enumerate(features):
            values[i] = _clipped((v - mean[i]) * inv[i], clip)
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
        return {"class": type(self).__name__, "version": VERSION, "params": self._params(),
                "keys": list(self.keys_), "stats": self._stats.to_dict(),
                "skipped_updates": self.skipped_updates, "target_name": self.target_name,
                **self._own_state()}

    def save(self, path):
        """Write everything the next samples depend on, atomically: the trainer (model,
        optimiser, carried state, window), the keys and the running statistics.
        `tbptt.river.load(path)` resumes exactly where this learner is."""
        if self.trainer_ is None:
            raise ValueError("nothing to save yet: the learner has not seen a sample")
        for what, names in (("feature names", self.keys_), ("labels", self._labels())):
            for name in names:
                if not isinstance(name, (str, int)):
                    raise ValueError(f"save() keeps {what} as text or integers; {name!r} is a "
                                     f"{type(name).__name__} (pickle keeps any)")
        checkpoint.save_trainer(self.trainer_, path, extra={KIND: self._state()})

    def _labels(self):
        return ()

    def __getstate__(self):
        """The constructor's arguments, the learner's state as `save` keeps it, and the trainer
        (which pickles through its engine's snapshot, tbptt._pickled): an unpickled learner, or
        a deep copy, goes on exactly as this one would."""
        return _pickled.state(f"tbptt.river.{type(self).__name__}", params=self._params(),
                              learner=None if self.trainer_ is None else self._state(),
                              trainer=self.trainer_)

    def __setstate__(self, state):
        state = _pickled.check(state, f"tbptt.river.{type(self).__name__}")
        self.__init__(**state["params"])
        if state["learner"] is not None:
            self._restore(state["learner"], state["trainer"])

    def _restore(self, state, trainer):
        self.keys_ = tuple(state["keys"])
        self._stats = _Stats.from_dict(state["stats"], self.clip)
        self.skipped_updates = int(state["skipped_updates"])
        self.target_name = state.get("target_name")
        self.trainer_ = trainer
        self._buffers()
        self._restore_own(state)


GATE = (0.5, 1.0)    # the shrunk predicted changes the gate weighs against none (the last value)
GATE_KEEP = 0.997    # the gate's evidence fades by this factor a sample (a memory of ~300)


class Regressor(_Online, _RegressorBase):
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
    use: 0, 0.5 or 1), `skipped_updates`.
    """

    def __init__(self, hidden_size=32, k1=1, k2=20, cell="lstm", lr=3e-3, optimizer="adam",
                 clip_norm=1.0, previous_target=True, changes=True, predict_change=True,
                 gate=True, standardize=True, clip=5.0, num_layers=1, recompute=True,
                 backend="cpp", seed=0):
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
    def learn_one(self, x, y):
        """Advance the state by one step with x (a dict of numbers) and learn from the value y (a float)."""
        if type(y) is not float or y - y != 0.0:  # not a float, or NaN / infinity
            y = _number("y", y)
        if self.trainer_ is None:
            self._start_regressor(x)
        features = self._features(x)
        if self.last_ is not None:  # the first sample only starts the statistics
            if features != self._filled:
                self._fill_inputs(features)
            z, weight = self._target(y)
            self._y_values[0] = z
            if self._learn(weight) and weight and self.gate and self.predict_change:
                self._weigh(y - self.last_, self._change_of(self._out_values[0]))
        features.append(y)  # from here on: the levels of this sample, features and target
        if self.last_ is not None:
            changes = [a - b for a, b in zip(features, self._previous)]
            self._changes.add(changes)
            self.last_change_ = changes[-1]
        self._stats.add(features)
        self._previous = features
        self.last_ = y
        self._filled = None  # the statistics moved: the inputs must be recomputed

    def predict_one(self, x):
        """The next value predicted from the carried state and x (a dict), advancing nothing."""
        if self.last_ is None:
            return 0.0
        features = self._features(x)
        if features != self._filled:
            self._fill_inputs(features)
            self._filled = features
        if not self.predict_change:
            out = self._peek()
            if not self.standardize:
                return out
            if not self._stats.known(len(features)):  # the mean until the scale is known
                return self._stats.mean[-1]
            return self._stats.mean[-1] + out / self._stats.inv[-1]
        if self.standardize and not self._changes.known(len(features)):
            return self.last_  # until the change's scale is known
        return self.last_ + self.gate_ * self._change_of(self._peek())

    def _start_regressor(self, x):
        F = len(x)
        inputs = (F + 1 if self.previous_target else F) * (2 if self.changes else 1)
        self._start(x, inputs, 1, "mse", F + 1)
        self._restore_own({"last": None, "last_change": None, "previous": None,
                           "changes": _Stats(F + 1).to_dict(), "gate": [0.0] * (2 * len(GATE))})

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

    def _fill_inputs(self, features):
        """Write the network's inputs for this sample into the input buffer (see learn_one),
        standardised by the statistics of the samples before this one."""
        buffer, stats, changes = self._x_values, self._stats, self._changes
        clip = self._clip_value if self.standardize else math.inf
        levels = features + [self.last_] if self.previous_target else features
        _standardise(buffer, 0, levels, stats.mean, stats.inv, clip, self.standardize)
        if self.changes:
            moves = [a - b for a, b in zip(features, self._previous)]
            if self.previous_target:
                moves.append(0.0 if self.last_change_ is None else self.last_change_)
            if self.standardize and changes.n == 0:  # the second sample: no scale yet
                moves = [0.0] * len(moves)
            _standardise(buffer, len(levels), moves, changes.mean, changes.inv, clip,
                         self.standardize)

    def _own_state(self):
        return {"last": self.last_, "last_change": self.last_change_, "previous": self._previous,
                "changes": self._changes.to_dict(), "gate": list(self._gate_sums),
                "gate_factor": self.gate_}

    def _restore_own(self, state):
        self.last_, self.last_change_ = state["last"], state["last_change"]
        self._previous = None if state["previous"] is None else [float(v) for v in state["previous"]]
        self._changes = _Stats.from_dict(state["changes"], self.clip)
        self._gate_sums = [float(v) for v in state["gate"]]
        self.gate_ = float(state.get("gate_factor", 0.0)) if self.gate else 1.0
        self._y = np.zeros((1, 1, 1), self.trainer_.model.dtype)
        self._y_values = _flat_view(self._y)
        self._filled = None


class Classifier(_Online, _ClassifierBase):
    """A recurrent net classifying a stream online, in river's protocol.

    Labels get class ids in the order they first appear, up to `max_classes` (the model's
    outputs); a further label is a ValueError. previous_target: feed the previous label (one-hot)
    as an input. predict_proba_one gives the softmax over the labels seen so far. Other
    arguments as for `Regressor`.
    """

    def __init__(self, hidden_size=32, k1=1, k2=20, cell="lstm", lr=3e-3, optimizer="adam",
                 clip_norm=1.0, previous_target=True, max_classes=16, clip=5.0, num_layers=1,
                 recompute=True, backend="cpp", seed=0):
        self.hidden_size, self.k1, self.k2, self.cell = hidden_size, k1, k2, cell
        self.lr, self.optimizer, self.clip_norm = lr, optimizer, clip_norm
        self.previous_target, self.max_classes, self.clip = previous_target, max_classes, clip
        self.num_layers, self.backend, self.seed = num_layers, backend, seed
        self.recompute = recompute
        _checks.positive_int("max_classes", max_classes)
        self._check_settings()
        self._reset()
        self.classes_ = []   # labels in order of first appearance: class id = position
        self.last_ = None    # the previous label's class id

    @property
    def _multiclass(self):
        return True

    def learn_one(self, x, y):
        """Advance the state by one step with x (a dict) and learn the class y (TBPTT(k1, k2))."""
        if self.trainer_ is None:
            extra = self.max_classes if self.previous_target else 0
            self._start(x, len(x) + extra, self.max_classes, "cross_entropy", len(x))
            self._restore_own({"classes": [], "last": None})
        features = self._features(x)
        label = self._class_id(y)
        self._fill_inputs(features)
        self._y[0, 0] = label
        self._learn(1.0)
        self._stats.add(features)
        self.last_ = label

    def predict_proba_one(self, x):
        """{class: probability} for the next step from the carried state, without advancing it."""
        if self.trainer_ is None or not self.classes_:
            return {}
        self._fill_inputs(self._features(x))
        self._engine.peek(self._x_step, False, self._out_step)
        logits = self._out_step[0, :len(self.classes_)].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return dict(zip(self.classes_, p.tolist()))

    def predict_one(self, x):
        """The most probable label (None before any), as river's base.Classifier derives it:
        defined here too so that the class works without river."""
        proba = self.predict_proba_one(x)
        return max(proba, key=proba.get) if proba else None

    def _class_id(self, y):
        try:
            return self.classes_.index(y)
        except ValueError:
            pass
        if len(self.classes_) == self.max_classes:
            raise ValueError(f"y = {y!r} would be label number {self.max_classes + 1}, but the "
                             f"model has max_classes = {self.max_classes} outputs")
        self.classes_.append(y)
        return len(self.classes_) - 1

    def _fill_inputs(self, features):
        extra = ()
        if self.previous_target:
            extra = [0.0] * self.max_classes
            if self.last_ is not None:
                extra[self.last_] = 1.0
        self._fill(features, extra)

    def _labels(self):
        return self.classes_

    def _own_state(self):
        return {"classes": list(self.classes_), "last": self.last_}

    def _restore_own(self, state):
        self.classes_ = list(state["classes"])
        self.last_ = state["last"]
        self._y = np.zeros((1, 1), np.int64)


def load(path):
    """The Regressor or Classifier that `save(path)` wrote, ready to go on."""
    header, _ = checkpoint.load_arrays(path, "trainer")
    state = header.get(KIND)
    if not isinstance(state, dict) or state.get("class") not in ("Regressor", "Classifier"):
        raise ValueError(f"{path} is a trainer checkpoint, not one of a tbptt.river learner")
    if state["class"] == "Regressor" and state.get("version", 1) != VERSION:
        raise ValueError(f"{path} holds a Regressor of an earlier tbptt (before the change inputs "
                         f"and the gate), which this version cannot go on with: start a new one")
    try:
        params = {"recompute": False, **state["params"]}  # files from before it: without
        learner = {"Regressor": Regressor, "Classifier": Classifier}[state["class"]](**params)
        learner._restore(state, checkpoint.load_trainer(path))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path} has a damaged online-learner header: {error}") from None
    return learner
