"""`Trainer(..., recompute=True)` (docs/semantics.md §3, item 2): after an update that changes
the weights, when k2 > k1, the steps the next update's window reads run again with the new weights
(and an update whose window still reaches older steps, a flush, runs its window again first), so
every update's loss and gradient are exactly dL/dθ of its loss as a function of θ, the state
entering the window held constant, and the carried state is the current weights'.

The gradients are checked against central finite differences of that loss, computed apart from
the engines' backward (by `model.predict` from the stored state entering the window, or by the
tests' own forward with the dropout masks); the same checks fail without recompute, so they can
fail. Then: no effect where the window lies within the pending steps (bit for bit), the two
backends agree with dropout, stream invariance, checkpoints, the argument's check."""

import numpy as np
import pytest
from helpers import fd_gradient, gaussian_nll, make_model, plain_run, position_losses

import tbptt
from tbptt.checkpoint import load_arrays, save_arrays
from tbptt.model import from_config
from tbptt.reference import dropout_mask

I, H, O, B = 3, 5, 2, 2
BACKENDS = ("cpp", "numpy")


def new_trainer(
    backend, cell, k1, k2, recompute=True, num_layers=1, lr=0.05, loss="mse", **model_kw
):
    outputs = 2 * O if loss == "gaussian" else O  # a mean and a raw scale per target
    model = make_model(
        cell, I, H, outputs, num_layers=num_layers, dtype="float64", seed=3, **model_kw
    )
    return tbptt.Trainer(
        model,
        k1,
        k2,
        loss=loss,
        optimizer=tbptt.SGD(lr),
        backend=backend,
        seed=11,
        recompute=recompute,
    )


def data(seed, T, loss="mse", tokens=False, streams=B):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, I, size=(T, streams)) if tokens else rng.normal(size=(T, streams, I))
    y = (
        rng.integers(0, O, size=(T, streams))
        if loss == "cross_entropy"
        else rng.normal(size=(T, streams, O))
    )
    return x, y


def sl(a, lo, hi):
    return None if a is None else a[lo:hi]


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def copy_of(model):
    twin = from_config(model.config())
    twin.flat_parameters[:] = model.flat_parameters
    return twin


def user_state(model, parts):
    """A state as predict takes it, from one (L, B, H) array per name in model.STATE."""
    return tuple(parts) if len(model.STATE) > 1 else parts[0]


def predict_with_resets(model, x, state, resets):
    """model.predict over x from `state`, zeroing stream b's state before step t where resets[t, b]
    (the forward of a window: predict itself knows no resets). Returns outputs (T, B, O) and
    the final state."""
    outputs, parts = [], state
    cuts = [0] + [t for t in range(1, len(x)) if resets is not None and resets[t].any()] + [len(x)]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if resets is not None and resets[lo].any():
            keep = ~resets[lo].astype(bool)[None, :, None]
            parts = tuple(a * keep for a in parts) if isinstance(parts, tuple) else parts * keep
        out, parts = model.predict(x[lo:hi], parts)
        outputs.append(out)
    return np.concatenate(outputs), parts


def mse(out, y, w=None):
    per_position = np.mean((out - y) ** 2, axis=-1)
    w = np.ones(per_position.shape) if w is None else w
    return float(np.sum(w * per_position) / np.sum(w))


# ---- a. the exact gradient where every window reaches step 0 -------------------------------------


def last_step_gradient(backend, cell, recompute, T, k2, tokens=False, loss="mse"):
    """TBPTT(1, k2), k2 > T, fed one step per call: (θ before the last update, its gradient,
    its loss, the model)."""
    trainer = new_trainer(backend, cell, 1, k2, recompute=recompute, loss=loss)
    x, y = data(1, T, loss, tokens)
    for t in range(T - 1):
        trainer.train(x[t : t + 1], y[t : t + 1])
    theta = trainer.model.flat_parameters.copy()
    (last_loss,) = trainer.train(x[T - 1 :], y[T - 1 :])
    return theta, trainer.engine.gradient(), last_loss, trainer.model, x, y


def full_loss(model, theta, x, y, loss):
    """The loss at the last step of predict(x) from zeros, at θ."""
    twin = copy_of(model)
    twin.flat_parameters[:] = theta
    out, _ = twin.predict(x)
    if loss == "mse":
        return mse(out[-1], y[-1])
    if loss == "gaussian":
        return float(np.mean(gaussian_nll(out[-1], y[-1])))
    logits = out[-1]
    peak = logits.max(axis=1, keepdims=True)
    lse = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
    return float(np.mean(lse - logits[np.arange(B), y[-1]]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "cell,tokens,loss",
    [
        ("lstm", False, "mse"),
        ("gru", False, "mse"),
        ("rnn_tanh", False, "mse"),
        ("lstm", True, "cross_entropy"),
        ("gru", False, "gaussian"),
    ],
    ids=["lstm", "gru", "rnn", "lstm-tokens-ce", "gru-gaussian"],
)
def test_gradient_is_exact_when_every_window_reaches_step_0(backend, cell, tokens, loss):
    T, k2 = 7, 10
    theta, grad, last_loss, model, x, y = last_step_gradient(
        backend, cell, True, T, k2, tokens, loss
    )
    fd = fd_gradient(lambda th: full_loss(model, th, x, y, loss), theta)
    assert rel(grad, fd) <= 1e-6
    assert last_loss == pytest.approx(full_loss(model, theta, x, y, loss), rel=1e-12)
    # without recompute the window's older steps keep the earlier weights' activations
    theta0, grad0, _, _, _, _ = last_step_gradient(backend, cell, False, T, k2, tokens, loss)
    fd0 = fd_gradient(lambda th: full_loss(model, th, x, y, loss), theta0)
    assert rel(grad0, fd0) > 1e-4


def dropout_masks(model, seed):
    """masks(k, t) for helpers.plain_run: the dropout mask the engines draw (same seed)."""
    L = model.num_layers
    rates = [model.dropout] * (L - 1) + [model.head_dropout]

    def masks(k, t):
        if rates[k] == 0:
            return np.ones((B, H))
        return dropout_mask(rates[k], seed, k, t, B, H, np.dtype(np.float64))

    return masks


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gradient_is_exact_with_dropout_and_two_layers(backend, cell):
    """As above, through two layers with dropout: the recompute draws the steps' own masks."""
    T, k2 = 6, 9
    trainer = new_trainer(backend, cell, 1, k2, num_layers=2, dropout=0.3, head_dropout=0.2)
    x, y = data(2, T)
    for t in range(T - 1):
        trainer.train(x[t : t + 1], y[t : t + 1])
    theta = trainer.model.flat_parameters.copy()
    trainer.train(x[T - 1 :], y[T - 1 :])
    model, masks = trainer.model, dropout_masks(trainer.model, 11)
    zeros = tuple([np.zeros((B, H)) for _ in range(2)] for _ in model.STATE)

    def loss(th):
        tops, _ = plain_run(model, th, x, False, None, zeros, range(T), masks)
        return float(np.mean(position_losses(model, th, tops[T - 1], y[T - 1], "mse")))

    assert rel(trainer.engine.gradient(), fd_gradient(loss, theta)) <= 1e-6


# ---- b. a window cut inside the stream -----------------------------------------------------------


def state_entering(model, snapshot, a, first_held, resets):
    """The stored state entering step a, from a snapshot whose oldest held step is first_held
    (`window/h_in` if a is that step, else the state leaving step a - 1, a's resets applied)."""
    parts = []
    for name in model.STATE:
        if a == first_held:
            part = snapshot[f"window/{name}_in"].copy()
        else:
            part = snapshot[f"window/{name}"][a - 1 - first_held].copy()
            part[:, resets[a].astype(bool)] = 0
        parts.append(part)
    return user_state(model, parts)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize(
    "k1,k2,T,S,flush",
    [(1, 3, 12, 11, False), (2, 5, 12, 10, False), (4, 3, 13, 13, True)],
    ids=["1-3", "2-5", "4-3-flush"],
)
def test_gradient_is_exact_for_a_window_inside_the_stream(backend, cell, k1, k2, T, S, flush):
    """The last update (after step T - 1, or a flush) backpropagates through steps
    [T - k2, T): its gradient is that of its loss computed by predict from the stored state
    entering step T - k2, with a mask on the loss and resets: stream 0 at that step, stream 1 at
    the next, stream 2 none (its loss depends on the state entering the window). The state it
    carries on: that forward up to step T - 1 + k1 - k2, then the new weights' from there (k2 >
    k1: the steps the next update reads, run again)."""
    x, y = data(3, T, streams=3)
    a = T - k2
    resets = np.zeros((T, 3), np.uint8)
    resets[a, 0] = resets[a + 1, 1] = resets[2, 2] = 1
    mask = np.ones((T, 3))
    mask[T - 1] = (1.5, 0.25, 1.0)
    mask[T - 2] = (0.0, 2.0, 0.5)
    grads, losses, states = {}, {}, {}
    for recompute in (True, False):
        trainer = new_trainer(backend, cell, k1, k2, recompute=recompute, num_layers=2)
        trainer.train(x[:S], y[:S], mask[:S], resets[:S])
        snapshot, theta = trainer.engine.snapshot(), trainer.model.flat_parameters.copy()
        r = trainer.pending_steps + (T - S)
        last = [trainer.flush()] if flush else trainer.train(x[S:], y[S:], mask[S:], resets[S:])
        first_held = S - snapshot["window/x"].shape[0]
        state = state_entering(trainer.model, snapshot, a, first_held, resets)
        twin = copy_of(trainer.model)

        def loss(th, twin=twin, state=state, r=r):
            twin.flat_parameters[:] = th
            out, _ = predict_with_resets(twin, x[a:], state, resets[a:])
            return mse(out[-r:], y[T - r :], mask[T - r :])

        grads[recompute] = rel(trainer.engine.gradient(), fd_gradient(loss, theta))
        losses[recompute] = abs(last[-1] - loss(theta)) / loss(theta)
        rerun = T - 1 + k1 - k2 if k2 > k1 else T  # where the new weights' steps begin
        twin.flat_parameters[:] = theta
        final = state
        if rerun > a:
            _, final = predict_with_resets(twin, x[a:rerun], state, resets[a:rerun])
        if rerun < T:
            twin.flat_parameters[:] = trainer.model.flat_parameters
            _, final = predict_with_resets(twin, x[rerun:], final, resets[rerun:])
        final = final if isinstance(final, tuple) else (final,)
        states[recompute] = max(rel(got, want) for got, want in zip(trainer.engine.state(), final))
    assert grads[True] <= 1e-6 and losses[True] <= 1e-12 and states[True] <= 1e-12
    assert grads[False] > 1e-4 and losses[False] > 1e-6 and states[False] > 1e-6


# ---- c. nothing to recompute: bit for bit --------------------------------------------------------


def run(trainer, x, y, mask, resets, cuts):
    """train over x in calls cut at `cuts`: (losses, outputs) of all calls."""
    losses, outputs = [], []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        ls, out = trainer.train(
            x[lo:hi], y[lo:hi], sl(mask, lo, hi), sl(resets, lo, hi), return_outputs=True
        )
        losses.extend(ls)
        outputs.append(out)
    return np.array(losses), np.concatenate(outputs)


def mask_and_resets(seed, T):
    rng = np.random.default_rng(seed)
    mask = rng.uniform(0, 2, size=(T, B)) * (rng.uniform(size=(T, B)) > 0.2)
    resets = (rng.uniform(size=(T, B)) < 0.1).astype(np.uint8)
    return mask, resets


def everything(trainer):
    return {
        "parameters": trainer.model.flat_parameters.copy(),
        **{f"state[{i}]": a for i, a in enumerate(trainer.engine.state())},
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("k1,k2", [(3, 3), (4, 2), (5, 1)])
def test_no_window_beyond_the_pending_steps_changes_nothing(backend, cell, k1, k2):
    T = 4 * k1  # no flush: a flush of fewer than k2 pending steps recomputes (see below)
    x, y = data(4, T)
    mask, resets = mask_and_resets(4, T)
    results = []
    for recompute in (False, True):
        trainer = new_trainer(
            backend, cell, k1, k2, recompute=recompute, num_layers=2, dropout=0.3, head_dropout=0.2
        )
        losses, outputs = run(trainer, x, y, mask, resets, [0, 1, 5, 6, T])
        results.append({"losses": losses, "outputs": outputs, **everything(trainer)})
    for key in results[0]:
        assert np.array_equal(results[0][key], results[1][key]), key


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_flush_that_reaches_past_its_pending_steps_recomputes(backend):
    """k2 < k1, but a flush of r < k2 steps reaches k2 - r steps into the previous update."""
    x, y = data(5, 9)
    grads = []
    for recompute in (False, True):
        trainer = new_trainer(backend, "lstm", 4, 3, recompute=recompute)
        trainer.train(x, y)
        trainer.flush()
        grads.append(trainer.engine.gradient())
    assert rel(grads[1], grads[0]) > 1e-4


# ---- d. dropout, k2 > k1: the backends agree; the option does something -------------------------


def dropout_run(backend, recompute, cell, T=31):
    trainer = new_trainer(
        backend,
        cell,
        2,
        7,
        recompute=recompute,
        num_layers=2,
        dropout=0.3,
        head_dropout=0.2,
        lr=0.1,
    )
    x, y = data(6, T)
    mask, resets = mask_and_resets(6, T)
    mask[10:12] = 0  # an update without loss: no step, but its window is still recomputed
    losses, outputs = run(trainer, x, y, mask, resets, [0, 3, 4, 17, T])
    flushed = trainer.flush()
    return {"losses": np.append(losses, flushed), "outputs": outputs, **everything(trainer)}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_backends_agree_with_dropout(cell):
    cpp, ref = dropout_run("cpp", True, cell), dropout_run("numpy", True, cell)
    for key in ref:
        np.testing.assert_allclose(cpp[key], ref[key], rtol=1e-10, atol=1e-13, err_msg=key)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recompute_changes_the_losses_when_k2_exceeds_k1(cell):
    on, off = dropout_run("numpy", True, cell), dropout_run("numpy", False, cell)
    assert np.abs(on["losses"] - off["losses"]).max() > 1e-6 * np.abs(off["losses"]).max()
    # the outputs train returns of the first update's steps come before anything could differ
    assert np.array_equal(on["outputs"][:2], off["outputs"][:2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_after_an_update_without_loss_the_state_is_still_the_current_weights(backend):
    """An update without loss changes no weight and reruns nothing: the carried state is still
    the current weights' over the window, from the stored state entering it."""
    T, k1, k2 = 9, 1, 4
    x, y = data(7, T)
    mask = np.ones((T, B))
    mask[T - 1] = 0
    trainer = new_trainer(backend, "lstm", k1, k2)
    trainer.train(x[: T - 1], y[: T - 1], mask[: T - 1])
    snapshot = trainer.engine.snapshot()
    assert len(trainer.train(x[T - 1 :], y[T - 1 :], mask[T - 1 :])) == 0
    first_held = T - 1 - snapshot["window/x"].shape[0]
    state = state_entering(trainer.model, snapshot, T - k2, first_held, np.zeros((T, B)))
    _, expected = trainer.model.predict(x[T - k2 :], state)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for got, want in zip(trainer.engine.state(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_returns_the_first_forwards_outputs(backend):
    """Test-then-train: each step's returned output is what predict_next said before it, though
    the update that follows recomputes that step."""
    T = 12
    x, y = data(8, T)
    trainer = new_trainer(backend, "gru", 2, 5, num_layers=2)
    for t in range(T):
        before = trainer.predict_next(x[t])
        _, out = trainer.train(x[t : t + 1], y[t : t + 1], return_outputs=True)
        assert np.array_equal(out[0], before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_data_parallel_recomputes_as_one_process(backend):
    """Ranks holding slices of the streams make the updates of one process holding all of them,
    updates without loss (anywhere, or on one rank) included: there every update goes through
    the backward phase, so the recompute must not depend on whether an update has loss. Under
    plain pytest one rank (the reduce path still differs from no comm); more under mpiexec:
        mpiexec -n 2 python -m mpi4py -m pytest -q -p no:cacheprovider \
            tests/test_recompute.py -k parallel"""
    MPI = pytest.importorskip("mpi4py.MPI")
    comm = MPI.COMM_WORLD
    rank, sizes = comm.Get_rank(), [2 + 2 * r for r in range(comm.Get_size())]
    mine = np.arange(sum(sizes[:rank]), sum(sizes[: rank + 1]))
    T = 25
    x, y = data(12, T, streams=sum(sizes))
    mask = np.random.default_rng(12).uniform(0, 2, size=(T, sum(sizes)))
    mask[10:12] = 0  # an update without loss anywhere
    mask[14:16, :2] = 0  # one without loss on rank 0
    results = []
    for group in (None, comm):
        model = make_model(
            "lstm", I, H, O, num_layers=2, dtype="float64", seed=3, dropout=0.3, head_dropout=0.2
        )
        trainer = tbptt.Trainer(
            model,
            2,
            7,
            optimizer=tbptt.SGD(0.1),
            backend=backend,
            seed=11,
            recompute=True,
            comm=group,
        )
        cols = slice(None) if group is None else mine
        losses = list(trainer.train(*(np.ascontiguousarray(a[:, cols]) for a in (x, y, mask))))
        results.append((np.array(losses + [trainer.flush()]), everything(trainer)))
    (one, one_rest), (ranks, ranks_rest) = results
    np.testing.assert_allclose(ranks, one, rtol=1e-10)
    np.testing.assert_allclose(ranks_rest["parameters"], one_rest["parameters"], rtol=1e-10)
    for key in ranks_rest:
        if key.startswith("state"):
            np.testing.assert_allclose(
                ranks_rest[key], one_rest[key][:, mine], rtol=1e-10, atol=1e-14
            )


# ---- e. stream invariance ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k1,k2", [(2, 5), (1, 4), (3, 7)])
def test_stream_invariance(backend, k1, k2):
    T = 20
    x, y = data(9, T)
    mask, resets = mask_and_resets(9, T)
    whole = new_trainer(backend, "lstm", k1, k2, num_layers=2, dropout=0.3, head_dropout=0.2)
    expected = run(whole, x, y, mask, resets, [0, T])
    expected_rest = everything(whole)
    for a in (1, 4, 7, 13):
        split = new_trainer(backend, "lstm", k1, k2, num_layers=2, dropout=0.3, head_dropout=0.2)
        got = run(split, x, y, mask, resets, [0, a, T])
        rest = everything(split).values()
        for want, have in zip((*expected, *expected_rest.values()), (*got, *rest)):
            np.testing.assert_allclose(have, want, rtol=1e-12, atol=1e-14, err_msg=f"split {a}")


# ---- f. checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_resume_mid_window_is_exact(tmp_path, backend, cell):
    T, a, k1, k2 = 24, 10, 3, 7  # stopped with 1 pending step, the window reaching 6 further back
    x, y = data(10, T)
    mask, resets = mask_and_resets(10, T)
    ref = new_trainer(backend, cell, k1, k2, num_layers=2, dropout=0.3)
    expected = run(ref, x, y, mask, resets, [0, a, T])
    stopped = new_trainer(backend, cell, k1, k2, num_layers=2, dropout=0.3)
    run(stopped, x, y, mask, resets, [0, a])
    assert stopped.pending_steps == 1
    stopped.save(tmp_path / "t.npz")
    resumed = tbptt.load_trainer(tmp_path / "t.npz")
    assert resumed.recompute is True and resumed.backend == backend
    got = run(resumed, x, y, mask, resets, [a, T])
    assert np.array_equal(got[0], expected[0][-len(got[0]) :])
    assert np.array_equal(got[1], expected[1][a:])
    for key, want in everything(ref).items():
        assert np.array_equal(everything(resumed)[key], want), key


def test_files_from_before_recompute_resume_without_it(tmp_path):
    trainer = new_trainer("numpy", "lstm", 2, 4)
    trainer.save(tmp_path / "t.npz")
    header, arrays = load_arrays(tmp_path / "t.npz", "trainer")
    del header["trainer"]["recompute"]
    save_arrays(tmp_path / "t.npz", header, arrays)
    assert tbptt.load_trainer(tmp_path / "t.npz").recompute is False


# ---- g. the argument -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_recompute_must_be_a_bool(value):
    model = tbptt.LSTM(I, H, O)
    with pytest.raises(TypeError, match="recompute"):
        tbptt.Trainer(model, 1, 2, backend="numpy", recompute=value)


def test_float32_backends_agree():
    """The online learners' case: float32, TBPTT(1, k2), one step per call."""
    x, y = data(13, 30)
    results = []
    for backend in BACKENDS:
        model = make_model("lstm", I, H, O, dtype="float32", seed=3)
        trainer = tbptt.Trainer(
            model, 1, 6, optimizer=tbptt.Adam(3e-3), clip_norm=1.0, backend=backend, recompute=True
        )
        losses = [
            trainer.train(x[t : t + 1].astype(np.float32), y[t : t + 1].astype(np.float32))[0]
            for t in range(len(x))
        ]
        results.append((np.array(losses), model.flat_parameters.copy(), trainer.engine.state()[0]))
    for cpp, ref in zip(*results):
        np.testing.assert_allclose(cpp, ref, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_snapshot_with_fresh_from_out_of_range_is_refused_and_changes_nothing(backend):
    x, y = data(14, 9)
    trainer = new_trainer(backend, "lstm", 2, 5)
    trainer.train(x, y)
    before = trainer.engine.snapshot()
    bad = {**before, "fresh_from": np.array(int(before["steps"]) + 1, np.int64)}
    with pytest.raises(ValueError, match="fresh_from"):
        trainer.engine.restore(bad)
    after = trainer.engine.snapshot()
    for key in before:
        assert np.array_equal(before[key], after[key]), key
