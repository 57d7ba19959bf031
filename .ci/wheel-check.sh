#!/usr/bin/env bash
# Builds a wheel, installs it into a fresh venv outside the source tree, and checks that it imports,
# picks an engine for this processor and trains. Usage: bash .ci/wheel-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip wheel -q --no-deps -w "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$work"/dist/tbptt-*.whl
cd "$work"
"$work/venv/bin/python" - <<'PY'
import numpy as np, tbptt, zipfile, glob
wheel = glob.glob("dist/tbptt-*.whl")[0]
engines = sorted(n for n in zipfile.ZipFile(wheel).namelist() if "_core_" in n)
print("wheel:", wheel.split("/")[-1]); print("engines:", engines)
print("build_info:", tbptt.build_info())
model = tbptt.LSTM(4, 8, 1, seed=0)
losses = tbptt.Trainer(model, 5, 10).train(np.ones((20, 2, 4)), np.zeros((20, 2, 1)))
assert len(losses) == 4 and np.isfinite(losses).all()
assert len(tbptt.datasets.shakespeare()) == 1_115_394
print("ok: the wheel installs, imports and trains")
PY
