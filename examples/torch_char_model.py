"""A PyTorch model that tbptt's engine alone cannot train, on tbptt's kernels (docs/torch.md).

An embedding, a two-layer LSTM with dropout between the layers and an MLP head, trained with
chunked TBPTT (the state carried from chunk to chunk, detached) on the built-in Shakespeare text:

    python examples/torch_char_model.py                    # tbptt.torch.LSTM, ~1 minute
    python examples/torch_char_model.py --layer torch      # the same model on torch.nn.LSTM
    python examples/torch_char_model.py --updates 20       # a smoke test (seconds)

The only line that differs between the two runs is the LSTM's class; after the same
torch.manual_seed they start from the same parameters and learn alike (to rounding), and the
script prints the held-out bits per character and the time each took.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

import tbptt
import tbptt.torch


class CharModel(nn.Module):
    def __init__(
        self,
        lstm_class,
        vocab_size: int,
        embedding: int = 64,
        hidden: int = 256,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding)
        self.lstm = lstm_class(embedding, hidden, num_layers=2, dropout=dropout)
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, vocab_size)
        )

    def forward(self, tokens, state=None):  # tokens (T, B) -> logits (T, B, V)
        out, state = self.lstm(self.embedding(tokens), state)
        return self.head(out), state


def bits_per_char(model, x, y, chunk=200):
    """Held-out cross-entropy in bits per character, the state carried through the text."""
    model.eval()
    total, state = 0.0, None
    with torch.no_grad():
        for s in range(0, len(x), chunk):
            logits, state = model(x[s : s + chunk], state)
            total += nn.functional.cross_entropy(
                logits.flatten(0, 1), y[s : s + chunk].flatten(), reduction="sum"
            ).item()
    model.train()
    return total / y.numel() / math.log(2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--layer",
        choices=["tbptt", "torch"],
        default="tbptt",
        help="tbptt.torch.LSTM (default) or torch.nn.LSTM",
    )
    parser.add_argument("--updates", type=int, default=600, help="optimiser steps (default 600)")
    parser.add_argument("--k", type=int, default=50, help="steps per chunk (default 50)")
    parser.add_argument("--streams", type=int, default=32, help="parallel streams B (default 32)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        tbptt.set_num_threads(args.threads)

    text = tbptt.datasets.shakespeare()
    vocab = tbptt.data.Vocabulary(text)
    train_text, held_out = tbptt.data.split(text, 0.9)
    x, y = (
        torch.from_numpy(a)
        for a in tbptt.data.next_step(tbptt.data.batchify(vocab.encode(train_text), args.streams))
    )
    vx, vy = (
        torch.from_numpy(a)
        for a in tbptt.data.next_step(tbptt.data.batchify(vocab.encode(held_out[:20_000]), 8))
    )

    torch.manual_seed(args.seed)
    lstm_class = tbptt.torch.LSTM if args.layer == "tbptt" else nn.LSTM
    model = CharModel(lstm_class, vocab.size)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    state, start, at = None, time.perf_counter(), 0
    for update in range(1, args.updates + 1):
        if at + args.k > len(x):  # a new pass over the text: start the streams afresh
            at, state = 0, None
        logits, state = model(x[at : at + args.k], state)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), y[at : at + args.k].flatten())
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        state = tuple(s.detach() for s in state)  # TBPTT: carry the state, cut the gradient
        at += args.k
        if update % 100 == 0 or update == args.updates:
            print(f"update {update}: {loss.item() / math.log(2):.3f} bits/char (training chunk)")
    seconds = time.perf_counter() - start
    print(
        f"{args.layer}: {bits_per_char(model, vx, vy):.3f} bits/char on held-out text after "
        f"{args.updates} updates of {args.k} x {args.streams} characters, "
        f"{seconds:.1f} s of training"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
