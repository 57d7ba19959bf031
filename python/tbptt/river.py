"""Online learning in river's protocol: one sample at a time, test-then-train, TBPTT(k1, k2).

    from river import evaluate, metrics
    import tbptt.river
    model = tbptt.river.Regressor()               # LSTM, H = 32, TBPTT(1, 20), Adam
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

What the network sees (all chosen from measurements, docs/online.md):
- its inputs: the sample's features and (previous_target=True) the previous target, each
  standardised by running means and standard deviations of the samples before this one;
- its target (predict_change=True): the change of the target from the previous one,
  standardised the same way, so that an untrained network predicts "the same as last time"
  rather than zero. The prediction is mapped back to the data's units.
The first sample only starts these statistics (the model takes its first step at the second);
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

from . import _checks, checkpoint
from .model import MODELS, build
from .optim import SGD, Adam
from .trainer import Trainer

__all__ = ["Regressor", "Classifier", "load"]

KIND = "online"  # the header entry of a checkpoint written by save()


class _Running:
    """Running means and variances (Welford) of a few values, as plain floats (fast per sample)."""

    __slots__ = ("n", "mean", "m2")

    def __init__(self, size):
        self.n, self.mean, self.m2 = 0, [0.0] * size, [0.0] * size

    def add(self, values):
        self.n += 1
        n, mean, m2 = self.n, self.mean, self.m2
        for i, v in enumerate(values):
            d = v - mean[i]
            mean[i] += d / n
            m2[i] += d * (v - mean[i])

    def scale(self, i):
        """The standard deviation of value i, 1.0 until two samples (or when it is 0)."""
        if self.n < 2 or self.m2[i] <= 0.0:
            return 1.0
        return math.sqrt(self.m2[i] / (self.n - 1))

    def known(self, i):
        return self.n >= 2 and self.m2[i] > 0.0

    def to_dict(self):
        return {"n": self.n, "mean": list(self.mean), "m2": list(self.m2)}

    @classmethod
    def from_dict(cls, d):
        running = cls(len(d["mean"]))
        running.n, running.mean, running.m2 = int(d["n"]), [float(v) for v in d["mean"]], \
            [float(v) for v in d["m2"]]
        return running


def _number(name, value):
    """`value` as a finite float, else TypeError / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


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
        if self.backend not in ("cpp", "numpy"):
            raise ValueError(f"backend must be 'cpp' or 'numpy', got {self.backend!r}")

    def _reset(self):
        """Forget everything learnt: no keys, no model (built at the first sample)."""
        self.keys_ = None        # the feature names, fixed by the first sample
        self.target_name = None  # what y is called, if the caller says (kept by save)
        self.trainer_ = None
        self.skipped_updates = 0
        self._stats = None       # _Running over the features, then the learner's own values

    def _start(self, x, input_size, output_size, loss, stats_size):
        """Fix the keys from the first sample and build the model and its trainer."""
        if not isinstance(x, dict):
            raise TypeError(f"x must be a dict of features, got {type(x).__name__}")
        if input_size == 0:
            raise ValueError("the first sample has no features and previous_target is False: "
                             "the network would have no input")
        self.keys_ = tuple(x)
        model = build(self.cell, input_size, self.hidden_size, output_size, self.num_layers,
                      seed=self.seed)  # an LSTM with forget bias 1
        params = model.parameter_views  # the head starts at zero: an untrained learner predicts the
        params["head.weight"][...] = 0.0  # mean (of the change: the last value plus its mean)
        params["head.bias"][...] = 0.0
        optimizer = Adam(self.lr) if self.optimizer == "adam" else SGD(self.lr)
        self.trainer_ = Trainer(model, self.k1, self.k2, loss=loss, optimizer=optimizer,
                                clip_norm=self.clip_norm, backend=self.backend)
        self._stats = _Running(stats_size)
        self._buffers()

    def _buffers(self):
        """The arrays the one-sample path reuses: x (1, 1, I), y, mask (1, 1), outputs."""
        model = self.trainer_.model
        self._x = np.zeros((1, 1, model.input_size), model.dtype)
        self._x_step = self._x[0]                     # (1, I): the one step of predict
        self._x_values = memoryview(self._x).cast("B").cast(self._x.dtype.char)  # fast setitem
        self._mask = np.ones((1, 1), model.dtype)
        self._out = np.zeros((1, 1, model.output_size), model.dtype)
        self._out_step = self._out[0]
        self._engine = self.trainer_.engine
        self.trainer_.num_streams = 1  # B = 1: the engine's window is sized by its first call

    def _features(self, x):
        """The sample's features in key order, checked: floats."""
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
        values, stats = self._x_values, self._stats
        mean = stats.mean
        for i, v in enumerate(features):
            values[i] = (v - mean[i]) / stats.scale(i)
        n = len(features)
        for j, v in enumerate(extra):
            values[n + j] = v

    def _learn(self, weight):
        """One TBPTT step on the filled inputs and self._y, with loss weight `weight`. A
        diverged update is skipped."""
        self._mask[0, 0] = weight
        try:
            self._engine.train(self._x, False, self._y, self._mask, None)
        except FloatingPointError:
            self.skipped_updates += 1  # not applied; the engine reset the state

    def _peek(self):
        self._engine.peek(self._x_step, False, self._out_step)
        return self._out_step[0, 0]

    # ---- checkpoints ---------------------------------------------------------------------------
    def save(self, path):
        """Write everything the next samples depend on, atomically: the trainer (model,
        optimiser, carried state, window), the keys and the running statistics.
        `tbptt.river.load(path)` resumes exactly where this learner is."""
        if self.trainer_ is None:
            raise ValueError("nothing to save yet: the learner has not seen a sample")
        for key in self.keys_:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise ValueError(f"save() keeps feature names as text or integers; {key!r} is a "
                                 f"{type(key).__name__}")
        params = {name: getattr(self, name) for name in inspect.signature(type(self)).parameters}
        state = {"class": type(self).__name__, "params": params,
                 "keys": list(self.keys_), "stats": self._stats.to_dict(),
                 "skipped_updates": self.skipped_updates, "target_name": self.target_name,
                 **self._own_state()}
        checkpoint.save_trainer(self.trainer_, path, extra={KIND: state})

    def _restore(self, state, trainer):
        self.keys_ = tuple(state["keys"])
        self._stats = _Running.from_dict(state["stats"])
        self.skipped_updates = int(state["skipped_updates"])
        self.target_name = state.get("target_name")
        self.trainer_ = trainer
        self._buffers()
        self._restore_own(state)


class Regressor(_Online, _RegressorBase):
    """A recurrent net learning a stream online, in river's protocol (see the module's text).

    hidden_size, num_layers, cell ("lstm", "gru", "rnn"): the model. k1, k2: TBPTT(k1, k2), an
    update every k1 samples through the last k2 steps. lr, optimizer ("adam" or "sgd"),
    clip_norm: the update. previous_target: feed the previous target as an input.
    predict_change: predict the change from the previous target rather than the target.
    standardize: standardise inputs and targets online (False: the network sees raw values).
    backend: "cpp" (fast) or "numpy" (the reference). seed: the model's initialisation.
    """

    def __init__(self, hidden_size=32, k1=1, k2=20, cell="lstm", lr=1e-3, optimizer="adam",
                 clip_norm=1.0, previous_target=True, predict_change=True, standardize=True,
                 num_layers=1, backend="cpp", seed=0):
        self.hidden_size, self.k1, self.k2, self.cell = hidden_size, k1, k2, cell
        self.lr, self.optimizer, self.clip_norm = lr, optimizer, clip_norm
        self.previous_target, self.predict_change = previous_target, predict_change
        self.standardize, self.num_layers, self.backend, self.seed = standardize, num_layers, backend, seed
        self._check_settings()
        self._reset()
        self.last_ = None  # the previous target, None before the first sample

    # self._stats: the features, then the target [F]; self._changes: the target's change
    def learn_one(self, x, y):
        y = _number("y", y)
        if self.trainer_ is None:
            self._start(x, len(x) + bool(self.previous_target), 1, "mse", len(x) + 1)
            self._restore_own({"last": None, "changes": _Running(1).to_dict()})
        features = self._features(x)
        if self.last_ is not None:  # the first sample only starts the statistics
            self._fill_inputs(features)
            stats, i = self._target_stats(len(features))
            value = y - self.last_ if self.predict_change else y
            if not self.standardize:
                z, weight = value, 1.0
            elif stats.known(i):
                z, weight = (value - stats.mean[i]) / stats.scale(i), 1.0
            else:  # its scale is not known yet: the step advances the state, learns nothing
                z, weight = 0.0, 0.0
            self._y[0, 0, 0] = z
            self._learn(weight)
            if self.predict_change:
                self._changes.add((value,))
        self._stats.add(features + [y])
        self.last_ = y

    def predict_one(self, x):
        if self.last_ is None:
            return 0.0
        features = self._features(x)
        self._fill_inputs(features)
        stats, i = self._target_stats(len(features))
        base_value = self.last_ if self.predict_change else 0.0
        if not self.standardize:
            return base_value + float(self._peek())
        if not stats.known(i):  # the last value (or the mean) until the scale is known
            return base_value + stats.mean[i]
        return base_value + stats.mean[i] + stats.scale(i) * float(self._peek())

    def _target_stats(self, F):
        """(running statistics, index) of what the network predicts."""
        if self.predict_change:
            return self._changes, 0
        return self._stats, F

    def _fill_inputs(self, features):
        if not self.standardize:
            values = self._x_values
            for i, v in enumerate(features):
                values[i] = v
            if self.previous_target:
                values[len(features)] = self.last_
            return
        extra = ()
        if self.previous_target:
            F = len(features)
            extra = ((self.last_ - self._stats.mean[F]) / self._stats.scale(F),)
        self._fill(features, extra)

    def _own_state(self):
        return {"last": self.last_, "changes": self._changes.to_dict()}

    def _restore_own(self, state):
        self.last_ = state["last"]
        self._changes = _Running.from_dict(state["changes"])
        self._y = np.zeros((1, 1, 1), self.trainer_.model.dtype)


class Classifier(_Online, _ClassifierBase):
    """A recurrent net classifying a stream online, in river's protocol.

    Labels get class ids in the order they first appear, up to `max_classes` (the model's
    outputs); a further label is a ValueError. previous_target: feed the previous label (one-hot)
    as an input. predict_proba_one gives the softmax over the labels seen so far. Other
    arguments as for `Regressor`.
    """

    def __init__(self, hidden_size=32, k1=1, k2=20, cell="lstm", lr=3e-3, optimizer="adam",
                 clip_norm=1.0, previous_target=True, max_classes=16, num_layers=1,
                 backend="cpp", seed=0):
        self.hidden_size, self.k1, self.k2, self.cell = hidden_size, k1, k2, cell
        self.lr, self.optimizer, self.clip_norm = lr, optimizer, clip_norm
        self.previous_target, self.max_classes = previous_target, max_classes
        self.num_layers, self.backend, self.seed = num_layers, backend, seed
        _checks.positive_int("max_classes", max_classes)
        self._check_settings()
        self._reset()
        self.classes_ = []   # labels in order of first appearance: class id = position
        self.last_ = None    # the previous label's class id

    @property
    def _multiclass(self):
        return True

    def learn_one(self, x, y):
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

    def _own_state(self):
        for label in self.classes_:
            if not isinstance(label, (str, int)):
                raise ValueError(f"save() keeps labels as text, integers or booleans; {label!r} "
                                 f"is a {type(label).__name__}")
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
    try:
        learner = {"Regressor": Regressor, "Classifier": Classifier}[state["class"]](**state["params"])
        learner._restore(state, checkpoint.load_trainer(path))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path} has a damaged online-learner header: {error}") from None
    return learner
