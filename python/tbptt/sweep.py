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

matplotlib is needed only for the plots (the `plot` extra), and imported only there.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import time

import numpy as np

from . import _checks, _plots, _sizes
from .model import MODELS, build
from .optim import OPTIMIZERS, Adam, from_config
from .trainer import BACKENDS, MAX_K, Trainer, _data, _reset_every, _validation

__all__ = ["sweep", "sweep_table", "plot_sweep", "write_sweep", "ROW_KEYS"]

# The keys of every row `sweep` returns, in table order (see `sweep` for their meaning).
ROW_KEYS = ("k1", "k2", "reset", "train_loss", "val_loss", "val_accuracy", "samples_per_s",
            "window_bytes", "peak_rss_bytes", "updates", "steps", "samples", "seconds",
            "horizon_ratio", "diverged", "horizon", "curve")
TAIL = 0.1  # train_loss: the mean loss of the updates in the last 10% of the budget


def sweep(data, y=None, mask=None, resets=None, *, k1, k2=None, pairs=None, reset="epoch",
          steps=None, validation=None, loss=None, input_size=None, output_size=None, hidden=32,
          layers=1, cell="lstm", forget_bias=1.0, dtype="float32", seed=0, optimizer=None, clip_norm=5.0,
          backend="cpp", points=20, progress=False, callback=None, comm=None) -> list:
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
    clip_norm, backend: as for `Trainer`.
    points: points of the learning curve (blocks of steps / points steps each).
    progress: a tqdm bar over all configurations' steps.
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
    from .datasets import Task

    # ---- data -----------------------------------------------------------------------------------
    if isinstance(data, Task):
        loss = data.loss if loss is None else loss
        input_size = data.input_size if input_size is None else input_size
        output_size = data.output_size if output_size is None else output_size
    x, y, mask, resets = _data(data, y, mask, resets)
    if validation is not None:
        validation = _validation(validation)
    T, B = x.shape[0], x.shape[1]
    tokens = x.ndim == 2
    if loss is None:
        loss = "cross_entropy" if np.asarray(y).dtype.kind in "iu" and np.ndim(y) == 2 else "mse"
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
    sets = [(x, y)] + ([validation[:2]] if validation is not None else [])
    if input_size is None:
        input_size = (max(int(np.max(a)) for a, _ in sets) + 1) if tokens else x.shape[2]
    if output_size is None:
        output_size = (max(int(np.max(b)) for _, b in sets) + 1) if loss == "cross_entropy" \
            else np.shape(y)[2]

    # ---- the grid -------------------------------------------------------------------------------
    if pairs is not None:
        if k1 is not None or k2 is not None:
            raise TypeError("pass either pairs=[(k1, k2), ...] or k1 (and k2), not both")
        pairs = [(_k("k1", a), _k("k2", b)) for a, b in pairs]
    else:
        if k1 is None:
            raise TypeError("k1 is required (an int or a list of ints), unless pairs is given")
        k1s = [_k("k1", k) for k in _as_list(k1)]
        pairs = ([(k, k) for k in k1s] if k2 is None else
                 [(a, b) for a in k1s for b in (_k("k2", k) for k in _as_list(k2))])
    policies = _as_list(reset)
    for policy in policies:
        _reset_every(policy)  # ValueError for a bad policy, before anything runs
    configs = [(a, b, p) for (a, b), p in itertools.product(pairs, policies)]
    if not configs:
        raise ValueError("the grid is empty: give at least one k1 (or pair) and one reset policy")
    if len(set((a, b, str(p)) for a, b, p in configs)) != len(configs):
        raise ValueError(f"the grid repeats a configuration: {configs}")
    steps = T if steps is None else _checks.positive_int("steps", steps)
    points = _checks.positive_int("points", points)
    optimizer = Adam() if optimizer is None else optimizer
    if not isinstance(optimizer, OPTIMIZERS):
        raise TypeError(f"optimizer must be tbptt.SGD, tbptt.Adam or tbptt.AdamW, got "
                        f"{type(optimizer).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    # Fail on a bad model argument now, not after the first configuration.
    build(cell, input_size, hidden, output_size, num_layers=layers, dtype=dtype, seed=seed,
          forget_bias=forget_bias)

    # The learning curve's points; blocks of training end there and where the last 10% starts.
    marks = sorted({int(round(steps * (i + 1) / points)) for i in range(points)} - {0})

    def train_all(share, show_progress, report):
        """The rows of the configurations in `share`, in order."""
        from tqdm.auto import tqdm
        bar = tqdm(total=len(share) * steps * B, unit="sample", unit_scale=True,
                   disable=not show_progress, dynamic_ncols=True, leave=False)
        rows = []
        try:
            for k1_, k2_, policy in share:
                bar.set_description(f"TBPTT({k1_}, {k2_}) reset={policy}")
                model = build(cell, input_size, hidden, output_size, num_layers=layers,
                              dtype=dtype, seed=seed, forget_bias=forget_bias)
                trainer = Trainer(model, k1_, k2_, loss=loss,
                                  optimizer=from_config(optimizer.config()),
                                  clip_norm=clip_norm, backend=backend)
                row = _run(trainer, x, y, mask, resets, validation, policy, steps, marks, bar)
                row["window_bytes"] = _window_bytes(k1_, k2_, B, model, tokens)
                rows.append(row)
                if report is not None:
                    report(row)
        finally:
            bar.close()
        return rows

    if comm is None:
        return train_all(configs, progress, callback)
    return _spread(comm, configs, train_all, progress, callback)


def _spread(comm, configs, train_all, progress, callback):
    """The grid over the ranks: rank r trains configurations r, r + R, ... (one rank's bar); every
    rank gets the whole table in the grid's order. A rank that fails makes every rank raise."""
    rank, ranks = comm.Get_rank(), comm.Get_size()
    try:
        mine, error = train_all(configs[rank::ranks], progress and rank == 0, callback), None
    except Exception as caught:  # noqa: BLE001 - raised after the others know
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


def _window_bytes(k1, k2, B, model, tokens):
    """The C++ engine's ring buffer: the cell's values of every layer, the input, a reset flag."""
    item = model.dtype.itemsize
    values = _sizes.WINDOW_VALUES[model.cell]
    per_stream = values * model.hidden_size * model.num_layers * item + 1 + (
        8 if tokens else model.input_size * item)
    return (max(k1, k2) + 1) * B * per_stream


def _run(trainer, x, y, mask, resets, validation, policy, steps, marks, bar):
    """Train one configuration for `steps` steps, with a point of the learning curve at each of
    `marks`; return its row."""
    T, B = x.shape[0], x.shape[1]
    every = _reset_every(policy)
    tail_start = int(math.floor(steps * (1 - TAIL)))
    ends = sorted(set(marks) | ({tail_start} if tail_start > 0 else set()))
    curve = {"steps": [], "train_loss": [], "val_loss": [], "val_accuracy": []}
    point, tail = [], []  # losses since the last point of the curve; losses of the last 10%
    seconds, done, diverged = 0.0, 0, None
    rss = _RSS()
    pos = 0  # position in the data (wraps around at T)
    for end in ends:
        while done < end and diverged is None:
            if pos == T:
                pos = 0
            if pos == 0 and policy == "epoch" and done > 0:
                trainer.reset_state()
            e = min(T, pos + end - done)
            block_resets = None if resets is None else resets[pos:e]
            if every is not None:
                due = np.repeat(((done + np.arange(e - pos)) % every == 0)[:, None], B, 1)
                block_resets = due if block_resets is None else due | (block_resets != 0)
            rss.before()
            tic = time.perf_counter()
            try:
                new = trainer.train(x[pos:e], y[pos:e], None if mask is None else mask[pos:e],
                                    block_resets)
            except FloatingPointError as error:
                diverged = str(error)
                new = np.zeros(0)
            seconds += time.perf_counter() - tic
            rss.after()
            point.append(new)
            if done >= tail_start:
                tail.append(new)
            if diverged is None:
                bar.update((e - pos) * B)
                done += e - pos
                pos = e
        if end in marks or diverged is not None:
            losses = np.concatenate(point) if point else np.zeros(0)
            point = []
            curve["steps"].append(done)
            curve["train_loss"].append(float(losses.mean()) if losses.size else math.nan)
            if validation is not None:
                result = trainer.evaluate(*validation)
                curve["val_loss"].append(result["loss"])
                if "accuracy" in result:
                    curve["val_accuracy"].append(result["accuracy"])
        if diverged is not None:
            break
    bar.update((steps - done) * B)  # a diverged configuration's unused budget

    tail = np.concatenate(tail) if tail else np.zeros(0)
    horizon = trainer.horizon()
    dh = horizon["dh"][0]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = float(dh[-1] / dh[0]) if dh.size and np.isfinite(dh[[0, -1]]).all() and dh[0] > 0 \
            else math.nan
    return {
        "k1": trainer.k1, "k2": trainer.k2, "reset": policy,
        "train_loss": float(tail.mean()) if tail.size else math.nan,
        "val_loss": curve["val_loss"][-1] if curve["val_loss"] else None,
        "val_accuracy": curve["val_accuracy"][-1] if curve["val_accuracy"] else None,
        "samples_per_s": done * B / seconds if seconds > 0 else math.nan,
        "window_bytes": None,  # filled in by sweep
        "peak_rss_bytes": rss.peak_growth(),
        "updates": trainer.updates, "steps": done, "samples": done * B, "seconds": seconds,
        "horizon_ratio": ratio, "diverged": diverged, "horizon": horizon, "curve": curve,
    }


class _RSS:
    """How far `train` calls raised the resident memory of this process, at their peak (Linux).

    Around every call: reset the peak (VmHWM) to the current RSS, then read it after the call.
    Growth that stays after a call (the engine's window, allocated at the first call) is carried
    into the next; memory used between calls (evaluation) is not counted. None elsewhere."""

    def __init__(self):
        self.ok = _reset_peak()
        self.held = self.peak = 0
        self.before_call = None

    def before(self):
        if self.ok:
            _reset_peak()
            self.before_call = _status_bytes("VmRSS")

    def after(self):
        if self.ok and self.before_call is not None:
            high, now = _status_bytes("VmHWM"), _status_bytes("VmRSS")
            if high is None or now is None:
                self.ok = False
                return
            self.peak = max(self.peak, self.held + high - self.before_call)
            self.held += now - self.before_call

    def peak_growth(self):
        return max(0, self.peak) if self.ok else None


def _status_bytes(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak():
    """Reset VmHWM (the peak RSS) to the current RSS; False where the system does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None and _status_bytes("VmRSS") is not None


# ---- the table ----------------------------------------------------------------------------------

SCALAR_KEYS = tuple(k for k in ROW_KEYS if k not in ("horizon", "curve"))


def sweep_table(rows) -> str:
    """The rows as a fixed-width text table (the scalar columns; horizon and curve left out)."""
    columns = [("k1", "k1", "d"), ("k2", "k2", "d"), ("reset", "reset", "s"),
               ("train_loss", "train loss", ".4f"), ("val_loss", "val loss", ".4f"),
               ("val_accuracy", "val acc", ".3f"), ("samples_per_s", "samples/s", ",.0f"),
               ("window_bytes", "window KiB", "kib"), ("peak_rss_bytes", "peak RSS MiB", "mib"),
               ("updates", "updates", ",d"), ("seconds", "seconds", ".1f"),
               ("horizon_ratio", "dh[k2-1]/dh[0]", ".2g")]
    if not any(r.get("val_loss") is not None for r in rows):
        columns = [c for c in columns if c[0] not in ("val_loss", "val_accuracy")]
    elif not any(r.get("val_accuracy") is not None for r in rows):
        columns = [c for c in columns if c[0] != "val_accuracy"]

    def cell(value, spec):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if spec == "kib":
            return f"{value / 1024:,.1f}"
        if spec == "mib":
            return f"{value / 2**20:,.1f}"
        if spec == "s":
            return str(value)
        return format(value, spec)

    table = [[title for _, title, _ in columns]]
    for r in rows:
        table.append([cell(r.get(key), spec) + ("  DIVERGED" if key == "horizon_ratio"
                                                 and r.get("diverged") else "")
                      for key, _, spec in columns])
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(text.rjust(w) for text, w in zip(line, widths)) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _plain(value):
    """JSON-ready: arrays to lists, NaN and inf to None."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_sweep(rows, folder, settings=None, prefix="") -> list:
    """Write sweep.json (every row in full, horizons and curves included, plus `settings`) and
    sweep.csv (the scalar columns) into `folder`, with an optional file-name prefix. Returns the
    paths written."""
    from .checkpoint import atomic_write

    os.makedirs(folder, exist_ok=True)
    document = {"settings": _plain(settings or {}), "rows": _plain(list(rows))}
    text = json.dumps(document, indent=1).encode("utf-8")
    json_path = os.path.join(folder, f"{prefix}sweep.json")
    csv_path = os.path.join(folder, f"{prefix}sweep.csv")
    atomic_write(json_path, lambda f: f.write(text))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SCALAR_KEYS)
    for r in rows:
        writer.writerow(["" if _plain(r.get(k)) is None else _plain(r.get(k)) for k in SCALAR_KEYS])
    data = buffer.getvalue().encode("utf-8")
    atomic_write(csv_path, lambda f: f.write(data))
    return [json_path, csv_path]


# ---- plots --------------------------------------------------------------------------------------

def _figure(**kw):
    return _plots.figure("the sweep plots", **kw)


def _label(r, policies):
    text = f"({r['k1']},{r['k2']})"
    return text + (f" reset={r['reset']}" if len(policies) > 1 else "")


def _styles(rows):
    """Line styles that make a grid readable: colour by k2, dash pattern by k1, marker by reset
    policy (when there are several)."""
    from matplotlib import colormaps

    k1s = sorted({r["k1"] for r in rows})
    k2s = sorted({r["k2"] for r in rows})
    policies = list(dict.fromkeys(str(r["reset"]) for r in rows))
    cmap = colormaps["tab10" if len(k2s) <= 10 else "viridis"]
    dashes = ["-", "--", ":", "-."]
    markers = [None, "o", "s", "^", "v", "D"]
    styles = []
    for r in rows:
        i = k2s.index(r["k2"])
        styles.append(dict(color=cmap(i if len(k2s) <= 10 else i / max(1, len(k2s) - 1)),
                           linestyle=dashes[k1s.index(r["k1"]) % len(dashes)],
                           marker=markers[policies.index(str(r["reset"])) % len(markers)],
                           markersize=3, label=_label(r, policies)))
    return styles


def _legend(ax, n):
    """The legend to the right of the plot, out of the lines' way."""
    ax.legend(fontsize=7, ncol=2 if n > 12 else 1, loc="upper left", bbox_to_anchor=(1.02, 1.0),
              borderaxespad=0.0)


def _log_if_wide(ax, series):
    """A log scale for losses that span more than 1.5 decades (a task learned to ~0)."""
    values = np.array([v for s in series for v in s if v is not None], dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() > 30:
        ax.set_yscale("log")


def _steps_label(value, _position=None):
    """Axis labels for step counts: 500, 20k, 1.5M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def plot_curves(rows, path, title=None, chance=None) -> None:
    """Learning curves against time steps: the training loss of each block of steps, and the
    validation accuracy (cross-entropy) or loss when there was validation. `chance`: a value to
    draw as a dotted line on the accuracy panel (say, 1/num_symbols)."""
    rows = list(rows)
    val = "val_accuracy" if any(r["curve"]["val_accuracy"] for r in rows) else (
        "val_loss" if any(r["curve"]["val_loss"] for r in rows) else None)
    fig = _figure(figsize=(10 if val else 6.5, 3.6))
    axes = fig.subplots(1, 2 if val else 1, squeeze=False)[0]
    for r, style in zip(rows, _styles(rows)):
        c = r["curve"]
        axes[0].plot(c["steps"], c["train_loss"], **style)
        if val:
            axes[1].plot(c["steps"][:len(c[val])], c[val], **style)
    axes[0].set_ylabel("training loss (mean per block)")
    _log_if_wide(axes[0], [r["curve"]["train_loss"] for r in rows])
    if val:
        axes[1].set_ylabel("validation accuracy" if val == "val_accuracy" else "validation loss")
        if chance is not None and val == "val_accuracy":
            axes[1].axhline(chance, color="grey", linestyle=":", label="chance")
        if val == "val_loss":
            _log_if_wide(axes[1], [r["curve"]["val_loss"] for r in rows])
    from matplotlib.ticker import FuncFormatter
    for ax in axes:
        ax.set_xlabel("time steps trained")
        ax.xaxis.set_major_formatter(FuncFormatter(_steps_label))
        ax.grid(alpha=0.3)
    _legend(axes[-1], len(rows))
    if title:
        fig.suptitle(title, fontsize=10)
    _plots.save(fig, path, dpi=80)


def plot_heatmap(rows, path, title=None, key=None) -> None:
    """The final loss over (k1, k2): a heat map per reset policy (validation loss when there
    was validation, else the final training loss), each cell annotated (with the validation
    accuracy too, for cross-entropy). Pairs not in the grid stay blank."""
    rows = list(rows)
    if key is None:
        key = "val_loss" if any(r["val_loss"] is not None for r in rows) else "train_loss"
    policies = list(dict.fromkeys(str(r["reset"]) for r in rows))
    k1s = sorted({r["k1"] for r in rows})
    k2s = sorted({r["k2"] for r in rows})
    fig = _figure(figsize=(1.2 + 1.0 * len(k2s) * len(policies) + 1.0, 0.9 + 0.55 * len(k1s)))
    axes = fig.subplots(1, len(policies), squeeze=False)[0]
    values = np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = None
    for ax, policy in zip(axes, policies):
        grid = np.full((len(k1s), len(k2s)), np.nan)
        notes = {}
        for r, v in zip(rows, values):
            if str(r["reset"]) != policy:
                continue
            i, j = k1s.index(r["k1"]), k2s.index(r["k2"])
            grid[i, j] = v
            note = "diverged" if r["diverged"] else ("-" if not math.isfinite(v) else f"{v:.3g}")
            if r.get("val_accuracy") is not None and not r["diverged"]:
                note += f"\n{r['val_accuracy']:.0%}"
            notes[i, j] = note
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", vmin=vmin, vmax=vmax,
                          aspect="auto", origin="lower")
        for (i, j), note in notes.items():
            ax.text(j, i, note, ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(grid[i, j]) and grid[i, j] > (vmin + vmax) / 2
                    else "black")
        ax.set_xticks(range(len(k2s)), [str(k) for k in k2s])
        ax.set_yticks(range(len(k1s)), [str(k) for k in k1s])
        ax.set_xlabel("k2 (steps backpropagated)")
        ax.set_ylabel("k1 (steps between updates)")
        if len(policies) > 1:
            ax.set_title(f"reset={policy}", fontsize=9)
    label = {"val_loss": "validation loss", "train_loss": "final training loss"}.get(key, key)
    fig.colorbar(image, ax=list(axes), label=label, shrink=0.9)
    if title:
        fig.suptitle(title, fontsize=10)
    _plots.save(fig, path, dpi=80)


def plot_horizon(rows, path, title=None, layer=0) -> None:
    """The gradient horizon on a log scale: mean ||dL/dh_{t-j}|| and, for LSTMs, ||dL/dc_{t-j}||
    of `layer` (default the bottom one) against j, one line per configuration. Zeros (beyond a
    reset) do not show on a log scale."""
    rows = list(rows)
    names = ("h", "c") if any("dc" in r["horizon"] for r in rows) else ("h",)
    fig = _figure(figsize=(5 * len(names), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for r, style in zip(rows, _styles(rows)):
        for ax, name in zip(axes, names):
            if f"d{name}" not in r["horizon"]:
                continue
            values = np.asarray(r["horizon"][f"d{name}"], dtype=float)
            if values.ndim != 2 or layer >= values.shape[0]:
                continue
            v = values[layer]
            v = np.where(v > 0, v, np.nan)
            ax.plot(np.arange(v.size), v, **(style if v.size > 1 else {**style, "marker": "o"}))
    for ax, name in zip(axes, names):
        ax.set_yscale("log")
        ax.set_xlabel("j, steps back from the update's newest step")
        ax.set_ylabel(f"mean ||dL/d{name}(t-j)||, layer {layer}")
        ax.grid(alpha=0.3, which="both")
    _legend(axes[-1], len(rows))
    if title:
        fig.suptitle(title, fontsize=10)
    _plots.save(fig, path, dpi=80)


def plot_sweep(rows, folder, title=None, chance=None, prefix="") -> list:
    """curves.png, heatmap.png and horizon.png (with an optional file-name prefix) in `folder`.
    Returns the paths written."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"{prefix}{name}.png") for name in ("curves", "heatmap", "horizon")]
    plot_curves(rows, paths[0], title, chance)
    plot_heatmap(rows, paths[1], title)
    plot_horizon(rows, paths[2], title)
    return paths


# ---- the `tbptt sweep` command ------------------------------------------------------------------

TASK_STEPS, TASK_VALID_STEPS = 10_000, 2_000


def add_parser(commands, number, add_data_arguments, backends):
    """Register `tbptt sweep` on the CLI's subparsers; `number` is the CLI's argparse type and
    `add_data_arguments` adds the data options shared with `tbptt train`."""
    p = commands.add_parser(
        "sweep", help="compare TBPTT(k1, k2) configurations on one task or data set",
        description="Train the same model (same seed, same data, same budget of steps) under a "
                    "grid of (k1, k2) and reset policies; print the table and write sweep.json, "
                    "sweep.csv, curves.png, heatmap.png and horizon.png into an output folder.",
        epilog="Example: tbptt sweep --task echo --delay 5 --k1 2,5,10 --k2 2,5,10 --steps 10000. "
               "Without --k2 each k1 runs as chunked TBPTT(k1, k1). Model and optimiser as "
               "`tbptt train` (Adam, clip 5, forget bias 1; defaults per kind of data).")
    add_data_arguments(p)
    p.add_argument("--delay", type=number(int, 0, strict=False),
                   help="echo: the delay d (default 20); copy: blank steps (default 10)")
    p.add_argument("--length", type=number(int, 1, strict=False),
                   help="adding: sequence length (default 50); copy: symbols (default 10)")
    p.add_argument("--k1", type=_int_list, required=True, metavar="LIST",
                   help="steps between updates, comma-separated (e.g. 5,10)")
    p.add_argument("--k2", type=_int_list, metavar="LIST",
                   help="steps backpropagated, comma-separated (e.g. 5,10,20,40); every (k1, k2) "
                        "pair runs (default: k2 = k1)")
    p.add_argument("--reset", type=_reset_list, default=["epoch"], metavar="LIST",
                   help="state reset policies, comma-separated: epoch (each pass over the data, "
                        "the default), never, or N (every N steps)")
    p.add_argument("--steps", type=number(int, 0), metavar="N",
                   help=f"time steps per configuration (default: one pass; tasks: "
                        f"{TASK_STEPS:,} steps of fresh data)")
    p.add_argument("--points", type=number(int, 0), default=20,
                   help="points of each learning curve (default 20)")
    p.add_argument("--hidden", type=number(int, 0), help="hidden units per layer")
    p.add_argument("--cell", choices=tuple(MODELS), default="lstm",
                   help="the recurrent cell: lstm (default), gru or rnn (tanh)")
    p.add_argument("--layers", type=number(int, 0), default=1, help="layers (default 1)")
    p.add_argument("--batch", type=number(int, 0), help="B, the number of parallel streams")
    p.add_argument("--lr", type=number(float, 0), help="Adam's learning rate")
    p.add_argument("--threads", type=number(int, 0), help="threads of the C++ engine")
    p.add_argument("--backend", choices=backends, default="cpp",
                   help="cpp (default, compiled) or numpy (the reference)")
    p.add_argument("--seed", type=int, default=0, help="for the model and the tasks (default 0)")
    p.add_argument("--out", metavar="FOLDER", help="output folder (default runs/sweep-<timestamp>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _int_list(text):
    import argparse
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _reset_list(text):
    import argparse
    policies = []
    for v in (v.strip() for v in text.split(",") if v.strip()):
        if v in ("epoch", "never"):
            policies.append(v)
        elif v.isdigit() and int(v) >= 1:
            policies.append(int(v))
        else:
            raise argparse.ArgumentTypeError(f"reset policies are epoch, never or N >= 1, got {v!r}")
    if not policies:
        raise argparse.ArgumentTypeError("give at least one reset policy")
    return policies


def _task(args, steps):
    """A memory task of `steps` fresh steps (at most 100k; more steps pass over it again) and its
    validation set (another seed)."""
    from . import datasets

    B, T = args.batch, min(steps, 100_000)
    if args.task == "echo":
        d = 20 if args.delay is None else args.delay
        if d >= TASK_VALID_STEPS or d >= T:
            raise ValueError(f"--delay {d} must be below the steps of data ({min(T, TASK_VALID_STEPS)})")
        make = lambda T, s: datasets.echo(T, B, delay=d, seed=s)
    elif args.task == "adding":
        n = 50 if args.length is None else args.length
        if n < 2:
            raise ValueError(f"--length (adding's sequence length) must be >= 2, got {n}")
        make = lambda T, s: datasets.adding(T, B, seq_len=n, seed=s)
    else:
        make = lambda T, s: datasets.copy(T, B, length=10 if args.length is None else args.length,
                                          delay=10 if args.delay is None else args.delay, seed=s)
    train, valid = make(T, args.seed), make(TASK_VALID_STEPS, args.seed + 1)
    return train, valid, train.description


def command(args, prepare, kind, defaults, comm=None):
    """`tbptt sweep`: `prepare(args, kind)` and `defaults` are the CLI's (as for `tbptt train`),
    so the data are read and split exactly as `tbptt train` does. comm: several MPI ranks share
    the grid's configurations; rank 0 prints and writes the table and the plots."""
    import builtins
    import datetime

    rank = 0 if comm is None else comm.Get_rank()
    print = builtins.print if rank == 0 else (lambda *a, **k: None)  # noqa: A001

    if args.column is not None and args.data is None:
        args.subparser.error("--column goes with --data FILE.csv")
    for name, value in defaults[kind].items():
        if hasattr(args, name) and getattr(args, name) is None:
            setattr(args, name, value)
    if args.threads is not None:
        from ._threads import set_num_threads
        set_num_threads(args.threads)

    if kind in ("echo", "adding", "copy"):
        steps = args.steps or TASK_STEPS
        train, valid, source = _task(args, steps)
        data, validation = train, valid
    else:
        prepared = prepare(args, kind)
        data, validation = prepared.train, prepared.valid
        source = prepared.meta["source"]
        steps = args.steps
    x = data.x if hasattr(data, "x") else data[0]
    k2_text = "k2 = k1" if args.k2 is None else f"k2 in {args.k2}"
    print(f"data: {source}: {x.shape[0]:,} steps x {x.shape[1]} streams")
    print(f"grid: k1 in {args.k1}, {k2_text}, reset in {args.reset}; "
          f"{steps or x.shape[0]:,} steps each; {args.cell.upper()} {args.layers} x {args.hidden}, Adam lr "
          f"{args.lr:g}, clip 5{', forget bias 1' if args.cell == 'lstm' else ''}, seed {args.seed}, "
          f"{args.backend} backend")

    if comm is not None:
        print(f"the {comm.Get_size()} MPI ranks share the configurations")
    if args.out is None:
        args.out = os.path.join("runs", "sweep-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    if comm is not None:  # rank 0's time stamp
        args.out = comm.bcast(args.out, root=0)
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)

    def report(row):  # every rank reports the configurations it trains as they end
        who = "" if comm is None else f"[rank {rank}] "
        builtins.print(f"  {who}TBPTT({row['k1']}, {row['k2']}) reset={row['reset']}: train loss "
              f"{row['train_loss']:.4f}" + (f", val loss {row['val_loss']:.4f}"
                                             if row["val_loss"] is not None else "")
              + (f", val acc {row['val_accuracy']:.3f}" if row["val_accuracy"] is not None else "")
              + f", {row['seconds']:.1f} s" + (", DIVERGED" if row["diverged"] else ""), flush=True)

    arrays = data if isinstance(data, tuple) else (data,)
    rows = sweep(*arrays, k1=args.k1, k2=args.k2, reset=args.reset, steps=steps,
                 validation=validation, hidden=args.hidden, layers=args.layers, cell=args.cell,
                 forget_bias=1.0,
                 seed=args.seed, optimizer=Adam(args.lr), clip_norm=5.0, backend=args.backend,
                 points=args.points, progress=not args.no_progress, callback=report, comm=comm)
    if rank != 0:
        return 0
    print()
    print(sweep_table(rows))
    settings = {name: getattr(args, name) for name in
                ("task", "data", "column", "delay", "length", "k1", "k2", "reset", "steps",
                 "cell", "hidden", "layers", "batch", "lr", "backend", "seed")}
    settings.update(steps=steps or x.shape[0], source=source, clip_norm=5.0, optimizer="adam",
                    **({"forget_bias": 1.0} if args.cell == "lstm" else {}))
    written = write_sweep(rows, args.out, settings)
    try:
        written += plot_sweep(rows, args.out, title=source.split(";")[0])
    except ImportError as error:
        print(f"{error}: no plots")
    print(f"wrote {', '.join(written)}")
    return 0
