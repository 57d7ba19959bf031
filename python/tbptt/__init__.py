"""tbptt: Truncated Backpropagation Through Time, TBPTT(k1, k2), for LSTMs, GRUs and Elman RNNs,
fast on CPUs."""

from .model import LSTM, GRU, RNN
from .optim import SGD, Adam, AdamW
from .trainer import Trainer
from .errors import Divergence
from .schedules import Schedule
from .history import History
from .generate import generate
from .checkpoint import load, load_trainer
from . import data, datasets
from ._threads import set_num_threads, get_num_threads, build_info
from .sweep import sweep  # the function shadows the module name
from .sweep_report import sweep_table, plot_sweep, write_sweep

__version__ = "0.1.0"

__all__ = ["LSTM", "GRU", "RNN", "Trainer", "Divergence", "Schedule", "History", "SGD", "Adam", "AdamW", "generate", "load",
           "load_trainer", "data", "datasets", "set_num_threads", "get_num_threads", "build_info", "sweep", "sweep_table",
           "plot_sweep", "write_sweep", "__version__"]
