"""The core's sequence pass alone (what tbptt.torch's layers call), without torch: microseconds and
GFLOP/s of the forward, inference and backward of one layer at the shapes of torch_layers.py, and
NumPy's float32 product of two 1024 x 1024 matrices on the same threads, the rate a core reaches
on one large product.

    python benchmarks/sequence_kernels.py [--threads 1] [--repeats 9]

FLOPs counted: forward 2 rows G (I + H) (the input projection and the recurrent product of every
step); backward 2 rows G (2 I + 2 H) (dL/dh_prev through W_hh, the weight gradients of W_ih and
W_hh, and dL/dx), rows = T x B, G = gates x H. The cells' elementwise work is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# (cell, B, H, I, T): the layers of torch_layers.py's cases (the word model's first layer)
CASES = [
    ("lstm", 1, 128, 32, 25),
    ("lstm", 32, 128, 32, 25),
    ("lstm", 32, 512, 32, 25),
    ("gru", 32, 128, 32, 25),
    ("lstm", 32, 128, 32, 100),
    ("lstm", 32, 256, 64, 35),
]
GATES = {"lstm": 4, "gru": 3}


def best_of(fn, repeats: int, seconds: float = 0.1) -> float:
    """Median seconds per call over `repeats` rounds of about `seconds` each."""
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 2:
        fn()
        calls += 1
    per_round = 2 * calls
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_round):
            fn()
        times.append((time.perf_counter() - start) / per_round)
    return statistics.median(times)


def measure(np, core, cell, B, H, I, T, repeats, rng):
    """Seconds per call of the forward that keeps what the backward needs, of inference, and of
    the backward, for one layer on random float32 data."""
    G, C = GATES[cell] * H, H if cell == "lstm" else 0
    f = np.float32
    x = rng.standard_normal((T, B, I)).astype(f)
    h0, c0 = np.zeros((B, H), f), np.zeros((B, C), f)
    weights = [(rng.standard_normal(s) * 0.1).astype(f) for s in ((G, I), (G, H), (G,), (G,))]
    args = (x, h0, c0, *weights)
    h, h_n, c_n, tape = core.sequence_forward(cell, *args, False, True, None)
    dy = rng.standard_normal(h.shape).astype(f)
    return [
        best_of(lambda: core.sequence_forward(cell, *args, False, True, None), repeats),
        best_of(lambda: core.sequence_forward(cell, *args, False, False, None), repeats),
        best_of(lambda: core.sequence_backward(tape, *args, h, dy, h0, c0, True), repeats),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (default 9)")
    args = parser.parse_args(argv)
    # NumPy's BLAS reads its thread count when it loads: set it before the import below.
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np

    import tbptt
    from tbptt.engines.native import core

    tbptt.set_num_threads(args.threads)
    print(f"tbptt {tbptt.__version__} ({tbptt.build_info()['isa']}), {args.threads} thread(s)")
    print(
        f"{'cell':<5} {'B':>3} {'H':>4} {'I':>3} {'T':>4} {'forward':>17} {'inference':>17} "
        f"{'backward':>17}"
    )
    rng = np.random.default_rng(0)
    for cell, B, H, I, T in CASES:
        G = GATES[cell] * H
        seconds = measure(np, core(), cell, B, H, I, T, args.repeats, rng)
        rows = T * B
        flops = [2 * rows * G * (I + H)] * 2 + [2 * rows * G * (2 * I + 2 * H)]
        cols = " ".join(
            f"{s * 1e6:>8.0f} µs {fl / s / 1e9:>4.0f}G" for s, fl in zip(seconds, flops)
        )
        print(f"{cell:<5} {B:>3} {H:>4} {I:>3} {T:>4} {cols}")
    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    seconds = best_of(lambda: a @ a, args.repeats)
    print(f"NumPy float32 1024 x 1024 product: {2 * 1024**3 / seconds / 1e9:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
