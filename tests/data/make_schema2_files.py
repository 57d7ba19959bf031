"""Writes the schema-2 files of tests/data/ (run once with tbptt at commit 969f495, the last version
whose snapshots held positional counters): trainer files (and pickles of the GRU trainers) the later
versions must still read, with pending steps, a pending reset_state(), dropout, k2 > k1 and
recompute. Each file is loaded again with either backend and trained on; what that gave is kept.
Usage: python make_schema2_files.py FOLDER"""

import json
import pickle
import sys

import numpy as np

import tbptt

out = sys.argv[1]
rng = np.random.default_rng(2)
x_f, y_f = rng.standard_normal((30, 3, 4)), rng.standard_normal((30, 3, 2))
x_t, y_t = rng.integers(0, 5, (30, 3)), rng.integers(0, 4, (30, 3))


def gru(backend):
    m = tbptt.GRU(4, 5, 2, num_layers=2, dtype="float64", seed=1, dropout=0.2, head_dropout=0.1)
    return (
        tbptt.Trainer(
            m,
            3,
            7,
            optimizer=tbptt.SGD(0.1, momentum=0.9),
            clip_norm=1.0,
            backend=backend,
            seed=5,
            recompute=True,
        ),
        x_f,
        y_f,
    )


def lstm(backend):
    m = tbptt.LSTM(5, 6, 4, num_layers=2, dtype="float64", seed=0)
    return (
        tbptt.Trainer(m, 5, 2, loss="cross_entropy", optimizer=tbptt.Adam(1e-2), backend=backend),
        x_t,
        y_t,
    )


result = {}
for name, make in (("gru", gru), ("lstm", lstm)):
    for backend in ("cpp", "numpy"):
        t, x, y = make(backend)
        t.train(x[:17], y[:17])
        t.reset_state()
        path = f"{out}/{name}_trainer_schema2_{backend}.npz"
        t.save(path)
        if name == "gru":  # a pickle holds the same snapshot
            with open(f"{out}/gru_trainer_schema2_{backend}.pickle", "wb") as f:
                pickle.dump(t, f, protocol=4)
        for target in ("cpp", "numpy"):
            r = tbptt.load_trainer(path, backend=target)
            losses = list(r.train(x[17:], y[17:])) + [r.flush()]
            losses = [v for v in losses if v is not None]
            result[f"{name}_{backend}_{target}"] = {
                "losses": [float(v) for v in losses],
                "params": r.model.flat_parameters.tolist(),
            }
json.dump(result, open(f"{out}/schema2_continued.json", "w"))
