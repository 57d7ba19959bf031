"""tbptt against PyTorch (optional dependency): the same module (`lstm = nn.LSTM(I, H, L)`, or
`gru = nn.GRU(...)`, `rnn = nn.RNN(..., nonlinearity=...)`, and `head = nn.Linear(H, O)`), the
same parameters, float64: equal to 1e-10. Every test runs for each cell.

(a) predict vs torch forward; (b) chunked TBPTT k1 = k2 = k (state carried, detached between
chunks; calls that split chunks) with Adam / SGD-momentum and clip_grad_norm_, MSE and
cross-entropy, resets; (c) masked (weighted-mean) losses; (d) load_state_dict of a torch state_dict.
"""

import numpy as np
import pytest
from helpers import CELLS, make_model

import tbptt

torch = pytest.importorskip("torch")
nn = torch.nn

WORST = {}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These are tiny step-by-step graphs: torch's intra-op threads only add barrier waits (and
    compete with tbptt's own threads on a busy machine)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def assert_close(actual, expected, what, rtol=1e-10, atol=1e-12, key="vs torch, float64"):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    err = np.abs(actual - expected)
    big = np.abs(expected) > 1e3 * atol
    rel = (
        float(np.max(np.where(big, err / np.maximum(np.abs(expected), 1e-300), 0)))
        if err.size
        else 0.0
    )
    WORST[key] = max(WORST.get(key, (0.0, 0.0)), (rel, float(err.max()) if err.size else 0.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


class Net(nn.Module):
    """The torch twin of a tbptt model of `cell`; its recurrent module's attribute (lstm, gru or
    rnn) makes the state_dict keys, `recurrent` reaches it whatever its name."""

    def __init__(self, I, H, O, L, cell="lstm"):
        super().__init__()
        if cell == "lstm":
            self.lstm = nn.LSTM(I, H, L)
        elif cell == "gru":
            self.gru = nn.GRU(I, H, L)
        else:
            self.rnn = nn.RNN(I, H, L, nonlinearity=cell[len("rnn_") :])
        self.prefix = cell.split("_")[0]
        self.head = nn.Linear(H, O)

    @property
    def recurrent(self):
        return getattr(self, self.prefix)


def twins(I, H, O, L, seed=0, dtype="float64", cell="lstm"):
    model = make_model(cell, I, H, O, num_layers=L, dtype=dtype, seed=seed, forget_bias=1.0)
    net = Net(I, H, O, L, cell).to(torch.float64 if dtype == "float64" else torch.float32)
    sd = model.state_dict()
    assert list(sd) == list(net.state_dict())  # same keys, same order
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()})
    return model, net


def torch_inputs(x, I, tokens, dtype=torch.float64):
    if tokens:
        return nn.functional.one_hot(torch.from_numpy(x), I).to(dtype)
    return torch.from_numpy(x).to(dtype)


def each(state, f):
    """f applied to every tensor of a state: (h, c) of an LSTM, h of the others."""
    return tuple(f(a) for a in state) if isinstance(state, tuple) else f(state)


def compare_params(model, net, what):
    tsd = net.state_dict()
    for name, value in model.state_dict().items():
        assert_close(value, tsd[name].detach().numpy(), f"{what}: {name}")


# ---- (a) predict -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "given-state"])
@pytest.mark.parametrize("tokens", [False, True], ids=["features", "tokens"])
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_predict_matches_torch(cell, L, tokens, with_state, dtype):
    I, H, O, T, B = 5, 6, 3, 30, 4
    model, net = twins(I, H, O, L, seed=L, dtype=dtype, cell=cell)
    rng = np.random.default_rng(L + 2 * tokens + 4 * with_state)
    x = rng.integers(0, I, size=(T, B)) if tokens else rng.normal(size=(T, B, I))
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    xt = torch_inputs(x, I, tokens, tdtype)
    with torch.no_grad():
        if with_state:
            h0, c0 = rng.normal(size=(L, B, H)), 3 * rng.normal(size=(L, B, H))
            state = (h0, c0) if cell == "lstm" else h0
            out, final = model.predict(x, state=state)
            seq, tfinal = net.recurrent(xt, each(state, lambda a: torch.from_numpy(a).to(tdtype)))
        else:
            out, final = model.predict(x)
            seq, tfinal = net.recurrent(xt)
        tout = net.head(seq)
    # float32: one forward pass of O(1) values, a few ulps apart
    tol = {} if dtype == "float64" else dict(rtol=1e-5, atol=1e-6, key="vs torch, float32 predict")
    assert_close(out, tout.numpy(), "outputs", **tol)
    assert type(final) is (tuple if cell == "lstm" else np.ndarray)
    for a, b, name in zip(each(final, lambda a: a), each(tfinal, lambda a: a.numpy()), "hc"):
        assert_close(a, b, f"final {name}", **tol)


# ---- (b), (c) chunked TBPTT k1 = k2 = k ------------------------------------------------------


def torch_chunked(net, k, x, y, mask, resets, loss, make_opt, clip_norm, I, tokens):
    """Chunked TBPTT as one writes it in torch: every k steps (and a last partial chunk), backward
    through the chunk from the detached carried state; then clip and step.
    Steps one at a time so resets can zero a stream's state (which cuts the gradient too)."""
    opt = make_opt(net.parameters())
    T, B = y.shape[0], y.shape[1]
    L, H = net.recurrent.num_layers, net.recurrent.hidden_size
    h = torch.zeros(L, B, H, dtype=torch.float64)
    state = (h, h.clone()) if isinstance(net.recurrent, nn.LSTM) else h
    xt = torch_inputs(x, I, tokens)
    losses = []
    for s0 in range(0, T, k):
        s1 = min(s0 + k, T)
        state = each(state, lambda a: a.detach())
        outs = []
        for t in range(s0, s1):
            if resets is not None:
                keep = torch.from_numpy(~resets[t])[None, :, None].to(torch.float64)
                state = each(state, lambda a: a * keep)  # noqa: B023 - applied at once
            seq, state = net.recurrent(xt[t : t + 1], state)
            outs.append(net.head(seq))
        out = torch.cat(outs)  # (n, B, O)
        w = (
            torch.ones(s1 - s0, B, dtype=torch.float64)
            if mask is None
            else torch.from_numpy(mask[s0:s1])
        )
        if loss == "mse":
            target = torch.from_numpy(y[s0:s1])
            if mask is None:
                value = nn.MSELoss()(out, target)
            else:
                per = ((out - target) ** 2).mean(dim=2)
                value = (w * per).sum() / w.sum()
        else:
            logits = out.reshape(-1, out.shape[2])
            labels = torch.from_numpy(y[s0:s1]).reshape(-1)
            if mask is None:
                value = nn.CrossEntropyLoss()(logits, labels)
            else:
                per = nn.CrossEntropyLoss(reduction="none")(logits, labels)
                value = (w.reshape(-1) * per).sum() / w.sum()
        if float(w.sum()) == 0:
            continue  # no position carries loss: no step
        opt.zero_grad()
        value.backward()
        if clip_norm is not None:
            nn.utils.clip_grad_norm_(net.parameters(), clip_norm)
        opt.step()
        losses.append(value.item())
    return losses


OPTS = {
    "adam": (
        lambda: tbptt.Adam(lr=0.05, betas=(0.85, 0.99), eps=1e-7),
        lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.85, 0.99), eps=1e-7),
    ),
    "sgd-momentum": (
        lambda: tbptt.SGD(lr=0.2, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9),
    ),
    "adamw": (
        lambda: tbptt.AdamW(lr=0.05, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.3),
        lambda p: torch.optim.AdamW(p, lr=0.05, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.3),
    ),
    "sgd-weight-decay": (
        lambda: tbptt.SGD(lr=0.2, momentum=0.9, weight_decay=0.1),
        lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9, weight_decay=0.1),
    ),
}


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
@pytest.mark.parametrize("clip_norm", [None, 0.02])
@pytest.mark.parametrize("opt", sorted(OPTS))
@pytest.mark.parametrize(
    "loss,tokens,L", [("mse", False, 2), ("cross_entropy", True, 1), ("cross_entropy", False, 2)]
)
@pytest.mark.parametrize("k", [4, 5])
@pytest.mark.parametrize("cell", CELLS)
def test_chunked_tbptt_matches_torch(cell, k, loss, tokens, L, opt, clip_norm, backend):
    # T a multiple of k: a flush() over a partial chunk would reach back k2 = k steps into the
    # previous chunk (docs/semantics.md §3.4), which plain chunked torch code does not do.
    I, H, O, B, T = 4, 5, 3, 3, 20
    model, net = twins(I, H, O, L, seed=11, cell=cell)
    rng = np.random.default_rng(k + 10 * L)
    x = rng.integers(0, I, size=(T, B)) if tokens else rng.normal(size=(T, B, I))
    y = rng.integers(0, O, size=(T, B)) if loss == "cross_entropy" else rng.normal(size=(T, B, O))
    resets = rng.uniform(size=(T, B)) < 0.1
    make, make_torch = OPTS[opt]
    trainer = tbptt.Trainer(
        model, k, k, loss=loss, optimizer=make(), clip_norm=clip_norm, backend=backend
    )
    losses = list(trainer.train(x[:9], y[:9], resets=resets[:9]))
    losses += list(trainer.train(x[9:], y[9:], resets=resets[9:]))
    assert trainer.flush() is None and trainer.pending_steps == 0
    expected = torch_chunked(net, k, x, y, None, resets, loss, make_torch, clip_norm, I, tokens)
    assert len(losses) == len(expected) == -(-T // k)
    assert_close(losses, expected, "losses")
    compare_params(model, net, f"after {len(expected)} updates")


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
@pytest.mark.parametrize("loss,tokens", [("mse", False), ("cross_entropy", True)])
@pytest.mark.parametrize("cell", CELLS)
def test_masked_loss_matches_torch(cell, loss, tokens, backend):
    """Weighted mean sum(w * l) / sum(w) (MSE averaged over outputs too); a chunk whose weights
    are all zero makes no step, and an integer / bool mask is a weight."""
    I, H, O, B, T, k = 4, 5, 3, 3, 20, 5
    model, net = twins(I, H, O, 2, seed=12, cell=cell)
    rng = np.random.default_rng(21)
    x = rng.integers(0, I, size=(T, B)) if tokens else rng.normal(size=(T, B, I))
    y = rng.integers(0, O, size=(T, B)) if loss == "cross_entropy" else rng.normal(size=(T, B, O))
    mask = rng.uniform(0, 3, size=(T, B)) * (rng.uniform(size=(T, B)) > 0.3)
    mask[5:10] = 0  # the second update carries no loss
    mask[10:15] = rng.integers(0, 3, size=(5, B))  # integer weights
    trainer = tbptt.Trainer(
        model, k, k, loss=loss, optimizer=OPTS["adam"][0](), clip_norm=0.05, backend=backend
    )
    losses = trainer.train(x, y, mask=mask)
    expected = torch_chunked(net, k, x, y, mask, None, loss, OPTS["adam"][1], 0.05, I, tokens)
    assert trainer.updates == 4 and len(losses) == len(expected) == 3
    assert_close(losses, expected, "losses")
    compare_params(model, net, "after the masked updates")


# ---- (d) load_state_dict of torch tensors --------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_load_state_dict_accepts_torch_tensors(dtype):
    I, H, O, L = 3, 4, 2, 2
    torch.manual_seed(0)
    net = Net(I, H, O, L).double()
    for p in net.parameters():
        p.data.uniform_(-1, 1)
    sd = net.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    model = tbptt.LSTM(I, H, O, num_layers=L, dtype=dtype, seed=1)
    model.load_state_dict(sd)
    for name, value in model.state_dict().items():
        assert value.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(value, sd[name].numpy().astype(dtype))
    # tensors that require grad, and a float32 torch module into a float64 model
    model.load_state_dict(dict(net.float().named_parameters()))
    x = np.random.default_rng(0).normal(size=(6, 2, I))
    with torch.no_grad():
        seq, _ = net.double().lstm(torch.from_numpy(x))
        tout = net.head(seq).numpy()
    out, _ = model.predict(x)
    np.testing.assert_allclose(out, tout, rtol=1e-5, atol=1e-6)
    # a torch tensor of the wrong shape is a ValueError naming the key
    bad = dict(sd)
    bad["lstm.weight_hh_l1"] = torch.zeros(4 * H, H + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"lstm\.weight_hh_l1"):
        model.load_state_dict(bad)


def test_zz_report_largest_discrepancies():
    """Run with -s to see the largest discrepancies against torch."""
    for key, (rel, err) in sorted(WORST.items()):
        print(f"\n[discrepancy] {key}: max relative {rel:.3g}, max absolute {err:.3g}")
