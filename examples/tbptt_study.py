"""The TBPTT(k1, k2) study of docs/study.md, end to end: memory tasks under grids of (k1, k2).

    python examples/tbptt_study.py                      # 2-5 minutes on one thread
    python examples/tbptt_study.py --quick --out /tmp/f # a smoke test of the script (seconds)

Writes into --out (default docs/figures/) for each part <name>_curves.png, <name>_heatmap.png,
<name>_horizon.png and <name>_sweep.csv / .json (every row, with its learning curve and gradient
horizon), and prints each part's table and the total time. Everything is seeded: the C++ engine
is deterministic, so a rerun on the same machine gives the same numbers (another instruction set,
say AVX-512 instead of AVX2, may round differently).

Parts (all: one LSTM layer + linear head, Adam, global-norm clip 5, forget bias 1.0, B = 32
streams, the same seed and initial parameters for every configuration of a part):
    echo20    delayed echo, delay 20, H = 32, lr 1e-2, k1 x k2 in {5, 10, 20, 40}^2, 150k steps
    echo20wp  the same task, Williams & Peng's k1 < k2 at lr 3e-3: (5, 25), (5, 40), (10, 40)
    copy      copy task, 5 symbols of 4 recalled after 5 blanks (episodes of 16 steps), H = 32,
              lr 1e-2, k1 x k2 in {4, 8, 16}^2, 100k steps
    adding    adding problem, sequences of 50 steps, H = 32, lr 1e-2, chunked k in
              {1, 5, 10, 25, 50} and (10, 50), 100k steps
"""

from __future__ import annotations

import argparse
import math
import os
import time

import tbptt


def shrink_png(path):
    """Re-save a figure as a 64-colour palette PNG (about a third of the size); needs Pillow,
    which matplotlib depends on."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)


def part(name, title, task, valid, out, chance=None, **kwargs):
    tic = time.perf_counter()
    print(f"\n== {name}: {title}\n   {task.description}", flush=True)
    rows = tbptt.sweep(
        task,
        validation=valid,
        forget_bias=1.0,
        clip_norm=5.0,
        seed=0,
        callback=lambda r: print(
            f"   TBPTT({r['k1']}, {r['k2']}): val loss {r['val_loss']:.4f}"
            + (f", accuracy {r['val_accuracy']:.3f}" if r["val_accuracy"] is not None else "")
            + f" ({r['seconds']:.1f} s)",
            flush=True,
        ),
        **kwargs,
    )
    print(tbptt.sweep_table(rows))
    settings = {
        "task": task.description,
        "title": title,
        **{k: (v.config() if hasattr(v, "config") else v) for k, v in kwargs.items()},
    }
    tbptt.write_sweep(rows, out, settings=settings, prefix=f"{name}_")
    for path in tbptt.plot_sweep(rows, out, title=title, chance=chance, prefix=f"{name}_"):
        shrink_png(path)
    seconds = time.perf_counter() - tic
    print(f"   {name}: {seconds:.0f} s", flush=True)
    return rows, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "figures")
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: check the script runs")
    args = parser.parse_args(argv)
    tbptt.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    scale = 0.02 if args.quick else 1.0
    B, timings, start = 32, {}, time.perf_counter()

    def steps(n):
        return max(200, int(n * scale))

    # 1. Delayed echo, d = 20: the decisive one. Chunked (k, k) with k <= d never learns.
    n = steps(150_000)
    echo = tbptt.datasets.echo(min(n, 100_000), B, delay=20, seed=0)
    echo_valid = tbptt.datasets.echo(2_000, B, delay=20, seed=1)
    _, timings["echo20"] = part(
        "echo20",
        "delayed echo, d = 20: TBPTT(k1, k2), Adam 1e-2",
        echo,
        echo_valid,
        args.out,
        chance=0.5,
        k1=[5, 10, 20, 40],
        k2=[5, 10, 20, 40],
        steps=n,
        hidden=32,
        optimizer=tbptt.Adam(1e-2),
    )
    # 2. Williams & Peng's k1 < k2 learns too, with a smaller learning rate.
    _, timings["echo20wp"] = part(
        "echo20wp",
        "delayed echo, d = 20: k1 < k2 at Adam 3e-3",
        echo,
        echo_valid,
        args.out,
        chance=0.5,
        k1=None,
        pairs=[(5, 25), (5, 40), (10, 40)],
        steps=n,
        hidden=32,
        optimizer=tbptt.Adam(3e-3),
    )
    del echo

    # 3. Copy: recall 5 symbols 11..15 steps after seeing them (episodes of 16 steps).
    n = steps(100_000)
    copy = tbptt.datasets.copy(n, B, num_symbols=4, length=5, delay=5, seed=0)
    copy_valid = tbptt.datasets.copy(2_000, B, num_symbols=4, length=5, delay=5, seed=1)
    _, timings["copy"] = part(
        "copy",
        "copy, 5 symbols recalled 11-15 steps later, Adam 1e-2",
        copy,
        copy_valid,
        args.out,
        chance=0.25,
        k1=[4, 8, 16],
        k2=[4, 8, 16],
        steps=n,
        hidden=32,
        optimizer=tbptt.Adam(1e-2),
    )
    del copy

    # 4. Adding, sequences of 50: the counter-example (a local storage rule generalises).
    adding = tbptt.datasets.adding(n, B, seq_len=50, seed=0)
    adding_valid = tbptt.datasets.adding(2_000, B, seq_len=50, seed=1)
    _, timings["adding"] = part(
        "adding",
        "adding problem, sequences of 50 steps, Adam 1e-2",
        adding,
        adding_valid,
        args.out,
        k1=None,
        pairs=[(1, 1), (5, 5), (10, 10), (25, 25), (50, 50), (10, 50)],
        steps=n,
        hidden=32,
        optimizer=tbptt.Adam(1e-2),
    )

    total = time.perf_counter() - start
    print(
        f"\ntotal: {total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}); "
        f"{tbptt.get_num_threads()} thread(s), engine {tbptt.build_info().get('module')}"
    )
    return 0 if math.isfinite(total) else 1


if __name__ == "__main__":
    raise SystemExit(main())
