"""Long-stream soak (slow: run with `pytest --run-slow` or TBPTT_RUN_SLOW=1).

A tiny float64 model (B = 1, I = 2, H = 4, O = 1) learns a delayed echo from an endless stream fed
to `train` in blocks, with ~10% of the positions masked out and a reset now and then:

- memory: a million steps through the C++ engine in a child process; its RSS (current and peak)
  after 100k steps and after 1M steps must be the same up to 512 KiB. A control run that keeps
  1 byte per step (880 KiB over the 900k steps) must exceed that allowance.
- drift: the C++ engine and the NumPy reference, fed the same million steps, must still agree to
  1e-10 (docs/semantics.md §4) at every checkpoint (every 20k steps). Measured: the parameters'
  relative difference creeps from 1e-15 to ~1e-12 over the million (losses ~1e-12, state ~1e-13).
  The reference takes ~0.1 ms per step: ~110 s for the whole file on a quiet machine (slower on a
  busy one); TBPTT_SOAK_DRIFT_STEPS=200000 shortens the drift check.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import STATUS_KIB

import tbptt

pytestmark = pytest.mark.slow

I, H, O, B = 2, 4, 1, 1
DELAY = 3

# The stream and the model, shared by the child process (memory) and the drift test.
STREAM = r"""
import numpy as np
import tbptt

I, H, O, B, DELAY = 2, 4, 1, 1, 3


def trainer(backend, k1=10, k2=20, loss="mse"):
    model = tbptt.LSTM(I, H if loss == "mse" else 8, O if loss == "mse" else 5, dtype="float64",
                       seed=0, forget_bias=1.0)
    return tbptt.Trainer(model, k1, k2, loss=loss, optimizer=tbptt.Adam(3e-3), clip_norm=1.0,
                         backend=backend)


class Stream:
    # blocks of the endless delayed-echo stream: y_t = x_{t-3}[0]; 10% of positions masked out,
    # a reset about every 1000 steps (the echo of the first 3 steps after one is masked out)
    def __init__(self, seed, loss="mse"):
        self.rng, self.loss = np.random.default_rng(seed), loss
        self.tail = np.zeros((DELAY, B), np.int64 if loss != "mse" else np.float64)

    def block(self, n):
        rng = self.rng
        resets = rng.uniform(size=(n, B)) < 1e-3
        mask = (rng.uniform(size=(n, B)) > 0.1).astype(np.float64)
        if self.loss == "mse":
            x = rng.normal(size=(n, B, I))
            first = x[..., 0]
        else:  # tokens in [0, I=2), the class is the token 3 steps back
            x = rng.integers(0, I, size=(n, B))
            first = x
        echo = np.concatenate([self.tail, first])[:n]
        self.tail = first[-DELAY:].copy()
        for d in range(DELAY):  # no echo across a reset
            mask[d:][resets[:n - d]] = 0
        y = echo[..., None] if self.loss == "mse" else echo
        return x, y, mask, resets
"""

CHILD = (
    STREAM
    + r"""
import json, sys

steps, block, every, leak, k1, k2, loss = (int(a) if a.isdigit() else a for a in sys.argv[1:8])
tbptt.set_num_threads(1)

"""
    + STATUS_KIB
    + r"""

t = trainer("cpp", k1, k2, loss)
stream = Stream(1, loss)
kept, done, finite = [], 0, True
while done < steps:
    x, y, mask, resets = stream.block(block)
    losses = t.train(x, y, mask, resets)
    finite = finite and bool(np.isfinite(losses).all())
    done += block
    if leak:  # the control: keep `leak` bytes per step, as an engine that grows would
        kept.append(np.ones(block * leak // 8))
    if done % every == 0:
        print(json.dumps({"steps": done, "rss": status_kib("VmRSS"), "hwm": status_kib("VmHWM"),
                          "updates": t.updates, "finite": finite,
                          "params_finite": bool(np.isfinite(t.model.flat_parameters).all())}),
                          flush=True)
"""
)

MILLION, BLOCK, EVERY = 1_000_000, 10_000, 100_000
# RSS growth measured between 100k and 1M steps: 0-4 KiB. The allowance leaves room for allocator
# noise on other machines and still catches a byte kept per step (880 KiB over the 900k steps) or
# one 8-byte value kept per update (700 KiB at k1 = 10).
ALLOWANCE_KIB = 512


def soak_child(steps=MILLION, leak=0, k1=10, k2=20, loss="mse"):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(steps),
            str(BLOCK),
            str(EVERY),
            str(leak),
            str(k1),
            str(k2),
            loss,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TBPTT_NUM_THREADS="1"),
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(
    "k1,k2,loss",
    [(10, 20, "mse"), (25, 7, "cross_entropy")],
    ids=["mse-features-10-20", "ce-tokens-25-7"],
)
def test_a_million_steps_in_flat_memory(k1, k2, loss):
    records = soak_child(k1=k1, k2=k2, loss=loss)
    assert [r["steps"] for r in records] == list(range(EVERY, MILLION + 1, EVERY))
    first, last = records[0], records[-1]
    assert last["updates"] == MILLION // k1
    assert last["finite"] and last["params_finite"]
    growth = {"rss": last["rss"] - first["rss"], "peak": last["hwm"] - first["hwm"]}
    print(f"\nRSS after 100k steps {first['rss']} KiB, after 1M {last['rss']} KiB; growth {growth}")
    assert growth["rss"] <= ALLOWANCE_KIB, records
    assert growth["peak"] <= ALLOWANCE_KIB, records


def test_the_memory_soak_sees_a_leak():
    """Control: 1 byte kept per step (880 KiB over 900k steps) is more than the allowance."""
    records = soak_child(leak=1)
    assert records[-1]["rss"] - records[0]["rss"] > ALLOWANCE_KIB


# ---- drift: the C++ engine against the NumPy reference over a long stream ------------------------

DRIFT_STEPS = int(os.environ.get("TBPTT_SOAK_DRIFT_STEPS", 1_000_000))
DRIFT_BLOCK, DRIFT_EVERY = 5_000, 20_000
REL = 1e-10


def test_no_drift_between_engine_and_reference():
    namespace = {}
    exec(STREAM, namespace)
    saved = tbptt.get_num_threads()
    tbptt.set_num_threads(1)
    try:
        cpp, ref = namespace["trainer"]("cpp"), namespace["trainer"]("numpy")
        stream = namespace["Stream"](2)
        theta0 = cpp.model.flat_parameters.copy()
        report, block_losses = [], []
        for start in range(0, DRIFT_STEPS, DRIFT_BLOCK):
            x, y, mask, resets = stream.block(DRIFT_BLOCK)
            lc, lr = cpp.train(x, y, mask, resets), ref.train(x, y, mask, resets)
            assert np.isfinite(lc).all() and lc.shape == lr.shape
            block_losses.append(float(lr.mean()))
            if (start + DRIFT_BLOCK) % DRIFT_EVERY:
                continue
            pc, pr = cpp.model.flat_parameters, ref.model.flat_parameters
            rel = {
                "params": float(np.max(np.abs(pc - pr)) / np.max(np.abs(pr))),
                "losses": float(np.max(np.abs(lc - lr) / np.abs(lr))),
                "state": float(
                    max(np.max(np.abs(u - v)) for u, v in zip(cpp.state(), ref.state()))
                ),
            }
            report.append((start + DRIFT_BLOCK, rel))
            where = f"after {start + DRIFT_BLOCK} steps"
            assert cpp.updates == ref.updates == (start + DRIFT_BLOCK) // cpp.k1, where
            np.testing.assert_allclose(
                pc, pr, rtol=REL, atol=REL * np.max(np.abs(pr)), err_msg=where
            )
            np.testing.assert_allclose(lc, lr, rtol=REL, err_msg=where)
            for u, v in zip(cpp.state(), ref.state()):
                np.testing.assert_allclose(u, v, rtol=REL, atol=REL, err_msg=where)
    finally:
        tbptt.set_num_threads(saved)
    print("\nsteps  max relative difference cpp vs numpy (params, losses), state (absolute)")
    for steps, rel in report:
        print(f"{steps:>8}  {rel['params']:.1e}  {rel['losses']:.1e}  {rel['state']:.1e}")
    # the soak is not idle: the model learned the echo, so the parameters kept moving
    assert np.mean(block_losses[-4:]) < 0.5 * np.mean(block_losses[:2])
    assert np.max(np.abs(cpp.model.flat_parameters - theta0)) > 0.1
