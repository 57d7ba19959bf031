"""tbptt.torch's layers against torch's own, in one process, interleaved, float32.

A training step: the layer over a chunk of k steps from the detached carried state, a Linear head,
MSE, backward, torch.optim.Adam's step (the layer's input has I = 32 features, the head O = 1).
Also inference (no_grad over T = 100 steps) and a word-level model (Embedding 65 -> 64, two LSTM
layers of 256, a Linear head to 65 classes, cross-entropy, B = 32, k = 35). Printed: samples/s
(time steps x streams per second) of each, their ratio, and with --memory the peak memory of
training steps (each library in a process of its own: the peak resident set over 5 steps, less
the resident set before them, after the model and data are built).

    python benchmarks/torch_layers.py [--threads 2] [--repeats 7] [--budget 1.0] [--memory]
        [--json FILE]

Both layers run on the same threads: torch's intra-op threads (torch.set_num_threads) for the
head, the loss and Adam, tbptt's (tbptt.set_num_threads) for the recurrent layer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

import tbptt
import tbptt.torch

I = 32


class Chunked(nn.Module):
    """A recurrent layer and a Linear head trained with chunks of k steps (state detached)."""

    def __init__(self, layer: nn.Module, H: int, O: int, embedding: nn.Module | None = None):
        super().__init__()
        self.embedding, self.layer, self.head = embedding, layer, nn.Linear(H, O)

    def forward(self, x, state):
        if self.embedding is not None:
            x = self.embedding(x)
        out, state = self.layer(x, state)
        return self.head(out), state


def detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class Training:
    def __init__(self, model: Chunked, x, y, k: int, loss):
        self.model, self.x, self.y, self.k, self.loss = model, x, y, k, loss
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.state = None
        self.at = 0

    def step(self):
        k = self.k
        if self.at + k > self.x.shape[0]:
            self.at = 0
        x, y = self.x[self.at : self.at + k], self.y[self.at : self.at + k]
        self.at += k
        out, state = self.model(x, self.state)
        loss = self.loss(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.state = detach(state)
        return k * x.shape[1]


class Inference:
    def __init__(self, layer: nn.Module, x):
        self.layer, self.x = layer, x

    def step(self):
        with torch.no_grad():
            self.layer(self.x)
        return self.x.shape[0] * self.x.shape[1]


class NoRecurrence(nn.Module):
    """In place of the recurrent layer, a Linear map of each step's input (almost free): the step
    that remains is what every training step costs besides the layer (head, loss, autograd,
    Adam)."""

    def __init__(self, I: int, H: int):
        super().__init__()
        self.proj = nn.Linear(I, H)

    def forward(self, x, state):
        return self.proj(x), x.new_zeros(1, x.shape[1], 1)


def fixed_cost(B: int, H: int, k: int, seed: int = 0) -> Training:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(k * 4, B, I, generator=g)
    y = torch.randn(x.shape[0], B, 1, generator=g)
    torch.manual_seed(seed)
    return Training(Chunked(NoRecurrence(I, H), H, 1), x, y, k, nn.functional.mse_loss)


def pair(kind: str, B: int, H: int, k: int, seed: int = 0):
    """The same workload on torch's layer and on tbptt.torch's, with the same parameters."""
    g = torch.Generator().manual_seed(seed)
    if kind == "word":
        V, E, L = 65, 64, 2
        x = torch.randint(0, V, (k * 8, B), generator=g)
        y = torch.randint(0, V, (k * 8, B), generator=g)
        ce = nn.CrossEntropyLoss()

        def loss(out, target):
            return ce(out.reshape(-1, V), target.reshape(-1))

        def build(cls):
            torch.manual_seed(seed)
            return Training(Chunked(cls(E, H, L), H, V, nn.Embedding(V, E)), x, y, k, loss)

        return build(nn.LSTM), build(tbptt.torch.LSTM)
    cell = kind.split("-")[0]
    classes = {"lstm": (nn.LSTM, tbptt.torch.LSTM), "gru": (nn.GRU, tbptt.torch.GRU)}[cell]
    x = torch.randn(max(k, 100) * 4, B, I, generator=g)
    if kind.endswith("infer"):

        def build_infer(cls):
            torch.manual_seed(seed)
            return Inference(cls(I, H), x[:k])

        return build_infer(classes[0]), build_infer(classes[1])
    y = torch.randn(x.shape[0], B, 1, generator=g)

    def build_train(cls):
        torch.manual_seed(seed)
        return Training(Chunked(cls(I, H), H, 1), x, y, k, nn.functional.mse_loss)

    return build_train(classes[0]), build_train(classes[1])


def measure(runners, repeats: int, budget: float):
    rates = {name: [] for name in runners}
    for runner in runners.values():  # warm up
        for _ in range(3):
            runner.step()
    for _ in range(repeats):
        for name, runner in runners.items():  # interleaved
            time.sleep(0.2)  # let the other's idle OpenMP threads stop spinning
            done, start = 0, time.perf_counter()
            while True:
                done += runner.step()
                elapsed = time.perf_counter() - start
                if elapsed > budget:
                    break
            rates[name].append(done / elapsed)
    return {name: statistics.median(v) for name, v in rates.items()}


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(kind: str, B: int, H: int, k: int, which: str) -> int:
    """In a process of its own: bytes the peak resident set grows by over 5 steps of `which`."""
    runner = pair(kind, B, H, k)[0 if which == "torch" else 1]
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak resident set starts again from the current one
    for _ in range(5):
        runner.step()
    return _status("VmHWM") - before


def measure_memory(kind: str, B: int, H: int, k: int, threads: int):
    sizes = {}
    for which in ("torch", "tbptt"):
        code = (
            f"import sys; sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r}); "
            f"import torch, tbptt, torch_layers as b; torch.set_num_threads({threads}); "
            f"tbptt.set_num_threads({threads}); "
            f"print(b.memory_child({kind!r}, {B}, {H}, {k}, {which!r}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        sizes[which] = int(out.stdout.split()[-1])
    return sizes


# (kind, B, H, k, target ratio)
CASES = [
    ("lstm", 1, 128, 25, 4.0),
    ("lstm", 32, 128, 25, 1.6),
    ("lstm", 32, 512, 25, 1.1),
    ("gru", 32, 128, 25, 3.0),
    ("lstm-infer", 32, 128, 100, 1.5),
    ("word", 32, 256, 35, 1.4),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads", type=int, default=2, help="threads of each library (default 2)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per case (default 7)")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per round (default 1.0)")
    parser.add_argument("--only", help="run the cases whose kind starts with this")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also measure the peak memory of training steps (a process per library)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tbptt.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, tbptt {tbptt.__version__} ({tbptt.build_info()['isa']}), "
        f"{args.threads} threads, float32, median of {args.repeats} interleaved rounds of "
        f"{args.budget} s"
    )
    memory = f" {'torch MiB':>9} {'tbptt MiB':>9}" if args.memory else ""
    print(
        f"{'case':<12} {'B':>3} {'H':>4} {'k':>4} {'torch samples/s':>16} {'tbptt samples/s':>16} "
        f"{'ratio':>6} {'target':>7}{memory}"
    )
    rows = []
    for kind, B, H, k, target in CASES:
        if args.only and not kind.startswith(args.only):
            continue
        reference, ours = pair(kind, B, H, k)
        rates = measure({"torch": reference, "tbptt": ours}, args.repeats, args.budget)
        ratio = rates["tbptt"] / rates["torch"]
        row = {
            "case": kind,
            "B": B,
            "H": H,
            "k": k,
            "torch": rates["torch"],
            "tbptt": rates["tbptt"],
            "ratio": ratio,
            "target": target,
        }
        memory = ""
        if args.memory and not kind.endswith("infer"):
            sizes = measure_memory(kind, B, H, k, args.threads)
            row["torch_bytes"], row["tbptt_bytes"] = sizes["torch"], sizes["tbptt"]
            memory = f" {sizes['torch'] / 2**20:>9.1f} {sizes['tbptt'] / 2**20:>9.1f}"
        rows.append(row)
        print(
            f"{kind:<12} {B:>3} {H:>4} {k:>4} {rates['torch']:>16,.0f} {rates['tbptt']:>16,.0f} "
            f"{ratio:>5.2f}x {target:>6.1f}x{memory}",
            flush=True,
        )
    if not args.only or args.only == "fixed":
        # What a step costs without its recurrent layer bounds every ratio: with the layer free,
        # torch's step would still take this long.
        for B, H, k in ((1, 128, 25), (32, 128, 25)):
            rate = measure({"fixed": fixed_cost(B, H, k)}, args.repeats, args.budget)["fixed"]
            print(
                f"{'no layer':<12} {B:>3} {H:>4} {k:>4} {rate:>16,.0f} samples/s: the step without "
                "its recurrent layer (head, loss, autograd, Adam)",
                flush=True,
            )
            rows.append({"case": "no layer", "B": B, "H": H, "k": k, "rate": rate})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"threads": args.threads, "torch": torch.__version__, "rows": rows}, f, indent=1
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
