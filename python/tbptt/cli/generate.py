"""`tbptt generate RUN`: sample text from a model that `tbptt train` trained on text."""

from __future__ import annotations

from .. import data
from ..apps.generate import generate
from . import _args, _folder

SAMPLE_LENGTH, SAMPLE_TEMPERATURE = 300, 0.8  # also the sample `tbptt train` prints


def add_parser(commands) -> None:
    gen = commands.add_parser(
        "generate",
        help="sample text from a model trained on text",
        description="Sample text from a model written by `tbptt train`.",
    )
    gen.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="the output folder of `tbptt train` or its model.npz",
    )
    gen.add_argument("--prime", help="text the model reads first (default: a newline)")
    gen.add_argument(
        "--length", type=_args.number(int, 0), default=500, help="characters (default 500)"
    )
    gen.add_argument(
        "--temperature",
        type=_args.number(float, 0, strict=False),
        default=SAMPLE_TEMPERATURE,
        help=f"softmax temperature; 0 = most likely (default {SAMPLE_TEMPERATURE})",
    )
    gen.add_argument("--seed", type=int, help="the same seed gives the same text")
    gen.set_defaults(run=run)


def run(args) -> int:
    path = _folder.model_path(args.checkpoint)
    model, header = _folder.load_model(path)
    meta = header.get("data") or {}
    if meta.get("kind") != "text":
        raise ValueError(
            f"{path} is not a text model written by `tbptt train` (it has no "
            f"vocabulary): generate samples characters"
        )
    vocab = data.Vocabulary.from_dict(meta["vocabulary"])
    prime = default_prime(vocab) if args.prime is None else args.prime
    print(prime + generate(model, vocab, prime, args.length, args.temperature, args.seed))
    return 0


def default_prime(vocab) -> str:
    """A newline, if the text has one, else its first character."""
    return "\n" if "\n" in vocab.chars else vocab.chars[0]
