"""Thread scaling of the C++ engine, idle and with another process holding a core.

One LSTM layer, I = 32, O = 1, MSE, Adam, TBPTT(25, 25) on random data; 1 and 2 engine threads
alternate in blocks of `--seconds` (interleaved: the machine's phases hit both), and the script
prints the median samples/s of each and the ratio of every pair. `--busy` first starts a process
that spins on one core for the whole measurement, as a user's other work would.

    python benchmarks/threads.py [--batch 32] [--hidden 128] [--rounds 5] [--seconds 1] [--busy]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import numpy as np


def spin(stop):
    while not stop.is_set():
        pass


def rate(threads, x, y, H, seconds):
    import tbptt
    tbptt.set_num_threads(threads)
    trainer = tbptt.Trainer(tbptt.LSTM(x.shape[2], H, 1, seed=0), 25, 25)
    trainer.train(x, y)  # warm-up: allocation, first packing
    start, samples = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        trainer.train(x, y)
        samples += x.shape[0] * x.shape[1]
    return samples / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--busy", action="store_true", help="keep one core busy meanwhile")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, args.batch, 32)).astype(np.float32)
    y = rng.standard_normal((100, args.batch, 1)).astype(np.float32)
    stop = multiprocessing.Event()
    busy = multiprocessing.Process(target=spin, args=(stop,), daemon=True) if args.busy else None
    if busy:
        busy.start()
    try:
        rates = {1: [], 2: []}
        for _ in range(args.rounds):
            for threads in (1, 2):
                time.sleep(0.2)
                rates[threads].append(rate(threads, x, y, args.hidden, args.seconds))
    finally:
        stop.set()
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    pairs = [round(b / a, 2) for a, b in zip(rates[1], rates[2])]
    print(f"B = {args.batch}, H = {args.hidden}{', one core busy' if busy else ''}: 1 thread "
          f"{one:,.0f}, 2 threads {two:,.0f} samples/s: {two / one:.2f}x (rounds: {pairs})")


if __name__ == "__main__":
    main()
