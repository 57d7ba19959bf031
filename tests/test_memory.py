"""docs/semantics.md §3.5: training memory is bounded by the last max(k1, k2) steps, not by
the stream's length.

The C++ engine's allocations are invisible to tracemalloc, so each configuration runs in a fresh
child process that reports its peak RSS growth beyond a baseline taken after importing, building
the model and trainer and a first train call on one block (the peak is reset there through
/proc/self/clear_refs, so transient set-up peaks cannot hide later growth; a control test checks
that the measurement does see a leak). The data are fed in blocks of 1000 steps, so the input
itself stays small.
"""

import json
import subprocess
import sys

import pytest
from helpers import STATUS_KIB

CHILD = (
    r"""
import json, resource, sys
import numpy as np
import tbptt

T, k1, k2, leak = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
I, H, O, B, BLOCK = 8, 32, 4, 4, 1000
tbptt.set_num_threads(1)  # on a busy machine, thread barriers can make a run much slower
model = tbptt.LSTM(I, H, O, dtype="float64", seed=0)
trainer = tbptt.Trainer(model, k1, k2, optimizer=tbptt.Adam(1e-3), backend="cpp")
rng = np.random.default_rng(0)
x = rng.normal(size=(BLOCK, B, I))
y = rng.normal(size=(BLOCK, B, O))

"""
    + STATUS_KIB
    + r"""
def kib():
    # the peak RSS since reset_peak() (VmHWM), else since the process started (ru_maxrss)
    try:
        return status_kib("VmHWM")
    except (OSError, RuntimeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

def reset_peak():
    # forget transient peaks of the set-up (imports, first call): the baseline is the RSS now
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0: resets VmHWM to the current RSS
    except OSError:
        pass

trainer.train(x, y)
reset_peak()
base = kib()
losses, kept = 0, []
for start in range(BLOCK, T, BLOCK):
    x[...] = rng.normal(size=x.shape)   # new data in the same buffers
    y[...] = rng.normal(size=y.shape)
    losses += len(trainer.train(x, y))
    if leak:  # the control: keep `leak` bytes per step, as an unbounded engine would
        kept.append(np.ones(BLOCK * leak // 8))
print(json.dumps({"base": base, "growth": kib() - base, "updates": trainer.updates}))
"""
)


def peak_growth_kib(T, k1, k2, leak=0):
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(T), str(k1), str(k2), str(leak)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["updates"] == T // k1
    return result["growth"]


NOISE_KIB = 8 * 1024


@pytest.mark.parametrize("k1,k2", [(50, 50), (10, 100), (100, 10)])
def test_peak_memory_does_not_grow_with_the_stream(k1, k2):
    short = peak_growth_kib(2000, k1, k2)
    long = peak_growth_kib(20000, k1, k2)
    # Keeping every step's activations (gates, h, c, input) would cost about
    # B * (6H + I) * 8 bytes = 6.4 KiB per step here: ~115 MiB more for the 18000 extra steps.
    # Allow 8 MiB of allocator noise: 14x below that, and far above what a bounded engine shows.
    assert long <= short + NOISE_KIB, (
        f"peak RSS grew by {long} KiB over 20000 steps vs {short} KiB over 2000"
    )


def test_the_measurement_sees_a_leak():
    """Control: keeping just 1 KiB per step (18 MiB over the extra steps) exceeds the allowance."""
    short = peak_growth_kib(2000, 50, 50, leak=1024)
    long = peak_growth_kib(20000, 50, 50, leak=1024)
    assert long > short + NOISE_KIB
