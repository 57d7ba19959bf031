"""Trainers in several Python threads at once.

The C++ engine releases the GIL around its numerical work (train, flush, predict), so independent
trainers can run in parallel threads. Each must give exactly the results it gives alone: the
engine is deterministic for identical calls (docs/semantics.md), and trainers share no state (the
thread count is global, and every worker reads the same value). Checked bit for bit, with the
engine on 1 thread and on 2 (set in the main thread, or by every worker itself), B * H large
enough that the engine splits the streams over its own threads too. The streams are kept short:
with 2 engine threads per trainer on a busy 2-core machine, OpenMP's and Eigen's spinning
barriers make each step far slower than on 1 thread.
"""

import threading
import time

import numpy as np
import pytest

import tbptt


@pytest.fixture(autouse=True)
def restore_threads():
    before = tbptt.get_num_threads()
    yield
    tbptt.set_num_threads(before)


def data(seed, T, B, I, O, loss, tokens):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, I, size=(T, B)) if tokens else rng.normal(size=(T, B, I))
    y = rng.integers(0, O, size=(T, B)) if loss == "cross_entropy" else rng.normal(size=(T, B, O))
    mask = rng.uniform(0, 2, size=(T, B)) * (rng.uniform(size=(T, B)) > 0.2)
    resets = rng.uniform(size=(T, B)) < 0.02
    return x, y, mask, resets


# (name, backend, dtype, loss, tokens, B, I, H, O, k1, k2, T): B * H >= 1024 for the big cpp ones,
# so that with 2 threads the engine also splits the streams over its own threads.
JOBS = [
    ("cpp-f64-mse", "cpp", "float64", "mse", False, 16, 8, 64, 3, 10, 30, 80),
    ("cpp-f32-ce", "cpp", "float32", "cross_entropy", True, 32, 20, 48, 20, 25, 25, 80),
    ("cpp-f64-ce-small", "cpp", "float64", "cross_entropy", False, 2, 3, 5, 4, 3, 7, 400),
    ("numpy-f64-mse", "numpy", "float64", "mse", False, 3, 4, 6, 2, 4, 6, 60),
]


def job(spec, seed):
    name, backend, dtype, loss, tokens, B, I, H, O, k1, k2, T = spec
    model = tbptt.LSTM(I, H, O, num_layers=2, dtype=dtype, seed=seed, forget_bias=1.0)
    opt = tbptt.Adam(3e-3) if seed % 2 else tbptt.SGD(0.05, momentum=0.9)
    trainer = tbptt.Trainer(model, k1, k2, loss=loss, optimizer=opt, clip_norm=1.0, backend=backend)
    return trainer, data(seed, T, B, I, O, loss, tokens)


def run(trainer, arrays, threads_inside=None, start=None):
    """Feed the stream in uneven blocks, flush, then predict: every result, in order."""
    if threads_inside is not None:
        tbptt.set_num_threads(threads_inside)
    if start is not None:
        start.wait()
    x, y, mask, resets = arrays
    T = x.shape[0]
    out = []
    edges = [0, 1, 37, 38, T // 2, T - 5, T]
    for a, b in zip(edges[:-1], edges[1:]):
        out.append(trainer.train(x[a:b], y[a:b], mask[a:b], resets[a:b]))
        if a == 38:
            trainer.reset_state()
    f = trainer.flush()
    out.append(np.array([] if f is None else [f]))
    out += list(trainer.state())
    out.append(trainer.model.flat_parameters.copy())
    predicted, (h, c) = trainer.model.predict(x[:50])
    out += [predicted, h, c]
    return out


def assert_identical(a, b, what):
    assert len(a) == len(b)
    for i, (u, v) in enumerate(zip(a, b)):
        assert u.dtype == v.dtype and u.shape == v.shape, f"{what}: result {i}"
        assert np.array_equal(u, v), f"{what}: result {i} differs by {np.max(np.abs(u - v))}"


@pytest.mark.parametrize("mode", ["1-thread", "2-threads", "2-threads-set-inside"])
def test_trainers_in_threads_equal_trainers_one_after_the_other(mode):
    threads = 1 if mode == "1-thread" else 2
    inside = threads if mode.endswith("inside") else None
    tbptt.set_num_threads(1 if inside else threads)

    # one after the other, in this thread
    if inside:
        tbptt.set_num_threads(inside)
    alone = [run(*job(spec, seed)) for seed, spec in enumerate(JOBS)]
    tbptt.set_num_threads(1 if inside else threads)

    # all at once, each in its own thread, started together; two rounds
    for round_ in range(2):
        jobs = [job(spec, seed) for seed, spec in enumerate(JOBS)]
        results, errors = [None] * len(jobs), []
        start = threading.Barrier(len(jobs))

        def work(i):
            try:
                results[i] = run(*jobs[i], threads_inside=inside, start=start)  # noqa: B023 - the threads are joined within the iteration
            except BaseException as error:  # noqa: BLE001 - reported below, not lost in the thread
                errors.append(error)  # noqa: B023
                start.abort()  # noqa: B023

        workers = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=300)
        assert not any(w.is_alive() for w in workers), "a worker hangs"
        assert not errors, errors
        for spec, a, b in zip(JOBS, results, alone):
            assert_identical(a, b, f"round {round_}, {spec[0]}")
        assert tbptt.get_num_threads() == threads


def test_train_releases_the_gil():
    """While one thread is inside a long `train` call, another thread keeps running Python code:
    the gaps between its clock ticks stay far shorter than the call (with the GIL held, one gap
    would span nearly the whole call)."""
    tbptt.set_num_threads(1)
    trainer, (x, y, mask, resets) = job(
        ("big", "cpp", "float64", "mse", False, 16, 8, 64, 3, 50, 50, 600), 0
    )
    trainer.train(x[:50], y[:50])  # allocation and first-call costs out of the way
    for _ in range(3):  # a long call: ~0.2-1 s
        tic = time.perf_counter()
        trainer.train(x, y, mask, resets)
        if time.perf_counter() - tic > 0.2:
            break
        x, y, mask, resets = (np.concatenate([a, a]) for a in (x, y, mask, resets))
    inside = {}

    def work():
        inside["enter"] = time.perf_counter()
        trainer.train(x, y, mask, resets)
        inside["exit"] = time.perf_counter()

    worker = threading.Thread(target=work)
    ticks = []
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    enter, exit_ = inside["enter"], inside["exit"]
    during = np.array([t for t in ticks if enter <= t <= exit_])
    duration = exit_ - enter
    gaps = np.diff(np.concatenate([[enter], during, [exit_]]))
    assert duration > 0.1
    assert gaps.max() < 0.5 * duration, (
        f"the main thread stalled for {gaps.max():.3f} s of a {duration:.3f} s train call"
    )


# (cell, dtype, tokens, B, H, layers, k1, k2, dropout): B * H >= 1024, so that the engine shares
# every product among its threads; H not a multiple of the SIMD width and B not of the engine's
# pieces of streams in some; dropout, tokens, k2 > k1 and k2 < k1.
SHARED = [
    ("lstm", "float32", False, 32, 128, 1, 25, 25, 0.0),
    ("lstm", "float64", False, 37, 100, 2, 10, 30, 0.2),
    ("gru", "float32", True, 20, 96, 2, 25, 25, 0.1),
    ("rnn", "float64", False, 64, 33, 1, 7, 5, 0.0),
    ("lstm", "float32", True, 130, 72, 3, 5, 12, 0.3),
    ("gru", "float64", False, 5, 300, 1, 9, 9, 0.0),
]


def shared_run(threads, cell, dtype, tokens, B, H, layers, k1, k2, dropout, T=90):
    """Everything a training run produces, with the engine on `threads` threads."""
    tbptt.set_num_threads(threads)
    rng = np.random.default_rng(0)
    I, O = (20, 20) if tokens else (7, 3)
    x = rng.integers(0, I, size=(T, B)) if tokens else rng.normal(size=(T, B, I)).astype(dtype)
    y = rng.integers(0, O, size=(T, B)) if tokens else rng.normal(size=(T, B, O)).astype(dtype)
    mask = (rng.uniform(0, 2, size=(T, B)) * (rng.uniform(size=(T, B)) > 0.2)).astype(dtype)
    resets = rng.uniform(size=(T, B)) < 0.02
    model = tbptt.model.build(
        cell, I, H, O, num_layers=layers, dtype=dtype, seed=0, dropout=dropout
    )
    trainer = tbptt.Trainer(
        model,
        k1,
        k2,
        loss="cross_entropy" if tokens else "mse",
        optimizer=tbptt.Adam(3e-3),
        clip_norm=1.0,
        seed=3,
    )
    losses = []
    for a in range(0, T, 30):
        losses += list(
            trainer.train(x[a : a + 30], y[a : a + 30], mask[a : a + 30], resets[a : a + 30])
        )
    horizon = trainer.horizon()
    predicted, state = model.predict(x[:40])
    return [
        np.array(losses),
        *model.state_dict().values(),
        *trainer.state(),
        predicted,
        *state,
        *(np.asarray(v) for v in horizon.values()),
    ]


@pytest.mark.parametrize("spec", SHARED, ids=lambda s: "-".join(map(str, s)))
def test_results_do_not_depend_on_the_thread_count(spec):
    """The engine shares its work in pieces fixed by the sizes alone, and picks one thread or all
    per update from measured speed: the bits must be the same for any count
    (docs/performance.md)."""
    one = shared_run(1, *spec)
    for threads in (2, 3):
        assert_identical(shared_run(threads, *spec), one, f"{threads} threads")
