"""Throughput benchmark: the C++ engine, the NumPy reference and (when importable) PyTorch's CPU
recurrent layer of the same cell (nn.LSTM, nn.GRU, nn.RNN) on the same TBPTT work, interleaved in
one process, medians of repeats.

Workload (docs/semantics.md §5): 1 layer of the cell (`--cell lstm|gru|rnn`, LSTM by default),
I = 32, linear head O = 1, MSE, Adam, random data; samples/s = time steps x streams per second,
updates and optimiser included. GFLOP/s counts the matrix products TBPTT(k1, k2) needs per step,
2·B·G·(I+H) x (1 + 2·k2/k1) with G = 4H (LSTM), 3H (GRU), H (RNN): the forward once, and the two
products of backward (into the state, into the weights) once for each of the k2/k1 windows that
reach the step on average; for k1 = k2 that is the usual 3 x 2·B·G·(I+H). Forward steps that
PyTorch recomputes for k2 > k1 are not counted: tbptt keeps them. Compare with the machine's
matrix-product peak (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Dict

import numpy as np

from ..cells import CELLS as ALL_CELLS
from ..cells import CellSpec

I, O = 32, 1
GRID = [
    (1, 32, 25, 25),
    (1, 128, 25, 25),
    (32, 128, 25, 25),
    (32, 512, 25, 25),
    (128, 512, 25, 25),
    (1, 32, 100, 100),
    (1, 128, 100, 100),
    (32, 128, 100, 100),
    (32, 512, 100, 100),
    (128, 512, 100, 100),
    (32, 128, 10, 50),
]
QUICK = [(1, 32, 25, 25), (32, 128, 25, 25), (128, 512, 25, 25), (32, 128, 10, 50)]


# The --cell choices, the models' names, -> the first cell of each ("rnn": the tanh RNN).
CELLS: Dict[str, CellSpec] = {}
for _spec in ALL_CELLS.values():
    CELLS.setdefault(_spec.model, _spec)


def flops_per_step(B, H, k1, k2, cell="lstm"):
    return 2 * B * CELLS[cell].gates * H * (I + H) * (1 + 2 * k2 / k1)


def make_model(cell, H, seed):
    import tbptt

    return tbptt.model.MODELS[cell](I, H, O, seed=seed)


class TbpttRunner:
    def __init__(self, backend, B, H, k1, k2, seed=0, cell="lstm"):
        import tbptt

        self.model = make_model(cell, H, seed)
        self.trainer = tbptt.Trainer(
            self.model, k1, k2, loss="mse", optimizer=tbptt.Adam(1e-3), backend=backend
        )

    def run(self, x, y):
        self.trainer.train(x, y)


class TorchRunner:
    """PyTorch's best for TBPTT(k1, k2): chunks of k1 with the state detached for k1 = k2; for
    k2 > k1, every k1 steps re-run the last k2 steps from the state stored k2 steps back."""

    def __init__(self, B, H, k1, k2, seed=0, cell="lstm"):
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        self.rnn = getattr(torch.nn, CELLS[cell].torch_module)(I, H)
        self.head = torch.nn.Linear(H, O)
        params = list(self.rnn.parameters()) + list(self.head.parameters())
        self.optimizer = torch.optim.Adam(params, lr=1e-3)
        self.k1, self.k2, self.B, self.H = k1, k2, B, H
        self.state = None
        self.history = []  # (x, y, state entering) of recent k1-chunks, for k2 > k1

    def _step(self, x, y, state):
        out, new_state = self.rnn(x, state)
        loss = self.torch.nn.functional.mse_loss(self.head(out[-self.k1 :]), y[-self.k1 :])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return new_state

    def run(self, x, y):
        torch = self.torch
        x = torch.from_numpy(x)
        y = torch.from_numpy(y)
        k1, k2 = self.k1, self.k2
        for s in range(0, x.shape[0], k1):
            xc, yc = x[s : s + k1], y[s : s + k1]
            if k2 <= k1:
                state = self._step(xc, yc, self.state)
                self.state = _detach(state)
                continue
            # Williams & Peng with k2 > k1 in an autograd framework: re-run the last k2 steps.
            self.history.append((xc, yc, self.state))
            back = max(1, k2 // k1)
            self.history = self.history[-back:]
            xs = torch.cat([c[0] for c in self.history])
            ys = torch.cat([c[1] for c in self.history])
            state = self._step(xs, ys, self.history[0][2])
            with torch.no_grad():
                _, self.state = self.rnn(xc, self.state)


def _detach(state):
    """torch's state: (h, c) for nn.LSTM, h for nn.GRU / nn.RNN."""
    return tuple(t.detach() for t in state) if isinstance(state, tuple) else state.detach()


def measure(runners, B, H, k1, k2, repeats, budget):
    rng = np.random.default_rng(0)
    steps = max(k1, k2) * 4
    x = rng.standard_normal((steps, B, I)).astype(np.float32)
    y = rng.standard_normal((steps, B, O)).astype(np.float32)
    times: Dict[str, list] = {name: [] for name in runners}
    # Steps per timed run: enough for about `budget` seconds, a multiple of k1.
    for runner in runners.values():
        runner.run(x[: k1 * 2], y[: k1 * 2])  # warm up
    for _ in range(repeats):
        for name, runner in runners.items():  # interleaved
            time.sleep(
                0.3
            )  # let the previous runner's idle threads (OpenMP, OpenBLAS) stop spinning
            start = time.perf_counter()
            done = 0
            while True:
                runner.run(x, y)
                done += steps
                elapsed = time.perf_counter() - start
                if elapsed > budget:
                    break
            times[name].append(done * B / elapsed)
    return {name: statistics.median(v) for name, v in times.items()}


def _config(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected B,H,K1,K2 (four positive integers), got {text!r}"
        )
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tbptt bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few configurations, short runs")
    parser.add_argument(
        "--cell",
        choices=sorted(CELLS),
        default="lstm",
        help="the recurrent cell (default lstm); torch runs nn.LSTM / nn.GRU / nn.RNN",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if importable")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument(
        "--config",
        metavar="B,H,K1,K2",
        action="append",
        type=_config,
        help="run this configuration instead of the grid (repeatable)",
    )
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds per timed run (default 0.6, quick 0.3)"
    )
    return parser


def main(argv=None) -> int:
    """`tbptt bench`: the grid (or --config), one line per configuration, optionally JSON."""
    args = _parser().parse_args(argv)

    import tbptt

    tbptt.set_num_threads(args.threads)
    has_torch = False
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(args.threads)
            has_torch = True
        except ImportError:
            print("PyTorch not importable: comparing tbptt with its NumPy reference only")
    grid = args.config or (QUICK if args.quick else GRID)
    repeats = args.repeats or (3 if args.quick else 5)
    budget = args.budget or (0.3 if args.quick else 0.6)
    print(
        f"tbptt {tbptt.__version__}, engine {tbptt.build_info()['module']}, "
        f"{args.threads} threads, cell {args.cell}; samples/s, medians of {repeats} "
        "interleaved runs"
    )
    header = f"{'B':>4} {'H':>4} {'k1':>4} {'k2':>4} | {'tbptt':>9} {'GFLOP/s':>7}"
    if not args.no_numpy:
        header += f" | {'numpy':>9} {'x':>6}"
    if has_torch:
        header += f" | {'torch':>9} {'x':>6}"
    print(header)
    rows = []
    for B, H, k1, k2 in grid:
        runners: dict = {"tbptt": TbpttRunner("cpp", B, H, k1, k2, cell=args.cell)}
        if not args.no_numpy:
            runners["numpy"] = TbpttRunner("numpy", B, H, k1, k2, cell=args.cell)
        if has_torch:
            runners["torch"] = TorchRunner(B, H, k1, k2, cell=args.cell)
        result = measure(runners, B, H, k1, k2, repeats, budget)
        gflops = result["tbptt"] * flops_per_step(1, H, k1, k2, args.cell) / 1e9
        line = f"{B:>4} {H:>4} {k1:>4} {k2:>4} | {result['tbptt']:>9.0f} {gflops:>7.1f}"
        row = {
            "cell": args.cell,
            "B": B,
            "H": H,
            "k1": k1,
            "k2": k2,
            "samples_per_s": result,
            "tbptt_gflops": gflops,
        }
        for other in ("numpy", "torch"):
            if other in result:
                ratio = result["tbptt"] / result[other]
                row[f"speedup_vs_{other}"] = ratio
                line += f" | {result[other]:>9.0f} {ratio:>5.1f}x"
        print(line, flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "threads": args.threads,
                    "cell": args.cell,
                    "build": tbptt.build_info(),
                    "rows": rows,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
