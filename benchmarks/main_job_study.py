"""Which settings make the best two-minute character model: `tbptt train` on the built-in
Shakespeare text under candidate settings, each for the same wall-time budget, and the held-out
bits per character of each run's best epoch (what the run's model.npz holds).

    python benchmarks/main_job_study.py [--max-time 90] [--parallel 2] [--threads 1]
        [--out runs/study]
    python benchmarks/main_job_study.py --parallel 1 --threads 2 --candidate "--hidden 384" ...

Every run is a separate `tbptt train` process on --threads engine threads (default 1); with
--parallel 2 two run at once, one per core (each then shares the memory bandwidth with the other:
compare the rows of one study, not with solo runs). With --parallel 1 --threads 2 each run has the
machine as the README's command does. The table is printed and written as JSON (`study.json`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shlex
import subprocess
import sys
import time

# The candidates of the first study (2026-11-29): the command's defaults, then one change at a
# time or a few together (cell, size, dropout, schedule, weight decay).
CANDIDATES = [
    "",
    "--schedule cosine",
    "--cell gru",
    "--hidden 256 --dropout 0.2",
    "--hidden 256 --dropout 0.2 --schedule cosine --lr 3e-3",
    "--layers 2 --dropout 0.2 --schedule cosine",
    "--cell gru --hidden 256 --dropout 0.2 --schedule cosine",
    "--hidden 192 --dropout 0.1 --schedule cosine --weight-decay 0.01",
]


def run(candidate, max_time, threads, folder):
    """Train one candidate; return its row."""
    argv = [
        sys.executable,
        "-m",
        "tbptt",
        "train",
        "--max-time",
        str(max_time),
        "--threads",
        str(threads),
        "--no-progress",
        "--out",
        folder,
        *shlex.split(candidate),
    ]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {"candidate": candidate, "error": done.stderr.strip().splitlines()[-1:]}
    with open(os.path.join(folder, "history.json")) as f:
        history = json.load(f)
    from tbptt import checkpoint

    header, _ = checkpoint.load_arrays(os.path.join(folder, "model.npz"), "model")
    results = header["results"]
    return {
        "candidate": candidate or "(defaults)",
        "bits_per_character": results["bits_per_character"],
        "best_epoch": results["best_epoch"],
        "epochs": history["epochs"],
        "seconds": round(seconds, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-time", type=float, default=90.0)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="engine threads per run")
    parser.add_argument("--out", default=os.path.join("runs", "study"))
    parser.add_argument("--candidate", action="append", help="flags of tbptt train (repeatable)")
    args = parser.parse_args(argv)
    candidates = args.candidate or CANDIDATES
    os.makedirs(args.out, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        rows = list(
            pool.map(
                lambda ic: run(
                    ic[1], args.max_time, args.threads, os.path.join(args.out, str(ic[0]))
                ),
                enumerate(candidates),
            )
        )
    print("| settings (beside the defaults) | bits/char (best epoch) | best epoch / epochs | s |")
    print("|---|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['candidate']} | error: {r['error']} | | |")
        else:
            print(
                f"| {r['candidate']} | {r['bits_per_character']:.3f} | {r['best_epoch']} / "
                f"{r['epochs']} | {r['seconds']} |"
            )
    with open(os.path.join(args.out, "study.json"), "w") as f:
        json.dump(
            {
                "max_time": args.max_time,
                "parallel": args.parallel,
                "threads": args.threads,
                "rows": rows,
            },
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()
