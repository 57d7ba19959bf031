"""Writes the files of tests/data/ (run once with tbptt 0.1.0 at commit 1e4b9aa, before GRU and RNN
existed): LSTM files the later versions must still read. Usage: python make_v0_files.py FOLDER"""

import numpy as np, tbptt, json, sys

out = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.integers(0, 5, (30, 3))
y = rng.integers(0, 4, (30, 3))
result = {}
for backend in ("cpp", "numpy"):
    m = tbptt.LSTM(5, 6, 4, num_layers=2, dtype="float64", seed=0, forget_bias=1.0)
    t = tbptt.Trainer(
        m, 4, 7, loss="cross_entropy", optimizer=tbptt.Adam(1e-2), clip_norm=1.0, backend=backend
    )
    t.train(x[:17], y[:17])
    t.save(f"{out}/lstm_trainer_v0_{backend}.npz")
    losses = t.train(x[17:], y[17:])
    result[backend] = {"losses": losses.tolist(), "params": m.flat_parameters.tolist()}
m.save(f"{out}/lstm_model_v0.npz")
json.dump(result, open(f"{out}/lstm_v0_continued.json", "w"))
