"""Thread scaling of the C++ engine, idle and with another process holding a core.

One layer (LSTM by default), I = 32, O = 1, MSE, Adam, TBPTT(25, 25) on random data, or with
`--vocab V` the main job's shape: token inputs and V classes (cross-entropy). 1 and 2 engine
threads alternate in blocks of `--seconds` (interleaved: the machine's phases hit both), and the
script prints the median samples/s of each and the ratio of every pair. With 2 the engine picks
one thread or both per update from their measured speed (docs/performance.md). `--busy` first
starts a process that spins on one core for the whole measurement, as a user's other work would.

    python benchmarks/threads.py [--batch 32] [--hidden 128] [--rounds 5] [--seconds 1] [--busy]
    python benchmarks/threads.py --cell gru --hidden 256 --k1 50 --vocab 65   # the main job
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


def make_trainer(threads, x, y, args):
    import tbptt

    tbptt.set_num_threads(threads)
    tokens = args.vocab is not None
    model = tbptt.model.build(
        args.cell,
        args.vocab if tokens else x.shape[2],
        args.hidden,
        args.vocab if tokens else 1,
        seed=0,
    )
    trainer = tbptt.Trainer(model, args.k1, args.k1, loss="cross_entropy" if tokens else "mse")
    trainer.train(x, y)  # warm-up: allocation, first packing, the engine's first choice of threads
    return trainer


def rate(threads, trainer, x, y, args):
    """samples/s of `trainer` over --seconds (its engine keeps what it measured between rounds)."""
    import tbptt

    tbptt.set_num_threads(threads)
    start, samples = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        trainer.train(x, y)
        samples += x.shape[0] * x.shape[1]
    return samples / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"))
    parser.add_argument("--k1", type=int, default=25, help="k1 = k2")
    parser.add_argument("--vocab", type=int, help="token inputs and this many classes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--busy", action="store_true", help="keep one core busy meanwhile")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    T = 4 * args.k1
    if args.vocab:
        x = rng.integers(0, args.vocab, size=(T, args.batch))
        y = rng.integers(0, args.vocab, size=(T, args.batch))
    else:
        x = rng.standard_normal((T, args.batch, 32)).astype(np.float32)
        y = rng.standard_normal((T, args.batch, 1)).astype(np.float32)
    stop = multiprocessing.Event()
    busy = multiprocessing.Process(target=spin, args=(stop,), daemon=True) if args.busy else None
    if busy:
        busy.start()
    try:
        trainers = {threads: make_trainer(threads, x, y, args) for threads in (1, 2)}
        rates = {1: [], 2: []}
        for _ in range(args.rounds):
            for threads in (1, 2):
                time.sleep(0.2)
                rates[threads].append(rate(threads, trainers[threads], x, y, args))
    finally:
        stop.set()
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    pairs = [round(b / a, 2) for a, b in zip(rates[1], rates[2])]
    print(
        f"{args.cell}, B = {args.batch}, H = {args.hidden}, k1 = k2 = {args.k1}"
        f"{f', {args.vocab} tokens' if args.vocab else ''}"
        f"{', one core busy' if busy else ''}: 1 thread "
        f"{one:,.0f}, 2 threads {two:,.0f} samples/s: {two / one:.2f}x (rounds: {pairs})"
    )


if __name__ == "__main__":
    main()
