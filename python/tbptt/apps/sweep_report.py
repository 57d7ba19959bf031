"""The output of the TBPTT configuration study (`tbptt.sweep`): its rows as a text table, as files
(sweep.json, sweep.csv) and as plots (learning curves, a heat map of the final loss over (k1, k2),
the gradient horizon). matplotlib is needed only for the plots (the `plot` extra), and imported
only there.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np

from .. import _files, _plots
from .sweep import ROW_KEYS

__all__ = [
    "sweep_table",
    "write_sweep",
    "plot_sweep",
    "plot_curves",
    "plot_heatmap",
    "plot_horizon",
    "SCALAR_KEYS",
]

# ---- the table ----------------------------------------------------------------------------------

SCALAR_KEYS = tuple(k for k in ROW_KEYS if k not in ("horizon", "curve"))


def sweep_table(rows) -> str:
    """The rows as a fixed-width text table (the scalar columns; horizon and curve left out)."""
    columns = [
        ("k1", "k1", "d"),
        ("k2", "k2", "d"),
        ("reset", "reset", "s"),
        ("train_loss", "train loss", ".4f"),
        ("val_loss", "val loss", ".4f"),
        ("val_accuracy", "val acc", ".3f"),
        ("samples_per_s", "samples/s", ",.0f"),
        ("window_bytes", "window KiB", "kib"),
        ("peak_rss_bytes", "peak RSS MiB", "mib"),
        ("updates", "updates", ",d"),
        ("seconds", "seconds", ".1f"),
        ("horizon_ratio", "dh[k2-1]/dh[0]", ".2g"),
    ]
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
        table.append(
            [
                cell(r.get(key), spec)
                + ("  DIVERGED" if key == "horizon_ratio" and r.get("diverged") else "")
                for key, _, spec in columns
            ]
        )
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
    os.makedirs(folder, exist_ok=True)
    document = {"settings": _plain(settings or {}), "rows": _plain(list(rows))}
    text = json.dumps(document, indent=1).encode("utf-8")
    json_path = os.path.join(folder, f"{prefix}sweep.json")
    csv_path = os.path.join(folder, f"{prefix}sweep.csv")
    _files.atomic_write(json_path, lambda f: f.write(text))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SCALAR_KEYS)
    for r in rows:
        writer.writerow(["" if _plain(r.get(k)) is None else _plain(r.get(k)) for k in SCALAR_KEYS])
    data = buffer.getvalue().encode("utf-8")
    _files.atomic_write(csv_path, lambda f: f.write(data))
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
        styles.append(
            dict(
                color=cmap(i if len(k2s) <= 10 else i / max(1, len(k2s) - 1)),
                linestyle=dashes[k1s.index(r["k1"]) % len(dashes)],
                marker=markers[policies.index(str(r["reset"])) % len(markers)],
                markersize=3,
                label=_label(r, policies),
            )
        )
    return styles


def _legend(ax, n):
    """The legend to the right of the plot, out of the lines' way."""
    ax.legend(
        fontsize=7,
        ncol=2 if n > 12 else 1,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
    )


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
    val = (
        "val_accuracy"
        if any(r["curve"]["val_accuracy"] for r in rows)
        else ("val_loss" if any(r["curve"]["val_loss"] for r in rows) else None)
    )
    fig = _figure(figsize=(10 if val else 6.5, 3.6))
    axes = fig.subplots(1, 2 if val else 1, squeeze=False)[0]
    for r, style in zip(rows, _styles(rows)):
        c = r["curve"]
        axes[0].plot(c["steps"], c["train_loss"], **style)
        if val:
            axes[1].plot(c["steps"][: len(c[val])], c[val], **style)
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
        image = ax.imshow(
            np.ma.masked_invalid(grid),
            cmap="viridis_r",
            vmin=vmin,
            vmax=vmax,
            aspect="auto",
            origin="lower",
        )
        for (i, j), note in notes.items():
            ax.text(
                j,
                i,
                note,
                ha="center",
                va="center",
                fontsize=7,
                color="white"
                if np.isfinite(grid[i, j]) and grid[i, j] > (vmin + vmax) / 2
                else "black",
            )
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
    paths = [
        os.path.join(folder, f"{prefix}{name}.png") for name in ("curves", "heatmap", "horizon")
    ]
    plot_curves(rows, paths[0], title, chance)
    plot_heatmap(rows, paths[1], title)
    plot_horizon(rows, paths[2], title)
    return paths
