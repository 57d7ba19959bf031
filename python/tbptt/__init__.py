"""tbptt: Truncated Backpropagation Through Time, TBPTT(k1, k2), for LSTMs, GRUs and Elman RNNs,
fast on CPUs."""

from . import data, datasets
from .checkpoint import load, load_trainer
from .engines.threads import build_info, get_num_threads, set_num_threads
from .errors import Divergence
from .generate import generate
from .history import History
from .model import GRU, LSTM, RNN
from .optim import SGD, Adam, AdamW
from .schedules import Schedule
from .sweep import sweep  # the function shadows the module name
from .sweep_report import plot_sweep, sweep_table, write_sweep
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "LSTM",
    "GRU",
    "RNN",
    "Trainer",
    "Divergence",
    "Schedule",
    "History",
    "SGD",
    "Adam",
    "AdamW",
    "generate",
    "load",
    "load_trainer",
    "data",
    "datasets",
    "set_num_threads",
    "get_num_threads",
    "build_info",
    "sweep",
    "sweep_table",
    "plot_sweep",
    "write_sweep",
    "__version__",
]
