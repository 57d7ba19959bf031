"""A/B speed of two builds of the compiled engine, interleaved in one process.

A change to the core must not make it slower: build the commit before the change somewhere (for
example `pip install . -Cbuild-dir=/tmp/base` from a worktree of that commit), then point this
script at both extension modules. Each build trains the same LSTM (docs/semantics.md §5 workload:
I = 32, O = 1, MSE, Adam) on the same data; the two alternate in short timed blocks, and the script
prints the median samples/s of each and their ratio per configuration.

    python benchmarks/ab_engine.py OLD.so NEW.so [--config B,H,k1,k2 ...] [--repeats 9]

Older builds (before cells) take no cell argument; both forms are handled.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import statistics
import sys
import time

import numpy as np

I, O = 32, 1
CONFIGS = [
    (1, 128, 25, 25),
    (32, 128, 25, 25),
    (32, 512, 25, 25),
    (128, 512, 25, 25),
    (32, 128, 10, 50),
]
ADAM = {"name": "adam", "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}


def load_core(path, tag):
    """The extension module at `path`, imported under a name of its own (`tag`)."""
    path = pathlib.Path(path).resolve()
    stem = path.name.split(".")[0]  # _core_<isa>: the name its init function carries
    spec = importlib.util.spec_from_file_location(f"{tag}.{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def num_params(H):
    return 4 * H * (I + H) + 8 * H + O * H + O


class Runner:
    def __init__(self, core, B, H, k1, k2, cell="lstm"):
        rng = np.random.default_rng(0)
        self.params = rng.uniform(-0.1, 0.1, num_params(H)).astype(np.float32)
        args = (I, H, O, 1, k1, k2, "mse", ADAM, None)
        try:
            self.engine = core.Engine32(self.params, cell, *args)
        except TypeError:  # a build from before cells
            self.engine = core.Engine32(self.params, *args)

    def run(self, x, y):
        self.engine.train(x, False, y, None, None)


def measure(runners, B, k1, k2, repeats, budget):
    rng = np.random.default_rng(1)
    steps = max(k1, k2) * 4
    x = rng.standard_normal((steps, B, I)).astype(np.float32)
    y = rng.standard_normal((steps, B, O)).astype(np.float32)
    rates = {name: [] for name in runners}
    for runner in runners.values():
        runner.run(x, y)  # warm up
    for _ in range(repeats):
        for name, runner in runners.items():
            time.sleep(0.2)
            start, done = time.perf_counter(), 0
            while time.perf_counter() - start < budget:
                runner.run(x, y)
                done += steps * B
            rates[name].append(done / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in rates.items()}, rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--config", action="append", help="B,H,k1,k2 (repeatable)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per timed block")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    cores = {"old": load_core(args.old, "old_build"), "new": load_core(args.new, "new_build")}
    if args.threads:
        for core in cores.values():
            core.set_num_threads(args.threads)
    configs = [tuple(int(v) for v in c.split(",")) for c in args.config] if args.config else CONFIGS
    print(
        f"{'B':>4} {'H':>4} {'k1':>4} {'k2':>4} {'old':>10} {'new':>10} {'new/old':>8}  "
        "spread of new/old"
    )
    for B, H, k1, k2 in configs:
        runners = {name: Runner(core, B, H, k1, k2) for name, core in cores.items()}
        medians, rates = measure(runners, B, k1, k2, args.repeats, args.budget)
        ratios = sorted(n / o for n, o in zip(rates["new"], rates["old"]))
        print(
            f"{B:>4} {H:>4} {k1:>4} {k2:>4} {medians['old']:>10,.0f} {medians['new']:>10,.0f} "
            f"{medians['new'] / medians['old']:>8.3f}  {ratios[0]:.3f}..{ratios[-1]:.3f}"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
