"""Every compiled engine (one per instruction-set level, chosen at import) computes the same thing.

Each level runs in its own process (TBPTT_ISA forces it) and must match the NumPy reference to
1e-10 in float64 (float32: to its own rounding). B = 7 streams and H = 19 leave a tail of rows and
a partial panel in the packed recurrent products at every SIMD width (csrc/packed_gemm.h), for
every cell (4H, 3H and H columns). A level that was not built here, or that this processor cannot
run, is skipped.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tbptt

SCRIPT = """
import json, sys, numpy as np, tbptt
rng = np.random.default_rng(0)
m = tbptt.model.build(sys.argv[3], 5, 19, 3, num_layers=2, dtype=sys.argv[2], seed=0)
t = tbptt.Trainer(m, 5, 9, loss="cross_entropy", optimizer=tbptt.Adam(1e-2), clip_norm=1.0,
                  backend=sys.argv[1])
t.train(rng.integers(0, 5, (60, 7)), rng.integers(0, 3, (60, 7)))
info = tbptt.build_info() if sys.argv[1] == "cpp" else {}
print(json.dumps({"params": m.flat_parameters.tolist(), "module": info.get("module")}))
"""


def run(backend, dtype, cell, isa=None):
    env = dict(os.environ, TBPTT_NUM_THREADS="1")
    if isa:
        env["TBPTT_ISA"] = isa
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, backend, dtype, cell],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        if "ImportError" in done.stderr or "no compiled tbptt engine" in done.stderr:
            pytest.skip(f"the {isa} engine is not built here or this processor cannot run it")
        raise AssertionError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


# float32: as in test_backends.py (F32), a few updates of rounding differences, not a wrong kernel.
TOLERANCE = {"float64": dict(rtol=1e-10, atol=1e-13), "float32": dict(rtol=1e-4, atol=2e-5)}


CELLS = ("lstm", "gru", "rnn")


@pytest.fixture(scope="module")
def reference():
    return {
        (cell, dtype): np.array(run("numpy", dtype, cell)["params"])
        for cell in CELLS
        for dtype in TOLERANCE
    }


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_every_instruction_set_level_matches_the_reference(isa, dtype, cell, reference):
    result = run("cpp", dtype, cell, isa)
    assert result["module"] == f"tbptt._core_{isa}"
    np.testing.assert_allclose(
        np.array(result["params"]), reference[cell, dtype], **TOLERANCE[dtype]
    )


def test_the_default_engine_is_one_this_processor_runs():
    info = tbptt.build_info()
    assert info["isa"] in ("baseline", "avx2", "avx512")
    assert info["module"] == f"tbptt._core_{info['isa']}"
