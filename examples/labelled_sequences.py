"""Sequence classification with one label per sequence and variable lengths: many short sequences
packed into B streams by tbptt.data.pack (a reset at each sequence's first step, the loss on its
last step), trained with TBPTT, evaluated on held-out sequences.

    python examples/labelled_sequences.py             # ~3 s: 4,000 sequences of 10-40 steps

The data: each sequence is a noisy sine wave of random phase and length 10 to 40 steps, at one of
three frequencies; its label is the frequency (class 0, 1 or 2). A model must integrate the
sequence to tell them apart: its prediction at the last step is the one that counts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tbptt
from tbptt.data import pack, unpack

FREQUENCIES = (0.25, 0.5, 0.9)  # radians per step, one per class


def make(n, seed):
    """n sequences (L_i, 1) float32 of lengths 10..40, and their classes (n,) int64."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(FREQUENCIES), n)
    sequences = []
    for c in classes:
        t = np.arange(rng.integers(10, 41))
        wave = np.sin(FREQUENCIES[c] * t + rng.uniform(0, 2 * np.pi))
        sequences.append((wave + rng.normal(0, 0.3, t.size)).astype(np.float32)[:, None])
    return sequences, classes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    train_seqs, train_classes = make(args.sequences, seed=0)
    test_seqs, test_classes = make(1000, seed=1)

    # 32 streams; x (T, 32, 1), y (T, 32) class ids, mask (T, 32) 1 at each sequence's last step,
    # resets (T, 32) True at each sequence's first step.
    train = pack(train_seqs, 32, labels=train_classes)
    test = pack(test_seqs, 32, labels=test_classes)
    model = tbptt.LSTM(1, 32, len(FREQUENCIES), forget_bias=1.0, seed=0)
    # k1 = k2 = 40, the longest sequence: every label's gradient reaches its sequence's first step
    trainer = tbptt.Trainer(model, k1=40, k2=40, loss="cross_entropy", optimizer=tbptt.Adam(1e-2))
    trainer.fit(train.x, train.y, train.mask, train.resets, epochs=args.epochs, progress=False)

    scores = trainer.evaluate(test.x, test.y, test.mask, test.resets)  # over the masked steps
    # Each sequence's prediction: one stream per sequence (num_streams >= N), so the model runs
    # over each from a zero state; unpack(..., last=True) reads every sequence's last output.
    alone = pack(test_seqs, len(test_seqs))
    outputs = unpack(model.predict(alone.x)[0], alone.spans, last=True)  # (1000, 3)
    by_hand = float(np.mean(outputs.argmax(axis=1) == test_classes))
    print(
        f"{len(train_seqs):,} sequences packed into {train.x.shape[1]} streams of "
        f"{train.x.shape[0]:,} steps ({train.mask.mean():.1%} of the positions carry loss)"
    )
    print(
        f"held-out accuracy {scores['accuracy']:.3f} over {len(test_seqs):,} sequences "
        f"(each sequence alone: {by_hand:.3f}); chance {1 / len(FREQUENCIES):.2f}; "
        f"{time.perf_counter() - start:.1f} s"
    )
    return scores["accuracy"]


if __name__ == "__main__":
    main()
