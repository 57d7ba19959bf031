"""The files of a run folder: their names, the model file with the run's header, the history,
and the folder itself."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os

from .. import _files, checkpoint
from ..history import History

MODEL, TRAINER, HISTORY, PLOT = "model.npz", "trainer.npz", "history.json", "loss.png"
HELD_OUT_PLOT, FORECAST_PLOT = "forecast.png", "forecast_ahead.png"


def output_folder(out: str | None) -> str:
    """`out`, or runs/<timestamp> (made unique); created."""
    if out is None:
        base = os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
        out, n = base, 1
        while os.path.exists(out):
            n += 1
            out = f"{base}-{n}"
    os.makedirs(out, exist_ok=True)
    return out


def save_model(model, path: str, extra: dict) -> None:
    """A tbptt model file (tbptt.load reads it) whose header also keeps `extra` (JSON)."""
    _files.save_arrays(
        path, {"kind": "model", "config": model.config(), **extra}, model.state_dict()
    )


def load_model(path: str) -> tuple:
    """The model and its file's header (which `save_model` may have extended)."""
    return checkpoint.load(path), _files.load_arrays(path, "model")[0]


def save_history(history: History, folder: str, say, loss_unit: str | None = None) -> list:
    """history.json, and loss.png (its axis in `loss_unit`) when matplotlib is there. Returns the
    names written."""
    text = json.dumps(history.to_dict(), indent=1).encode("utf-8")
    _files.atomic_write(os.path.join(folder, HISTORY), lambda f: f.write(text))
    if importlib.util.find_spec("matplotlib") is None:
        say(f"matplotlib is not installed: no {PLOT} (pip install tbptt[plot])")
        return [HISTORY]
    history.plot(os.path.join(folder, PLOT), loss_unit)
    return [HISTORY, PLOT]


def load_history(folder: str) -> History:
    """The history.json of a run folder as a History (an empty one if there is none)."""
    path = os.path.join(folder, HISTORY)
    if not os.path.exists(path):
        return History()
    with open(path, encoding="utf-8") as f:
        try:
            return History.from_dict(json.load(f))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is damaged: {type(error).__name__}: {error}") from None


def model_path(path: str) -> str:
    """A run folder's model file, or `path` itself if it is a file."""
    return os.path.join(path, MODEL) if os.path.isdir(path) else path
