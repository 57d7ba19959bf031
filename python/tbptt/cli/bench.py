"""`tbptt bench`: listed here for --help; `tbptt.cli.main` hands `tbptt bench ...` to tbptt.bench,
which parses its own flags."""

from __future__ import annotations


def add_parser(commands) -> None:
    commands.add_parser(
        "bench",
        help="throughput of the C++ engine, the NumPy reference and "
        "PyTorch on the reference grid (tbptt bench --help)",
    )


def run(argv: list) -> int:
    """`tbptt bench ARGV...`."""
    from ..apps.bench import main as bench

    return bench(argv)
