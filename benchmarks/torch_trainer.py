"""tbptt.torch.Trainer against the plain PyTorch loop and against the engine, TBPTT(10, 50).

The workload of docs/semantics.md §5's last row: B = 32, H = 128, I = 32, a linear head with
O = 1, MSE, Adam (lr 1e-3), float32, random data. Rows, all in one process, interleaved, medians
of the rounds (samples/s = time steps x streams per second, updates and optimiser included):

    trainer+tbptt.torch.LSTM  tbptt.torch.Trainer on a module whose LSTM is tbptt.torch.LSTM
    trainer+nn.LSTM           the same Trainer on torch's nn.LSTM
    plain torch loop          every k1 steps, nn.LSTM re-run over the last k2 steps from the state
                              stored k2 steps back, backward, Adam (tbptt.bench.TorchRunner)
    engine                    tbptt.Trainer(..., recompute=True), the C++ engine

The plain loop is what one writes by hand; it is not the exact semantics (its window's entering
state is the one the forward computed with the weights of its time; tbptt.torch.Trainer's is the
current weights', docs/semantics.md §3), so the comparison is of cost, not of results.

    python benchmarks/torch_trainer.py [--threads 2] [--repeats 7] [--budget 1.0] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch import nn

import tbptt
import tbptt.torch
from tbptt.bench import I, O, TorchRunner, measure  # the workload's sizes, the loop, the timing


class Net(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        self.lstm = layer

    def forward(self, x, state):
        return self.lstm(x, state)


class TrainerRunner:
    """tbptt.torch.Trainer over a module whose recurrent layer is `layer_class`."""

    def __init__(self, layer_class, B: int, H: int, k1: int, k2: int, seed: int = 0):
        torch.manual_seed(seed)
        self.module, self.head = Net(layer_class(I, H)), nn.Linear(H, O)
        params = list(self.module.parameters()) + list(self.head.parameters())
        self.trainer = tbptt.torch.Trainer(
            self.module,
            k1,
            k2,
            loss="mse",
            head=self.head,
            optimizer=torch.optim.Adam(params, lr=1e-3),
        )

    def run(self, x, y):
        self.trainer.train(x, y)


class EngineRunner:
    def __init__(self, B: int, H: int, k1: int, k2: int, seed: int = 0):
        model = tbptt.LSTM(I, H, O, seed=seed)
        self.trainer = tbptt.Trainer(
            model, k1, k2, loss="mse", optimizer=tbptt.Adam(1e-3), recompute=True
        )

    def run(self, x, y):
        self.trainer.train(x, y)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads", type=int, default=2, help="threads of each library (default 2)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per round (default 1.0)")
    parser.add_argument("--config", default="32,128,10,50", help="B,H,K1,K2 (default 32,128,10,50)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    B, H, k1, k2 = (int(v) for v in args.config.split(","))
    torch.set_num_threads(args.threads)
    tbptt.set_num_threads(args.threads)
    runners = {
        "trainer+tbptt.torch.LSTM": TrainerRunner(tbptt.torch.LSTM, B, H, k1, k2),
        "trainer+nn.LSTM": TrainerRunner(nn.LSTM, B, H, k1, k2),
        "plain torch loop": TorchRunner(B, H, k1, k2),
        "engine (recompute)": EngineRunner(B, H, k1, k2),
    }
    result = measure(runners, B, H, k1, k2, args.repeats, args.budget)
    base = result["plain torch loop"]
    print(
        f"TBPTT({k1}, {k2}), B = {B}, H = {H}, I = {I}, O = {O}, MSE, Adam, float32, "
        f"{args.threads} threads; samples/s, medians of {args.repeats} interleaved rounds"
    )
    for name, value in result.items():
        print(f"{name:<26} {value:>10.0f}  {value / base:>5.2f}x the plain loop")
    ours = result["trainer+tbptt.torch.LSTM"]
    print(
        f"tbptt.torch.Trainer on tbptt.torch.LSTM: {ours / result['engine (recompute)']:.2f}x the "
        f"engine"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"config": [B, H, k1, k2], "threads": args.threads, "samples_per_s": result},
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
