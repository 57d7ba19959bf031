"""Figures for the library's pictures (loss curves, forecasts, the sweep's plots): matplotlib's
object API (no pyplot, no global backend), an optional extra, and files written atomically."""

from __future__ import annotations

from . import _files


def figure(what, **kwargs):
    """A new matplotlib Figure (constrained layout); ImportError naming the extra if matplotlib is
    missing. what: the pictures that need it, for the message ("the sweep plots", ...)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            f"{what} need matplotlib: pip install tbptt[plot] (or pip install matplotlib)"
        ) from None
    return Figure(layout="constrained", **kwargs)


def save(fig, path, dpi=100) -> None:
    """Write `fig` as a PNG at `path`, atomically (a crash leaves the previous file)."""
    _files.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
