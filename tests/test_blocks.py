"""tbptt._blocks: the one schedule of training calls and resets that Trainer.fit and the sweep
share (their own tests check what they do with it)."""

import numpy as np
import pytest

from tbptt import _blocks
from tbptt._blocks import Block


def spans(blocks):
    return [(b.epoch, b.start, b.end, b.step) for b in blocks]


def test_an_epoch_on_a_grid_from_its_start():
    """fit: one pass, cut every `grid` steps from the pass's start, even when it begins midway."""
    assert spans(_blocks.blocks(10, 0, 10, grid=4)) == [(0, 0, 4, 0), (0, 4, 8, 4), (0, 8, 10, 8)]
    # resumed at step 5 of epoch 1: the same grid (5 -> 8), global steps counted from epoch 0
    assert spans(_blocks.blocks(10, 15, 20, grid=4)) == [(1, 5, 8, 15), (1, 8, 10, 18)]


def test_a_budget_wraps_over_the_data_and_stops_at_the_points():
    """sweep: 25 steps over data of 10, with points of the curve at 7 and 20."""
    assert spans(_blocks.blocks(10, 0, 25, stops=[7, 20, 25])) == [
        (0, 0, 7, 0),
        (0, 7, 10, 7),
        (1, 0, 10, 10),
        (2, 0, 5, 20),
    ]
    assert spans(_blocks.blocks(10, 0, 25, stops=[0, 20])) == [  # 0 and 20 cut nothing new
        (0, 0, 10, 0),
        (1, 0, 10, 10),
        (2, 0, 5, 20),
    ]


def test_positions_after_a_block():
    assert _blocks.position(Block(2, 3, 7, 23), T=10) == (2, 7)
    assert _blocks.position(Block(2, 3, 10, 23), T=10) == (3, 0)


def test_reset_policies():
    data = np.zeros((10, 2), bool)
    data[3, 1] = True
    every4 = _blocks.Resets(4, data)
    got = every4.of(Block(1, 2, 9, 12), B=2)  # global steps 12 .. 18: 12 and 16 are due
    assert got.shape == (7, 2) and got[:, 0].nonzero()[0].tolist() == [0, 4]
    assert got[:, 1].nonzero()[0].tolist() == [0, 1, 4]  # and the data's own reset at step 3
    assert np.array_equal(_blocks.Resets("never", data).of(Block(0, 2, 9, 2), 2), data[2:9])
    assert _blocks.Resets("never").of(Block(0, 0, 5, 0), 2) is None
    epoch = _blocks.Resets("epoch")
    assert epoch.at_pass_start(Block(3, 0, 5, 30)) and not epoch.at_pass_start(Block(3, 5, 9, 35))
    assert not _blocks.Resets(5).at_pass_start(Block(3, 0, 5, 30))


@pytest.mark.parametrize("policy", ["sometimes", 0, -3, 2.5, True])
def test_bad_policies(policy):
    with pytest.raises(ValueError):
        _blocks.reset_every(policy)
