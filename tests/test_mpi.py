"""Data-parallel training over MPI (docs/semantics.md §7): R ranks holding disjoint slices of
the streams make the same updates as one process holding all of them; faults are collective; nothing
hangs.

Run under MPI (a failing rank then aborts the job instead of hanging it):

    mpiexec -n 2 python -m mpi4py -m pytest -q -p no:cacheprovider tests/test_mpi.py
    mpiexec -n 3 python -m mpi4py -m pytest -q -p no:cacheprovider tests/test_mpi.py

Under plain pytest the same tests run with one rank (R = 1); without mpi4py they are skipped.
Every rank builds the same global data from the same seed, trains one process on all of it, and
trains its own slice of the streams with the others (uneven slices: rank r holds 2 + 2r streams).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time

import numpy as np
import pytest

import tbptt

MPI = pytest.importorskip("mpi4py.MPI")
COMM = MPI.COMM_WORLD
RANK, RANKS = COMM.Get_rank(), COMM.Get_size()
SIZES = [2 + 2 * r for r in range(RANKS)]  # streams per rank: uneven on purpose
MINE = np.arange(sum(SIZES[:RANK]), sum(SIZES[: RANK + 1]))  # this rank's streams
I, H, O, T = 3, 5, 2, 41
RTOL = 1e-10


def relative_error(got, expected):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - expected) / np.maximum(np.abs(expected), 1e-300)))


def same_on_every_rank(array):
    """True on every rank iff every rank holds the same bits as rank 0."""
    theirs = np.array(array, copy=True)
    COMM.Bcast(theirs, root=0)
    return COMM.allreduce(bool(np.array_equal(theirs, array)), op=MPI.LAND)


def report(name, loss_error, parameter_error):
    """With TBPTT_MPI_REPORT=FILE, rank 0 appends the largest relative differences there."""
    path = os.environ.get("TBPTT_MPI_REPORT")
    if path and RANK == 0:
        with open(path, "a", encoding="utf-8") as f:
            f.write(
                f"{RANKS} ranks  {name:36s} losses {loss_error:.1e}  "
                f"parameters {parameter_error:.1e}\n"
            )


def shared_folder():
    """A folder every rank sees (rank 0 makes it); removed by the caller on rank 0."""
    return COMM.bcast(tempfile.mkdtemp(prefix="tbptt-mpi-") if RANK == 0 else None, root=0)


# ---- R ranks == one process ------------------------------------------------------------------

CASES = {
    # name: (cell, k1, k2, optimizer, clip_norm, tokens, masked, resets)
    "k2>k1": ("lstm", 3, 7, "adam", None, False, False, False),
    "k2<k1": ("lstm", 6, 2, "adam", None, False, False, False),
    "mask-weights-differ-per-rank": ("lstm", 4, 6, "adam", None, False, True, False),
    "resets": ("lstm", 4, 4, "adam", None, False, False, True),
    "tokens-cross-entropy": ("lstm", 5, 8, "adam", None, True, True, False),
    "clipping-binds": ("lstm", 3, 5, "adam", 0.01, False, True, False),
    "sgd-momentum": ("lstm", 4, 9, "sgd", 0.5, False, True, True),
    "gru": ("gru", 3, 6, "sgd", None, False, True, True),
    "gru-tokens": ("gru", 7, 3, "adam", 0.05, True, False, True),
    # dropout between 2 layers and before the head: masks drawn per global stream index
    "dropout": ("lstm-dropout", 4, 6, "adam", None, False, True, True),
    "gru-dropout-tokens": ("gru-dropout", 5, 3, "sgd", 0.5, True, False, False),
}


def data(tokens, masked, resets, seed=0):
    """Global data (every rank makes the same): x, y, mask, resets over sum(SIZES) streams."""
    rng = np.random.default_rng(seed)
    B = sum(SIZES)
    if tokens:
        x, y = rng.integers(0, I, size=(T, B)), rng.integers(0, O, size=(T, B))
    else:
        x, y = rng.normal(size=(T, B, I)), rng.normal(size=(T, B, O))
    mask = None
    if masked:  # float weights, many zeros; no loss at all in steps 8..11 (an update with none)
        mask = rng.uniform(0, 3, size=(T, B)) * (rng.uniform(size=(T, B)) < 0.6)
        mask[8:12] = 0
        for r in range(RANKS):  # different weight sums per rank
            mask[:, sum(SIZES[:r])] *= 1 + r
    reset = None if not resets else rng.uniform(size=(T, B)) < 0.1
    return x, y, mask, reset


def make(cell, k1, k2, optimizer, clip_norm, loss, backend, comm, seed=3):
    cell, dropout = cell.partition("-")[0], 0.3 if cell.endswith("dropout") else 0.0
    model = (tbptt.LSTM if cell == "lstm" else tbptt.GRU)(
        I,
        H,
        O,
        num_layers=2 if dropout else 1,
        dtype="float64",
        dropout=dropout,
        head_dropout=dropout,
        seed=seed if RANK == 0 or comm is None else 99,
    )
    opt = tbptt.Adam(lr=0.02) if optimizer == "adam" else tbptt.SGD(0.1, momentum=0.9)
    return tbptt.Trainer(
        model, k1, k2, loss=loss, optimizer=opt, clip_norm=clip_norm, backend=backend, comm=comm
    )


def sliced(a):
    return None if a is None else np.ascontiguousarray(a[:, MINE])


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
@pytest.mark.parametrize("case", list(CASES))
def test_ranks_make_the_updates_of_one_process_with_all_the_streams(case, backend):
    cell, k1, k2, optimizer, clip_norm, tokens, masked, resets = CASES[case]
    loss = "cross_entropy" if tokens else "mse"
    x, y, mask, reset = data(tokens, masked, resets)
    one = make(cell, k1, k2, optimizer, clip_norm, loss, backend, None)
    expected = list(one.train(x, y, mask, reset))
    expected.append(one.flush())

    ranks = make(cell, k1, k2, optimizer, clip_norm, loss, backend, COMM)
    a = 17  # split calls: stream invariance holds across ranks too
    got = list(
        ranks.train(
            sliced(x[:a]),
            sliced(y[:a]),
            sliced(None if mask is None else mask[:a]),
            sliced(None if reset is None else reset[:a]),
        )
    )
    got += list(
        ranks.train(
            sliced(x[a:]),
            sliced(y[a:]),
            sliced(None if mask is None else mask[a:]),
            sliced(None if reset is None else reset[a:]),
        )
    )
    got.append(ranks.flush())

    assert (got[-1] is None) == (expected[-1] is None)
    got, expected = [v for v in got if v is not None], [v for v in expected if v is not None]
    assert ranks.updates == one.updates
    errors = (
        relative_error(got, expected),
        relative_error(ranks.model.flat_parameters, one.model.flat_parameters),
    )
    report(f"{case} {backend}", *errors)
    assert max(errors) <= RTOL
    assert same_on_every_rank(ranks.model.flat_parameters)
    assert same_on_every_rank(np.asarray(got))


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_an_update_without_loss_anywhere_makes_no_step_on_any_rank(backend):
    x, y, _, _ = data(False, False, False)
    mask = np.zeros((T, sum(SIZES)))
    mask[:4] = 1  # only the first update carries loss
    ranks = make("lstm", 4, 4, "adam", None, "mse", backend, COMM)
    losses = ranks.train(sliced(x[:12]), sliced(y[:12]), sliced(mask[:12]))
    assert losses.size == 1 and ranks.updates == 3
    after_first = ranks.model.flat_parameters.copy()
    one = make("lstm", 4, 4, "adam", None, "mse", backend, None)
    one.train(x[:4], y[:4])
    assert relative_error(after_first, one.model.flat_parameters) <= RTOL


def test_only_one_rank_carries_loss():
    """A rank whose streams carry no loss still takes part (its gradient is zero)."""
    x, y, mask, _ = data(False, True, False)
    mask[:, SIZES[0] :] = 0  # rank 0's streams only
    one = make("lstm", 5, 5, "adam", None, "mse", "cpp", None)
    expected = one.train(x, y, mask)
    ranks = make("lstm", 5, 5, "adam", None, "mse", "cpp", COMM)
    got = ranks.train(sliced(x), sliced(y), sliced(mask))
    assert relative_error(got, expected) <= RTOL
    assert relative_error(ranks.model.flat_parameters, one.model.flat_parameters) <= RTOL


def test_float32_ranks_stay_close_to_one_process_and_identical_to_each_other():
    x, y, mask, _ = data(False, True, False)
    one = tbptt.Trainer(tbptt.LSTM(I, H, O, seed=1), 4, 6)
    expected = one.train(x, y, mask)
    ranks = tbptt.Trainer(tbptt.LSTM(I, H, O, seed=1), 4, 6, comm=COMM)
    got = ranks.train(sliced(x), sliced(y), sliced(mask))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(
        ranks.model.flat_parameters, one.model.flat_parameters, rtol=1e-4, atol=1e-6
    )
    assert same_on_every_rank(ranks.model.flat_parameters)


def test_the_reduce_buffer_is_a_view_of_the_engine_memory():
    trainer = make("lstm", 3, 3, "adam", None, "mse", "cpp", COMM)
    buffer = trainer.engine.reduce_buffer()
    assert buffer.size == trainer.model.flat_parameters.size + 2 and buffer.dtype == np.float64
    x, y, _, _ = data(False, False, False)
    trainer.train(sliced(x[:3]), sliced(y[:3]))
    again = trainer.engine.reduce_buffer()
    assert np.shares_memory(buffer, again)
    assert buffer[-1] > 0  # the last update's Σ w (scaled), summed over the ranks


def test_rank_0_parameters_are_broadcast_at_construction():
    model = tbptt.LSTM(I, H, O, dtype="float64", seed=RANK)
    tbptt.Trainer(model, 3, 3, comm=COMM)
    assert same_on_every_rank(model.flat_parameters)
    np.testing.assert_array_equal(
        model.flat_parameters, tbptt.LSTM(I, H, O, dtype="float64", seed=0).flat_parameters
    )


# ---- faults are collective -------------------------------------------------------------------


def ends_quickly(test):
    tic = time.perf_counter()
    test()
    assert time.perf_counter() - tic < 10


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_a_divergence_on_one_rank_raises_on_every_rank(backend):
    x, y, _, _ = data(False, False, False)
    y = y.copy()
    bad = y[:, MINE].copy()
    if RANK == RANKS - 1:
        bad[22] = 1e200  # update 5 (steps 21..25) overflows, on the last rank only
    good = make("lstm", 5, 5, "sgd", None, "mse", backend, COMM)
    expected = good.train(sliced(x[:20]), sliced(y[:20]))
    trainer = make("lstm", 5, 5, "sgd", None, "mse", backend, COMM)

    def run():
        with pytest.raises(FloatingPointError) as error:
            trainer.train(sliced(x), bad)
        np.testing.assert_array_equal(error.value.losses, expected)

    ends_quickly(run)
    np.testing.assert_array_equal(trainer.model.flat_parameters, good.model.flat_parameters)
    assert same_on_every_rank(trainer.model.flat_parameters)
    trainer.train(sliced(x[:5]), sliced(y[:5]))  # it can go on, together
    assert same_on_every_rank(trainer.model.flat_parameters)


@pytest.mark.skipif(RANKS == 1, reason="needs two ranks or more")
def test_ranks_with_different_T_get_a_value_error_on_every_rank():
    x, y, _, _ = data(False, False, False)
    trainer = make("lstm", 5, 5, "adam", None, "mse", "cpp", COMM)
    n = 10 if RANK == 0 else 12

    def run():
        with pytest.raises(ValueError, match="same number of steps T"):
            trainer.train(sliced(x[:n]), sliced(y[:n]))

    ends_quickly(run)
    assert trainer.updates == 0
    trainer.train(sliced(x[:10]), sliced(y[:10]))  # and then they go on
    assert trainer.updates == 2


@pytest.mark.skipif(RANKS == 1, reason="needs two ranks or more")
def test_bad_input_on_one_rank_raises_on_every_rank():
    x, y, _, _ = data(False, False, False)
    trainer = make("lstm", 5, 5, "adam", None, "mse", "numpy", COMM)
    mine = sliced(y[:10])
    if RANK == 1:
        mine = mine[..., :1]  # O = 1 instead of 2

    def run():
        with pytest.raises(ValueError, match="y" if RANK == 1 else "another rank"):
            trainer.train(sliced(x[:10]), mine)

    ends_quickly(run)
    assert trainer.updates == 0


def test_different_trainers_are_refused_on_every_rank():
    if RANKS == 1:
        pytest.skip("needs two ranks or more")
    with pytest.raises(ValueError, match="k2"):
        make("lstm", 3, 3 + RANK, "adam", None, "mse", "cpp", COMM)


def test_comm_must_be_a_communicator():
    with pytest.raises(TypeError, match="comm"):
        tbptt.Trainer(tbptt.LSTM(I, H, O), 2, 2, comm="world")


# ---- fit -------------------------------------------------------------------------------------


def test_fit_validates_on_every_rank_and_reduces():
    x, y, mask, _ = data(False, True, False)
    vx, vy, vmask, _ = data(False, True, False, seed=1)
    one = make("lstm", 4, 4, "adam", None, "mse", "cpp", None)
    expected = one.fit(x, y, mask, epochs=2, validation=(vx, vy, vmask), progress=False, block=8)
    ranks = make("lstm", 4, 4, "adam", None, "mse", "cpp", COMM)
    got = ranks.fit(
        sliced(x),
        sliced(y),
        sliced(mask),
        epochs=2,
        validation=(sliced(vx), sliced(vy), sliced(vmask)),
        progress=False,
        block=8,
    )
    assert relative_error(got.val_loss, expected.val_loss) <= RTOL
    assert relative_error(got.train_loss, expected.train_loss) <= RTOL
    assert relative_error(ranks.model.flat_parameters, one.model.flat_parameters) <= RTOL


def test_fit_stops_together_when_one_rank_says_so():
    x, y, _, _ = data(False, False, False)

    def callback(trainer, history):  # only the last rank wants to stop, after epoch 2
        return RANK == RANKS - 1 and history.epochs == 2

    trainer = make("lstm", 4, 4, "adam", None, "mse", "cpp", COMM)
    history = trainer.fit(sliced(x), sliced(y), epochs=5, callback=callback, progress=False)
    assert history.stop_reason == "callback" and history.epochs == 2
    assert same_on_every_rank(np.array([trainer.updates]))

    trainer = make("lstm", 4, 4, "adam", None, "mse", "cpp", COMM)
    budget = 1e-9 if RANK == 0 else None  # rank 0 alone is out of time
    history = trainer.fit(sliced(x), sliced(y), epochs=5, max_time=budget, block=8, progress=False)
    assert history.stop_reason == "max_time"
    assert same_on_every_rank(np.array([trainer.updates]))
    assert same_on_every_rank(trainer.model.flat_parameters)


@pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="fit defers Ctrl-C only over Python's default handler",
)
def test_ctrl_c_on_one_rank_stops_fit_on_every_rank():
    x, y, _, _ = data(False, False, False)

    def callback(trainer, history):
        if RANK == RANKS - 1:
            os.kill(os.getpid(), signal.SIGINT)
        return False

    trainer = make("lstm", 4, 4, "adam", None, "mse", "cpp", COMM)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(sliced(x), sliced(y), epochs=5, callback=callback, progress=False)
    assert trainer.history.epochs == 1
    assert same_on_every_rank(trainer.model.flat_parameters)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_a_checkpoint_per_rank_resumes_exactly(backend):
    x, y, mask, reset = data(False, True, True)
    folder = shared_folder()
    try:
        path = os.path.join(folder, "trainer.npz")
        a = 18  # mid-update: pending steps and the window are in each rank's file
        straight = make("lstm", 4, 7, "adam", 0.5, "mse", backend, COMM)
        first = make("lstm", 4, 7, "adam", 0.5, "mse", backend, COMM)
        losses = list(
            first.train(sliced(x[:a]), sliced(y[:a]), sliced(mask[:a]), sliced(reset[:a]))
        )
        expected = list(
            straight.train(sliced(x[:a]), sliced(y[:a]), sliced(mask[:a]), sliced(reset[:a]))
        )
        expected += list(
            straight.train(sliced(x[a:]), sliced(y[a:]), sliced(mask[a:]), sliced(reset[a:]))
        )
        first.save(path)
        COMM.Barrier()
        assert os.path.exists(
            path if RANK == 0 else os.path.join(folder, f"trainer.rank{RANK}.npz")
        )
        resumed = tbptt.load_trainer(path, comm=COMM)
        losses += list(
            resumed.train(sliced(x[a:]), sliced(y[a:]), sliced(mask[a:]), sliced(reset[a:]))
        )
        np.testing.assert_array_equal(losses, expected)
        np.testing.assert_array_equal(resumed.model.flat_parameters, straight.model.flat_parameters)
    finally:
        COMM.Barrier()
        if RANK == 0:
            shutil.rmtree(folder)


@pytest.mark.skipif(RANKS == 1, reason="needs two ranks or more")
def test_resuming_with_another_number_of_ranks_is_refused_on_every_rank():
    folder = shared_folder()
    try:
        path = os.path.join(folder, "trainer.npz")
        trainer = make("lstm", 4, 4, "adam", None, "mse", "cpp", COMM)
        x, y, _, _ = data(False, False, False)
        trainer.train(sliced(x[:6]), sliced(y[:6]))
        trainer.save(path)
        COMM.Barrier()
        fewer = COMM.Split(0 if RANK < RANKS - 1 else MPI.UNDEFINED, RANK)
        if fewer != MPI.COMM_NULL:
            with pytest.raises(ValueError, match="same number of ranks"):
                tbptt.load_trainer(path, comm=fewer)
            fewer.Free()
    finally:
        COMM.Barrier()
        if RANK == 0:
            shutil.rmtree(folder)


# ---- the command line ------------------------------------------------------------------------


def test_tbptt_train_splits_the_streams_and_rank_0_writes_the_run():
    """`mpiexec -n R python -m mpi4py -m tbptt train ...` (here in-process, every rank at once)."""
    from tbptt import cli

    folder = shared_folder()
    try:
        out = os.path.join(folder, "run")
        argv = [
            "train",
            "--task",
            "echo",
            "--hidden",
            "6",
            "--batch",
            str(2 * RANKS),
            "--epochs",
            "1",
            "--no-progress",
            "--out",
            out,
        ]
        assert cli.main(argv) == 0
        COMM.Barrier()
        names = set(os.listdir(out))
        assert {"model.npz", "trainer.npz", "history.json"} <= names
        assert {f"trainer.rank{r}.npz" for r in range(1, RANKS)} <= names
        model = tbptt.load(os.path.join(out, "model.npz"))
        assert same_on_every_rank(model.flat_parameters)
        assert cli.main(["train", "--resume", out, "--epochs", "2", "--no-progress"]) == 0
    finally:
        COMM.Barrier()
        if RANK == 0:
            shutil.rmtree(folder)


def test_tbptt_sweep_spreads_the_grid_and_every_rank_gets_the_table():
    task = tbptt.datasets.echo(T=60, B=3, delay=2, seed=0)
    rows = tbptt.sweep(task, k1=[2, 3], k2=[3, 5], hidden=4, comm=COMM)
    expected = tbptt.sweep(task, k1=[2, 3], k2=[3, 5], hidden=4)
    assert [(r["k1"], r["k2"]) for r in rows] == [(r["k1"], r["k2"]) for r in expected]
    np.testing.assert_array_equal(
        [r["train_loss"] for r in rows], [r["train_loss"] for r in expected]
    )
