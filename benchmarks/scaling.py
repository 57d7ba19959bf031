"""Weak scaling of data-parallel training: tbptt over MPI against PyTorch DDP (gloo), interleaved.

Each rank trains B streams of its own (B per rank fixed: weak scaling) of one LSTM layer, I = 32,
H, linear head O = 1, MSE, Adam, float32, TBPTT(k, k), one thread per rank. Samples/s counts every
rank's samples (time steps x streams over all ranks) per second of wall time, updates, all-reduces
and optimiser included, after a warm-up. The configurations alternate in rounds (tbptt 1 rank,
tbptt R ranks, R independent tbptt processes without a comm: the machine's ceiling, torch 1
process, DDP R processes) and the table gives medians over the rounds.

    python benchmarks/scaling.py [--ranks 2] [--batch 32] [--hidden 256] [--k 25] [--rounds 5]
    python benchmarks/scaling.py --delay 0,0.002,0.008   # tbptt only, a sleep added to each reduce

--delay simulates a slower network: every rank sleeps that many seconds after each all-reduce,
as if the reduce took that much longer; docs/scaling.md compares the measured efficiency with
t_compute / (t_compute + t_reduce). PyTorch is skipped when it is not importable. Each run is a
fresh `mpiexec -n R python -m mpi4py benchmarks/scaling.py --worker ...`; the DDP worker uses
mpi4py only to learn its rank and share a port, then torch.distributed with gloo.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

I, O = 32, 1
HERE = os.path.dirname(os.path.abspath(__file__))


# ---- workers (one process per rank, under mpiexec) ----------------------------------------------


def tbptt_worker(B, H, k, updates, delay, alone=False):
    from mpi4py import MPI

    import tbptt

    comm = MPI.COMM_WORLD
    tbptt.set_num_threads(1)
    ranks = comm.Get_size()
    trainer = tbptt.Trainer(
        tbptt.LSTM(I, H, O, seed=0),
        k,
        k,
        optimizer=tbptt.Adam(1e-3),
        comm=comm if ranks > 1 and not alone else None,
    )
    if delay and ranks > 1:  # the same all-reduce, then a sleep: a network that much slower
        buffer = trainer.engine.reduce_buffer()
        trainer.engine.set_reduce(lambda: (comm.Allreduce(MPI.IN_PLACE, buffer), time.sleep(delay)))
    rng = np.random.default_rng(comm.Get_rank())
    x = rng.normal(size=(k * updates, B, I)).astype(np.float32)
    y = rng.normal(size=(k * updates, B, O)).astype(np.float32)
    trainer.train(x[: 3 * k], y[: 3 * k])  # warm-up: allocation, first packing
    comm.Barrier()
    tic = time.perf_counter()
    trainer.train(x, y)
    comm.Barrier()
    return time.perf_counter() - tic


def torch_worker(B, H, k, updates):
    import torch
    import torch.distributed as dist
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, ranks = comm.Get_rank(), comm.Get_size()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = torch.nn.LSTM(I, H), torch.nn.Linear(H, O)

        def forward(self, x, state):
            h, state = self.lstm(x, state)
            return self.head(h), state

    net = Net()
    if ranks > 1:
        port = comm.bcast(29500 + os.getpid() % 1000 if rank == 0 else None, root=0)
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=ranks
        )
        net = torch.nn.parallel.DistributedDataParallel(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.MSELoss()
    rng = np.random.default_rng(rank)
    x = torch.from_numpy(rng.normal(size=(k * updates, B, I)).astype(np.float32))
    y = torch.from_numpy(rng.normal(size=(k * updates, B, O)).astype(np.float32))

    def train(steps):  # chunked TBPTT(k, k): the state detached every k steps
        state = None
        for s in range(0, steps, k):
            out, state = net(x[s : s + k], state)
            state = tuple(t.detach() for t in state)
            loss = loss_fn(out, y[s : s + k])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    train(3 * k)
    comm.Barrier()
    tic = time.perf_counter()
    train(k * updates)
    comm.Barrier()
    seconds = time.perf_counter() - tic
    if ranks > 1:
        dist.destroy_process_group()
    return seconds


def worker(args):
    if args.worker in ("tbptt", "alone"):
        seconds = tbptt_worker(
            args.batch, args.hidden, args.k, args.updates, args.delay, alone=args.worker == "alone"
        )
    else:
        seconds = torch_worker(args.batch, args.hidden, args.k, args.updates)
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 0:
        print(json.dumps({"seconds": seconds}))


# ---- the driver ----------------------------------------------------------------------------------


def mpiexec():
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if not found:
        sys.exit("mpiexec not found: pip install 'tbptt[mpi]'")
    return found


def run(kind, ranks, args, delay=0.0):
    """Samples/s of one fresh run (all ranks' samples)."""
    command = [
        mpiexec(),
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "mpi4py",
        os.path.abspath(__file__),
        "--worker",
        kind,
        "--batch",
        str(args.batch),
        "--hidden",
        str(args.hidden),
        "--k",
        str(args.k),
        "--updates",
        str(args.updates),
        "--reduce-delay",
        str(delay),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", TBPTT_NUM_THREADS="1")
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    return ranks * args.batch * args.k * args.updates / seconds


def has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def scaling(args):
    R = args.ranks
    configs = [("tbptt", 1), ("tbptt", R), ("alone", R)]
    if has_torch():
        configs += [("torch", 1), ("torch", R)]
    results = {c: [] for c in configs}
    for round_ in range(args.rounds):
        for kind, ranks in configs:  # interleaved: every configuration once per round
            results[(kind, ranks)].append(run(kind, ranks, args))
        print(
            f"round {round_ + 1}/{args.rounds}: "
            + ", ".join(
                f"{kind} x{ranks} {results[(kind, ranks)][-1]:,.0f}" for kind, ranks in configs
            ),
            file=sys.stderr,
        )
    median = {c: statistics.median(v) for c, v in results.items()}
    print(
        f"weak scaling, B = {args.batch} per rank, H = {args.hidden}, k1 = k2 = {args.k}, "
        f"1 thread per rank, float32, Adam; median of {args.rounds} interleaved rounds\n"
    )
    print("| implementation | ranks | samples/s | vs its 1 rank |")
    print("|---|---:|---:|---:|")
    names = {
        "tbptt": "tbptt (MPI)",
        "alone": "tbptt, independent processes (the ceiling)",
        "torch": "PyTorch DDP (gloo)",
    }
    for kind, ranks in configs:
        name = "PyTorch" if (kind, ranks) == ("torch", 1) else names[kind]
        one = median[("tbptt" if kind == "alone" else kind, 1)]
        print(
            f"| {name} | {ranks} | {median[(kind, ranks)]:,.0f} | "
            f"{median[(kind, ranks)] / one:.2f}x |"
        )
    if has_torch():
        print(
            f"\ntbptt on {R} ranks / DDP on {R}: {median[('tbptt', R)] / median[('torch', R)]:.2f}x"
        )


def delays(args):
    """The model's claim, checked with a slower network simulated by a sleep after each reduce:
    with t_u the time of an update on R ranks without delay, a delay d gives t_u / (t_u + d) of
    the throughput (nothing overlaps the reduce). Relative to the R-rank run without delay, so
    that a machine shared with other work still gives a fair check."""
    values = sorted({0.0, *(float(v) for v in args.delay_list.split(","))})
    rates = {d: [] for d in values}
    for _ in range(args.rounds):
        for d in values:
            rates[d].append(run("tbptt", args.ranks, args, d))
    base = statistics.median(rates[0.0])
    update = args.ranks * args.batch * args.k / base  # seconds per update, all ranks together
    print(
        f"tbptt, {args.ranks} ranks, B = {args.batch} per rank, H = {args.hidden}, k = {args.k}: "
        f"{base:,.0f} samples/s without delay, t_u = {update * 1e3:.1f} ms per update; "
        f"median of {args.rounds} interleaved rounds\n"
    )
    print(
        "| delay d added to each reduce | samples/s | measured, vs no delay "
        "| model t_u / (t_u + d) |"
    )
    print("|---:|---:|---:|---:|")
    for d in values:
        rate = statistics.median(rates[d])
        print(
            f"| {d * 1e3:.1f} ms | {rate:,.0f} | {rate / base:.2f} | {update / (update + d):.2f} |"
        )


# ---- the model of a cluster (docs/scaling.md) ----------------------------------------------------

NETWORKS = {  # name: (bandwidth bytes/s, latency per message s), sustained, not nominal
    "10 GbE (TCP)": (1.1e9, 30e-6),
    "InfiniBand HDR (200 Gb/s)": (22e9, 2e-6),
}


def lstm_parameters(H, I=I, O=O):
    return 4 * H * (I + H) + 8 * H + O * H + O


def update_seconds(B, k1, H, flops):
    """Compute of one update of TBPTT(k1, k1) on one rank: 3 products of 2·4H(I+H) per sample."""
    return B * k1 * 3 * 2 * 4 * H * (I + H) / flops


def reduce_seconds(H, R, network, itemsize=4):
    """Ring all-reduce of the buffer (P + 2 values): 2(R-1)/R of it through each link, in 2(R-1)
    messages."""
    bandwidth, latency = NETWORKS[network]
    size = (lstm_parameters(H) + 2) * itemsize
    return 2 * (R - 1) / R * size / bandwidth + 2 * (R - 1) * latency


def network_model(args):
    flops, R = args.flops * 1e9, 64
    print(
        f"one rank = one core at {args.flops:g} GFLOP/s; LSTM 1 x H, I = {I}, O = {O}, float32; "
        f"TBPTT(k1, k1); R = {R} ranks; efficiency = t_c / (t_c + t_r), no overlap\n"
    )
    print(
        "| network | H | buffer | t_r (R = 64) | t_c at B = 32, k1 = 25 | efficiency | "
        "B·k1 for 80% |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for network in NETWORKS:
        for H in (128, 512, 1024):
            t_r = reduce_seconds(H, R, network)
            t_c = update_seconds(32, 25, H, flops)
            need = 4 * t_r / update_seconds(1, 1, H, flops)  # t_c >= 4 t_r
            size = (lstm_parameters(H) + 2) * 4
            print(
                f"| {network} | {H} | {size / 2**20:.2f} MiB | {t_r * 1e3:.2f} ms | "
                f"{t_c * 1e3:.1f} ms | {t_c / (t_c + t_r):.2f} | {need:,.0f} |"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="streams per rank")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--k", type=int, default=25, help="k1 = k2")
    parser.add_argument("--updates", type=int, default=120, help="timed updates per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--delay",
        dest="delay_list",
        help="tbptt only: seconds slept after each "
        "reduce, comma-separated (a simulated slow network)",
    )
    parser.add_argument(
        "--model",
        action="store_true",
        help="print the cluster model's table (docs/scaling.md) and exit",
    )
    parser.add_argument("--flops", type=float, default=80.0, help="GFLOP/s of one rank (--model)")
    parser.add_argument("--worker", choices=("tbptt", "alone", "torch"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--reduce-delay", dest="delay", type=float, default=0.0, help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.model:
        return network_model(args)
    if args.delay_list:
        return delays(args)
    return scaling(args)


if __name__ == "__main__":
    main()
