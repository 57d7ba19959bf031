"""`tbptt.torch.Trainer` (docs/torch.md, "Training any model"; docs/semantics.md §3 with
recompute=True), in float64 with tiny models:

(a) parity: a torch module computing tbptt's own model (`nn.LSTM` / `nn.GRU` under `lstm.*` /
    `gru.*`, `nn.Linear` under `head.*`, and the same on `tbptt.torch.LSTM`) trained by
    `tbptt.torch.Trainer` gives the losses, parameters and carried state of
    `tbptt.Trainer(..., recompute=True)` (both backends) to 1e-9, over a grid of (k1, k2) with
    masks, resets, clipping, tokens and cross-entropy, two layers, Adam and SGD with momentum,
    the stream cut into calls, flushes (one reaching past the fresh mark), a divergence;
(b) a module the library has never seen (a LayerNorm LSTM cell): every update's gradient equals
    autograd of that update's loss over its window, computed here step by step from the start
    (a recording optimiser with lr = 0), with a built-in and with a callable loss, k2 < k1;
(c) resume through state_dict, pickle and deepcopy, stream invariance: bit for bit;
(d) bad input: the error names the argument, and the trainer goes on as if it never came.
"""

import copy
import pickle

import numpy as np
import pytest
from helpers import make_model, one_torch_thread  # noqa: F401  (the fixture)

import tbptt

torch = pytest.importorskip("torch")
nn = torch.nn
import tbptt.torch  # noqa: E402  (after importorskip)
from tbptt.engines import native  # noqa: E402

I, H, O, B = 3, 4, 2, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- the twins ---------------------------------------------------------------------------------


class Body(nn.Module):
    """tbptt's recurrent stack as a torch module (`lstm.*`, `gru.*` or `rnn.*`); token ids
    one-hot."""

    def __init__(self, cell="lstm", L=2, layer=None):
        super().__init__()
        self.cell = cell.split("_")[0]
        if cell.startswith("rnn_"):
            recurrent = (layer or nn.RNN)(I, H, L, nonlinearity=cell[len("rnn_") :])
        else:
            recurrent = (layer or {"lstm": nn.LSTM, "gru": nn.GRU}[cell])(I, H, L)
        setattr(self, self.cell, recurrent)

    def forward(self, x, state):
        if not x.is_floating_point():
            x = nn.functional.one_hot(x, I).to(torch.float64)
        return getattr(self, self.cell)(x, state)


class Whole(Body):
    """Body and head in one module (no separate head)."""

    def __init__(self, cell="lstm", L=2):
        super().__init__(cell, L)
        self.head = nn.Linear(H, O)

    def forward(self, x, state):
        out, state = super().forward(x, state)
        return self.head(out), state


OPTIMIZERS = {
    "adam": (
        lambda: tbptt.Adam(lr=0.05, betas=(0.85, 0.99), eps=1e-7),
        lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.85, 0.99), eps=1e-7),
    ),
    "sgd": (
        lambda: tbptt.SGD(lr=0.2, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9),
    ),
}


def twins(cell, k1, k2, loss, opt, clip, backend, whole=False, layer=None, L=2):
    """tbptt.Trainer(recompute=True) and tbptt.torch.Trainer on the same parameters."""
    model = make_model(
        cell, I, H, O, num_layers=L, dtype="float64", seed=k1 + 3 * k2, forget_bias=1.0
    )
    sd = {k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}
    if whole:
        module, head = Whole(cell, L).double(), None
        module.load_state_dict(sd)
        params = list(module.parameters())
    else:
        module, head = Body(cell, L, layer).double(), nn.Linear(H, O).double()
        module.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")})
        head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})
        params = list(module.parameters()) + list(head.parameters())
    engine = tbptt.Trainer(
        model,
        k1,
        k2,
        loss=loss,
        optimizer=OPTIMIZERS[opt][0](),
        clip_norm=clip,
        backend=backend,
        recompute=True,
    )
    ours = tbptt.torch.Trainer(
        module, k1, k2, loss=loss, optimizer=OPTIMIZERS[opt][1](params), clip_norm=clip, head=head
    )
    return engine, ours


def torch_parameters(ours):
    sd = {k: v.detach().numpy() for k, v in ours.module.state_dict().items()}
    if ours.head is not None:
        sd.update({f"head.{k}": v.detach().numpy() for k, v in ours.head.state_dict().items()})
    return sd


def data(seed, T, loss="mse", tokens=False, mask=True, resets=True):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, I, size=(T, B)) if tokens else rng.normal(size=(T, B, I))
    y = rng.integers(0, O, size=(T, B)) if loss == "cross_entropy" else rng.normal(size=(T, B, O))
    m = rng.uniform(0.0, 2.0, size=(T, B)) * (rng.uniform(size=(T, B)) > 0.2) if mask else None
    if m is not None:
        m[4:6] = 0  # an update without loss for the small k1
    r = rng.uniform(size=(T, B)) < 0.15 if resets else None
    return x, y, m, r


def sl(a, lo, hi):
    return None if a is None else a[lo:hi]


def close(a, b, what, tol=1e-9):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, what
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=what)


def both_run(engine, ours, x, y, m, r, cuts, flush_at=()):
    """Train both over the same calls; flush after the calls ending at `flush_at`; compare the
    losses of every call, then the parameters and the carried state."""
    edges = [0, *cuts, len(x)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        args = (x[lo:hi], y[lo:hi], sl(m, lo, hi), sl(r, lo, hi))
        close(ours.train(*args), engine.train(*args), f"losses of steps {lo}..{hi}")
        if hi in flush_at:
            a, b = ours.flush(), engine.flush()
            assert (a is None) == (b is None)
            if a is not None:
                close(a, b, f"flush at {hi}")
    got = torch_parameters(ours)
    for name, value in engine.model.state_dict().items():
        close(got[name], value, name)
    state = ours.state()
    parts = engine.engine.state()
    for a, b in zip(state if isinstance(state, tuple) else (state,), parts):
        close(a.numpy(), b, "carried state")


# ---- (a) parity with tbptt.Trainer(recompute=True) ---------------------------------------------

GRID = [(1, 1), (3, 3), (2, 5), (1, 4), (4, 9), (4, 2), (5, 1)]
CASES = {  # loss, tokens, optimizer, clip_norm, cell
    "mse-adam-clip-lstm": ("mse", False, "adam", 0.3, "lstm"),
    "ce-tokens-sgd-gru": ("cross_entropy", True, "sgd", None, "gru"),
    "mse-sgd-clip-gru": ("mse", False, "sgd", 0.5, "gru"),
    "ce-tokens-adam-lstm": ("cross_entropy", True, "adam", 1.0, "lstm"),
    "mse-adam-rnn": ("mse", False, "adam", None, "rnn_tanh"),
}


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("k1,k2", GRID)
def test_equals_the_engine_with_recompute(k1, k2, case, backend):
    loss, tokens, opt, clip, cell = CASES[case]
    engine, ours = twins(cell, k1, k2, loss, opt, clip, backend)
    x, y, m, r = data(k1 + 10 * k2, 26, loss, tokens)
    both_run(engine, ours, x, y, m, r, cuts=[7, 12, 19], flush_at=(7, 12))


@pytest.mark.parametrize("k1,k2", [(2, 5), (3, 3), (4, 2)])
def test_on_tbptt_torch_lstm_equals_the_engine(k1, k2):
    """The module on tbptt's own kernels (tbptt.torch.LSTM): the same run to rounding."""
    engine, ours = twins("lstm", k1, k2, "mse", "adam", 0.3, "cpp", layer=tbptt.torch.LSTM)
    assert isinstance(ours.module.lstm, tbptt.torch.LSTM)
    x, y, m, r = data(5, 26)
    both_run(engine, ours, x, y, m, r, cuts=[7, 12], flush_at=(7,))


def test_reset_state_and_empty_calls_as_the_engine():
    engine, ours = twins("lstm", 2, 5, "mse", "adam", None, "numpy")
    x, y, m, r = data(24, 16)
    for trainer in (engine, ours):
        assert len(trainer.train(x[:0], y[:0])) == 0 and trainer.num_streams is None
        trainer.reset_state()
    both_run(engine, ours, x[:5], y[:5], m[:5], r[:5], cuts=[])
    for trainer in (engine, ours):
        trainer.reset_state()  # a row of resets at the next step; pending steps stay pending
        assert trainer.pending_steps == 1
        assert len(trainer.train(x[5:5], y[5:5])) == 0
    state = ours.state()
    assert all(float(a.abs().max()) == 0 for a in state)
    both_run(engine, ours, x[5:], y[5:], m[5:], r[5:], cuts=[4], flush_at=(4,))


@pytest.mark.parametrize("k1,k2", [(2, 5), (3, 3), (1, 4)])
def test_a_module_with_its_own_head_equals_the_engine_when_k2_reaches_k1(k1, k2):
    """No separate head: with k2 >= k1 every loss term lies in its window, as in the engine."""
    engine, ours = twins("lstm", k1, k2, "mse", "adam", None, "numpy", whole=True)
    x, y, m, r = data(6, 20)
    both_run(engine, ours, x, y, m, r, cuts=[9], flush_at=(9,))


def test_a_flush_reaching_past_the_fresh_mark_reruns_with_the_earlier_weights(monkeypatch):
    """TBPTT(4, 9), a flush of one step: its window reaches into steps the last update's
    forward ran with the weights before it (§3 item 2); the engine agrees."""
    engine, ours = twins("lstm", 4, 9, "mse", "adam", None, "numpy")
    calls = []
    original = ours._with_weights
    monkeypatch.setattr(ours, "_with_weights", lambda w, run: calls.append(1) or original(w, run))
    x, y, _, r = data(8, 20, mask=False)
    both_run(engine, ours, x, y, None, r, cuts=[9, 14], flush_at=(9, 14))
    assert len(calls) == 2


def test_a_divergence_is_handled_as_the_engine_handles_it():
    """An update whose loss overflows: not applied, its steps dropped, every stream from the
    initial state, the losses applied before it on the error; then both go on alike."""
    engine, ours = twins("lstm", 3, 5, "mse", "adam", None, "numpy")
    x, y, m, r = data(9, 24)
    y[7] = 1e200  # update 3 (steps 6..8): (1e200)^2 = inf
    before = {}
    with pytest.raises(FloatingPointError) as ours_error:
        ours.train(x, y, m, r)
    with pytest.raises(FloatingPointError) as engine_error:
        engine.train(x, y, m, r)
    assert isinstance(ours_error.value, native.core().Divergence)
    assert str(ours_error.value).startswith(
        "update 3 diverged: the loss is inf. It was not applied"
    )
    assert str(engine_error.value).startswith("update 3 ")
    close(ours_error.value.losses, engine_error.value.losses, "losses before")
    assert ours.state() is None and ours.pending_steps == 0 and ours.updates == 3
    got = torch_parameters(ours)
    for name, value in engine.model.state_dict().items():
        close(got[name], value, name)
    y[7] = 0.0
    both_run(engine, ours, x[9:], y[9:], m[9:], r[9:], cuts=[5])
    del before


# ---- (b) a module the library has never seen: every gradient against autograd ------------------


class LayerNormLSTM(nn.Module):
    """An LSTM cell with LayerNorm on its gates and its cell state, written in torch, stepped in
    Python, with a linear read-out: nothing tbptt knows. State (h, c), each (1, B, H)."""

    def __init__(self, inputs=I, hidden=H, outputs=O):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Linear(inputs + hidden, 4 * hidden)
        self.norm_gates = nn.LayerNorm(4 * hidden)
        self.norm_c = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, outputs)

    def forward(self, x, state):
        if state is None:
            zeros = x.new_zeros(1, x.shape[1], self.hidden)
            state = (zeros, zeros)
        h, c = state[0][0], state[1][0]
        outputs = []
        for x_t in x:
            z = self.norm_gates(self.gates(torch.cat([x_t, h], dim=1)))
            i, f, g, o = z.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(self.norm_c(c))
            outputs.append(self.out(h))
        return torch.stack(outputs), (h[None], c[None])


class Recorder(torch.optim.SGD):
    """lr = 0: records every step's gradients and changes nothing."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)
        self.grads = []

    def step(self, closure=None):
        self.grads.append([p.grad.clone() for g in self.param_groups for p in g["params"]])
        return super().step(closure)


def huber(outputs, targets):
    return nn.functional.huber_loss(outputs, targets, reduction="none", delta=0.5).mean(dim=-1)


def update_gradient(module, x, y, w, resets, t, r, k2, loss):
    """autograd of the loss of the update at step t (0-based) over its r newest steps: every
    step run here one at a time from the initial state; the state entering step t-k2+1 and
    everything computed before it constants (§3 item 2)."""
    w0 = max(t - k2 + 1, 0)
    state, outs = None, {}
    for s in range(t + 1):
        if state is not None and resets is not None and resets[s].any():
            keep = torch.from_numpy(~resets[s]).to(torch.float64)[None, :, None]
            state = tuple(a * keep for a in state)
        if s == w0 and state is not None:
            state = tuple(a.detach() for a in state)
        with torch.set_grad_enabled(s >= w0):
            out, state = module(torch.from_numpy(x[s : s + 1]), state)
        outs[s] = out[0]
    out = torch.stack([outs[s] for s in range(t - r + 1, t + 1)])
    target = torch.from_numpy(y[t - r + 1 : t + 1])
    weight = torch.from_numpy(w[t - r + 1 : t + 1])
    per = huber(out, target) if callable(loss) else (out - target).square().mean(dim=-1)
    carries = weight > 0
    value = (weight[carries] * per[carries]).sum() / weight.sum()
    params = list(module.parameters())
    grads = torch.autograd.grad(value, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


@pytest.mark.parametrize("loss", ["mse", huber], ids=["mse", "callable"])
@pytest.mark.parametrize("k1,k2", [(1, 4), (3, 3), (2, 6), (5, 2)])
def test_every_gradient_is_autograd_of_its_window(k1, k2, loss):
    torch.manual_seed(k1 + k2)
    module = LayerNormLSTM().double()
    recorder = Recorder(module.parameters())
    trainer = tbptt.torch.Trainer(module, k1, k2, loss=loss, optimizer=recorder)
    T = 17
    x, y, m, r = data(k1 * k2, T)
    m[:, 0] += 0.1  # every update carries loss
    trainer.train(x[:8], y[:8], m[:8], r[:8])
    trainer.train(x[8:], y[8:], m[8:], r[8:])
    trainer.flush()
    ends = list(range(k1 - 1, T, k1))
    sizes = [k1] * len(ends)
    if T % k1:
        ends.append(T - 1)
        sizes.append(T % k1)
    assert len(recorder.grads) == len(ends)
    for got, t, size in zip(recorder.grads, ends, sizes):
        want = update_gradient(module, x, y, m, r, t, size, k2, loss)
        for a, b in zip(got, want):
            close(a.numpy(), b.numpy(), f"gradient of the update at step {t}", tol=1e-11)


def test_without_a_head_the_warm_up_steps_count_in_the_loss_and_train_nothing():
    """k2 < k1 with no separate head: the loss of the k1 newest steps, the gradient of its
    window's terms only (the terms before it are constants), normalised by every weight."""
    torch.manual_seed(0)
    module = LayerNormLSTM().double()
    recorder = Recorder(module.parameters())
    trainer = tbptt.torch.Trainer(module, 5, 2, optimizer=recorder)
    x, y, _, _ = data(3, 10, mask=False, resets=False)
    losses = trainer.train(x, y)
    w = np.ones((10, B))
    for got, t, loss in zip(recorder.grads, (4, 9), losses):
        want = update_gradient(module, x, y, w, None, t, 5, 2, "mse")
        for a, b in zip(got, want):
            close(a.numpy(), b.numpy(), f"gradient at step {t}", tol=1e-11)
        with torch.no_grad():
            out, _ = module(torch.from_numpy(x[: t + 1]), None)
        close(
            loss, ((out[t - 4 :] - torch.from_numpy(y[t - 4 : t + 1])) ** 2).mean().item(), "loss"
        )


# ---- (c) resume, copies, stream invariance: bit for bit ----------------------------------------


def fresh_trainer(seed, k1=3, k2=7, clip=0.5):
    torch.manual_seed(seed)
    module = LayerNormLSTM().double()
    return tbptt.torch.Trainer(
        module, k1, k2, optimizer=torch.optim.Adam(module.parameters(), lr=0.02), clip_norm=clip
    )


def same(a, b):
    """Two trainers' parameters and carried states are identical."""
    for p, q in zip(a.module.parameters(), b.module.parameters()):
        assert torch.equal(p, q)
    for s, t in zip(a.state(), b.state()):
        assert torch.equal(s, t)


def continue_both(a, b, x, y, m, r):
    for lo, hi in ((0, 5), (5, 6), (6, 13)):
        np.testing.assert_array_equal(
            a.train(x[lo:hi], y[lo:hi], m[lo:hi], r[lo:hi]),
            b.train(x[lo:hi], y[lo:hi], m[lo:hi], r[lo:hi]),
        )
    assert a.flush() == b.flush()
    same(a, b)


@pytest.mark.parametrize("how", ["state_dict", "save", "pickle", "deepcopy"])
def test_resume_equals_the_uninterrupted_run(how, tmp_path):
    """Stopped with pending steps right after an update (the next flush reaches past the fresh
    mark, so the weights before the last step travel too)."""
    x, y, m, r = data(11, 30)
    a = fresh_trainer(0)
    a.train(x[:13], y[:13], m[:13], r[:13])  # an update at step 12, one step pending
    a.reset_state()
    if how == "state_dict":
        b = fresh_trainer(1)  # other initial parameters: everything comes from the state_dict
        b.load_state_dict(copy.deepcopy(a.state_dict()))
    elif how == "save":  # torch.save, read back by torch.load's default weights_only=True
        a.save(tmp_path / "trainer.pt")
        b = fresh_trainer(1)
        b.load_state_dict(torch.load(tmp_path / "trainer.pt"))
    elif how == "pickle":
        b = pickle.loads(pickle.dumps(a))
    else:
        b = copy.deepcopy(a)
    assert b.pending_steps == a.pending_steps == 1 and b.updates == a.updates
    if how == "state_dict":
        other = fresh_trainer(1, k1=4)
        with pytest.raises(ValueError, match="k1=3"):
            other.load_state_dict(a.state_dict())
        broken = a.state_dict()
        del broken["trainer"]["fresh"]
        with pytest.raises(ValueError, match="fresh"):
            other.load_state_dict(broken)
    assert b.optimizer.param_groups[0]["params"][0] is next(b.module.parameters())
    continue_both(a, b, x[13:], y[13:], m[13:], r[13:])


@pytest.mark.parametrize("k1,k2", [(1, 5), (3, 7), (4, 2)])
def test_stream_invariance_bit_for_bit(k1, k2):
    x, y, m, r = data(12, 23)
    one, cut = fresh_trainer(2, k1, k2), fresh_trainer(2, k1, k2)
    whole = one.train(x, y, m, r)
    parts = [
        cut.train(x[lo:hi], y[lo:hi], m[lo:hi], r[lo:hi])
        for lo, hi in ((0, 1), (1, 6), (6, 6), (6, 17), (17, 23))
    ]
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    same(one, cut)


def test_memory_is_bounded_by_the_window():
    trainer = fresh_trainer(3, 2, 6)
    x, y, m, r = data(13, 60)
    for lo in range(0, 60, 7):
        trainer.train(x[lo : lo + 7], y[lo : lo + 7], m[lo : lo + 7], r[lo : lo + 7])
        assert len(trainer._held) <= trainer.k1 + trainer.k2


# ---- (d) bad input ------------------------------------------------------------------------------


def test_bad_settings():
    module = LayerNormLSTM().double()
    other = nn.Linear(2, 2)
    for kwargs, error, name in [
        (dict(k1=0), ValueError, "k1"),
        (dict(k2=1.5), TypeError, "k2"),
        (dict(k1=True), TypeError, "k1"),
        (dict(loss="l1"), ValueError, "loss"),
        (dict(loss=3), TypeError, "loss"),
        (dict(clip_norm=-1.0), ValueError, "clip_norm"),
        (dict(optimizer="adam"), TypeError, "optimizer"),
        (dict(optimizer=torch.optim.SGD(other.parameters(), lr=0.1)), ValueError, "optimizer"),
        (dict(head="linear"), TypeError, "head"),
        (dict(state_batch_dim=-1), ValueError, "state_batch_dim"),
    ]:
        args = {"k1": 2, "k2": 3, **kwargs}
        with pytest.raises(error, match=name):
            tbptt.torch.Trainer(module, **args)
    with pytest.raises(TypeError, match="module"):
        tbptt.torch.Trainer(lambda x, s: (x, s), 2, 3)


def bad_calls(x, y, m, r, trained):
    """(args, error, what its message says); B and the trailing shapes are fixed by the first
    call."""
    T = len(x)
    nan = x.copy()
    nan[1, 0, 0] = np.nan
    return [
        ((x[:, :, 0].ravel(), y), ValueError, "x"),
        ((x.astype(str), y), TypeError, "x"),
        ((x, y[:, :2]), ValueError, "y"),
        ((nan, y), ValueError, "x must be finite"),
        ((x, np.full_like(y, np.inf)), ValueError, "y must be finite"),
        ((x, y.astype(np.int64)), TypeError, "y"),
        ((x, y, m[:, :2]), ValueError, "mask"),
        ((x, y, -m), ValueError, "mask"),
        ((x, y, np.full((T, B), np.nan)), ValueError, "mask"),
        ((x, y, m, r.astype(float)), TypeError, "resets"),
        ((x, y, m, 2 * r.astype(np.int64)), ValueError, "resets"),
    ] + (
        [
            ((x[:, :2], y[:, :2]), ValueError, "B = 2"),
            ((x[..., :2], y), ValueError, "x's trailing shape"),
            ((x, y[..., :1]), ValueError, "y's trailing shape"),
        ]
        if trained
        else [((x, y[..., :1]), ValueError, r"y must have shape \(T, B\) \+ \(2,\)")]
    )


def test_bad_input_is_refused_and_changes_nothing():
    x, y, m, r = data(14, 12)
    trainer, twin = fresh_trainer(5), fresh_trainer(5)
    for trained in (False, True):  # the first call (B not fixed yet), then a later one
        for args, error, name in bad_calls(x, y, m, r, trained):
            with pytest.raises(error, match=name):
                trainer.train(*args)
        if not trained:
            assert trainer.num_streams is None
            continue_both(trainer, twin, x, y, m, r)
    continue_both(trainer, twin, x, y, m, r)


def test_bad_cross_entropy_targets():
    torch.manual_seed(0)
    module = Whole("lstm", 1).double()
    trainer = tbptt.torch.Trainer(module, 2, 2, loss="cross_entropy")
    x = np.random.default_rng(0).integers(0, I, size=(4, B))
    for y, error, name in [
        (np.zeros((4, B, 1)), TypeError, "y must hold integer class ids"),
        (np.full((4, B), O), ValueError, r"class ids must be in \[0, 2\)"),
        (np.full((4, B), -1), ValueError, "class ids"),
        (np.zeros((4, B, 2), np.int64), ValueError, "y"),
    ]:
        with pytest.raises(error, match=name):
            trainer.train(x, y)
    assert trainer.num_streams is None
    assert len(trainer.train(x, np.ones((4, B), np.int64))) == 2


def test_bad_modules_and_losses_are_refused_at_the_first_call():
    x, y, _, _ = data(15, 6, mask=False, resets=False)

    class BatchFirstState(LayerNormLSTM):
        """The state as (B, 1, H): B on dim 0."""

        def forward(self, x, state):
            state = None if state is None else tuple(s.transpose(0, 1) for s in state)
            out, state = super().forward(x, state)
            return out, tuple(s.transpose(0, 1) for s in state)

    torch.manual_seed(0)
    trainer = tbptt.torch.Trainer(BatchFirstState().double(), 2, 3)
    with pytest.raises(ValueError, match="state_batch_dim=1"):
        trainer.train(x, y)
    assert trainer.num_streams is None
    declared = tbptt.torch.Trainer(BatchFirstState().double(), 2, 3, state_batch_dim=0)
    assert len(declared.train(x, y)) == 3

    module = LayerNormLSTM().double()
    wrong = tbptt.torch.Trainer(module, 2, 3, loss=lambda out, target: (out - target).mean())
    with pytest.raises(ValueError, match=r"loss\(outputs, targets\) must return .* \(T, B\)"):
        wrong.train(x, y)
    assert wrong.num_streams is None

    class NoState(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(I, O).double()

        def forward(self, x, state):
            return self.linear(x)

    with pytest.raises(ValueError, match=r"module\(x, state\) must return \(outputs, state\)"):
        tbptt.torch.Trainer(NoState(), 2, 3).train(x, y)


# ---- the study for any model -------------------------------------------------------------------


def test_sweep_of_a_torch_model_equals_the_engines_sweep():
    """tbptt.sweep(torch_model=...) on the torch twin of the model sweep builds (same
    parameters) gives the rows of sweep(recompute=True): losses, validation, updates."""
    x, y, m, r = data(16, 40, resets=False)
    val = data(17, 12, mask=False, resets=False)[:2]

    def twin():
        model = make_model("lstm", I, H, O, num_layers=1, dtype="float64", seed=0, forget_bias=1.0)
        body, head = Body("lstm", 1).double(), nn.Linear(H, O).double()
        sd = {k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}
        body.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")})
        head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})
        return body, head

    common = dict(
        k1=None,
        pairs=[(2, 5), (4, 2)],
        validation=val,
        hidden=H,
        layers=1,
        dtype="float64",
        seed=0,
        optimizer=tbptt.SGD(0.1, momentum=0.5),
        points=3,
        reset=[8, "epoch"],
    )
    ours = tbptt.sweep(x, y, m, torch_model=twin, **common)
    engine = tbptt.sweep(x, y, m, recompute=True, **common)
    for a, b in zip(ours, engine):
        assert (a["k1"], a["k2"], a["reset"], a["updates"]) == (
            b["k1"],
            b["k2"],
            b["reset"],
            b["updates"],
        )
        close(a["train_loss"], b["train_loss"], "train_loss")
        close(a["val_loss"], b["val_loss"], "val_loss")
        close(a["curve"]["train_loss"], b["curve"]["train_loss"], "curve")
        assert a["window_bytes"] is None and np.isnan(a["horizon_ratio"])
    measured = tbptt.sweep(
        x,
        y,
        m,
        torch_model=twin,
        torch_horizon=True,
        **{**common, "pairs": [(2, 5)], "reset": "epoch"},
    )
    assert (ours[1]["k1"], ours[1]["reset"]) == (2, "epoch")
    close(measured[0]["train_loss"], ours[1]["train_loss"], "train_loss with the horizon")
    assert measured[0]["horizon"]["dh"].shape == (2, 5) and np.isfinite(
        measured[0]["horizon_ratio"]
    )
    with pytest.raises(TypeError, match="torch_model"):
        tbptt.sweep(x, y, k1=2, torch_model="lstm")


def test_evaluate_is_the_engines():
    engine, ours = twins("lstm", 2, 3, "cross_entropy", "adam", None, "numpy")
    x, y, m, r = data(18, 15, "cross_entropy", tokens=True)
    a, b = ours.evaluate(x, y, m, r), engine.evaluate(x, y, m, r)
    assert set(a) == set(b) == {"loss", "accuracy"}
    close(a["loss"], b["loss"], "loss")
    close(a["accuracy"], b["accuracy"], "accuracy")


def test_fit_is_the_engines_fit():
    """fit shares tbptt.Trainer.fit's code: epochs, a reset policy, a schedule, validation and
    restore_best give the engine's history and parameters."""
    x, y, m, _ = data(19, 30, resets=False)
    val = data(20, 10, mask=False, resets=False)[:2]
    engine, ours = twins("gru", 3, 5, "mse", "sgd", 0.5, "cpp")
    kwargs = dict(
        epochs=3,
        validation=val,
        reset=7,
        progress=False,
        block=6,
        schedule=tbptt.Schedule(warmup=0.2),
        restore_best=True,
    )
    a, b = ours.fit(x, y, m, **kwargs), engine.fit(x, y, m, **kwargs)
    for key in ("train_loss", "val_loss", "lr", "epoch_updates"):
        close(getattr(a, key), getattr(b, key), key)
    assert ours.best["epoch"] == engine.best["epoch"] and ours.lr == 0.2
    got = torch_parameters(ours)
    for name, value in engine.model.state_dict().items():
        close(got[name], value, name)
    copied = pickle.loads(pickle.dumps(ours))
    assert copied.history.val_loss == a.val_loss and copied.best["epoch"] == ours.best["epoch"]


# ---- the gradient horizon ----------------------------------------------------------------------


def state_gradients(module, x, y, resets, t, r, k2):
    """||dL/ds|| of the state tensors (h, c) entering each step of the update at t (before its
    resets), from the same step-by-step computation as update_gradient: {j: (|dh|, |dc|)}."""
    w0 = max(t - k2 + 1, 0)
    state, outs, entering = None, {}, {}
    for s in range(t + 1):
        if s == w0 and state is not None:
            state = tuple(a.detach().requires_grad_() for a in state)
        if s >= w0 and state is not None:
            entering[t - s] = state
        if state is not None and resets is not None and resets[s].any():
            keep = torch.from_numpy(~resets[s]).to(torch.float64)[None, :, None]
            state = tuple(a * keep for a in state)
        with torch.set_grad_enabled(s >= w0):
            out, state = module(torch.from_numpy(x[s : s + 1]), state)
        outs[s] = out[0]
    out = torch.stack([outs[s] for s in range(t - r + 1, t + 1)])
    value = (out - torch.from_numpy(y[t - r + 1 : t + 1])).square().mean()
    keys = sorted(entering)
    grads = torch.autograd.grad(value, [a for j in keys for a in entering[j]], allow_unused=True)
    norms = [0.0 if g is None else float(g.norm()) for g in grads]
    return {j: (norms[2 * n], norms[2 * n + 1]) for n, j in enumerate(keys)}


@pytest.mark.parametrize("k1,k2", [(2, 5), (3, 3), (4, 2)])
def test_the_horizon_is_autograd_of_the_state_entering_each_step(k1, k2):
    torch.manual_seed(1)
    module = LayerNormLSTM().double()
    trainer = tbptt.torch.Trainer(
        module, k1, k2, optimizer=Recorder(module.parameters()), horizon=True
    )
    x, y, _, r = data(21, 13, mask=False)
    r[6] = True  # every stream: nothing crosses back before step 6
    trainer.train(x[:7], y[:7], resets=r[:7])
    trainer.train(x[7:], y[7:], resets=r[7:])
    sums, counts = np.zeros((2, k2)), np.zeros(k2, np.int64)
    for t in range(k1 - 1, 13, k1):
        for j, norms in state_gradients(module, x, y, r, t, k1, k2).items():
            sums[:, j] += norms
            counts[j] += 1
    horizon = trainer.horizon()
    np.testing.assert_array_equal(horizon["updates"], counts)
    close(horizon["dh"], np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), "horizon")
    plain = tbptt.torch.Trainer(copy.deepcopy(module), k1, k2)
    assert np.isnan(plain.horizon()["dh"]).all()
    trainer.reset_horizon()
    assert trainer.horizon()["updates"].sum() == 0
    other = tbptt.torch.Trainer(copy.deepcopy(module), k1, k2, horizon=True)
    copied = pickle.loads(pickle.dumps(other))  # keeps horizon=True
    copied.train(x[:k1], y[:k1])
    assert copied.horizon()["updates"][0] == 1


def test_the_horizon_changes_no_result():
    """One step per call of the module: the same losses and parameters."""
    runs = []
    for horizon in (False, True):
        torch.manual_seed(2)
        module = LayerNormLSTM().double()
        trainer = tbptt.torch.Trainer(module, 2, 5, horizon=horizon, clip_norm=0.5)
        x, y, m, r = data(22, 15)
        runs.append((trainer.train(x, y, m, r), [p.detach().clone() for p in module.parameters()]))
    close(runs[0][0], runs[1][0], "losses", tol=1e-12)
    for a, b in zip(runs[0][1], runs[1][1]):
        close(a.numpy(), b.numpy(), "parameters", tol=1e-12)


@pytest.mark.parametrize("factor", [2.0**70, 1e307, 1e-300])
def test_the_loss_does_not_depend_on_the_scale_of_the_mask(factor):
    """The weighted mean is taken over weights divided by a power of two near their sum (as
    the engine does): weights of 1e307 on losses of 100 do not overflow."""
    x, y, m, r = data(23, 12)
    runs = []
    for weights in (m, m * factor):
        trainer = fresh_trainer(6, 2, 5)
        runs.append((trainer.train(x, y, weights, r), trainer))
    close(runs[1][0], runs[0][0], "losses", tol=1e-12)
    for p, q in zip(runs[0][1].module.parameters(), runs[1][1].module.parameters()):
        close(p.detach().numpy(), q.detach().numpy(), "parameters", tol=1e-10)
    trainer = runs[0][1]
    outputs, targets = (
        torch.zeros(4, 3, 2, dtype=torch.float64),
        torch.full((4, 3, 2), 10.0, dtype=torch.float64),
    )
    w = torch.full((4, 3), factor, dtype=torch.float64)
    assert float(trainer._loss(outputs, targets, w)) == 100.0


def test_float32_follows_the_engine():
    """float32 on tbptt.torch.LSTM against the C++ engine in float32: to rounding (1e-4)."""
    model = make_model("lstm", I, H, O, num_layers=1, dtype="float32", seed=4, forget_bias=1.0)
    sd = {k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}
    body, head = Body("lstm", 1, tbptt.torch.LSTM), nn.Linear(H, O)
    body.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")})
    head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})
    engine = tbptt.Trainer(model, 3, 7, optimizer=tbptt.Adam(0.01), recompute=True)
    ours = tbptt.torch.Trainer(
        body,
        3,
        7,
        head=head,
        optimizer=torch.optim.Adam(list(body.parameters()) + list(head.parameters()), lr=0.01),
    )
    x, y, m, r = data(25, 30)
    close(ours.train(x, y, m, r), engine.train(x, y, m, r), "losses", tol=1e-4)
    assert ours.module.lstm.weight_hh_l0.dtype == torch.float32
    got = torch_parameters(ours)
    for name, value in model.state_dict().items():
        close(got[name], value, name, tol=1e-4)


def test_an_update_without_loss_makes_no_optimiser_step():
    torch.manual_seed(3)
    module = LayerNormLSTM().double()
    recorder = Recorder(module.parameters())
    trainer = tbptt.torch.Trainer(module, 2, 4, optimizer=recorder)
    x, y, _, _ = data(26, 8, mask=False, resets=False)
    mask = np.ones((8, B))
    mask[2:4] = 0  # the second update's steps
    losses = trainer.train(x, y, mask)
    assert trainer.updates == 4 and len(losses) == 3 and len(recorder.grads) == 3
