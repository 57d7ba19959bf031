"""tbptt.torch.LSTM / GRU / RNN against torch.nn.LSTM / GRU / RNN (optional dependency).

The same constructor arguments after the same torch.manual_seed give the same parameters; then
outputs, final states and the gradients of the input, the initial state and every parameter agree
(float64 to 1e-10, float32 to 1e-5) over a grid of cells, layers, directions, batch_first and hx;
gradcheck; a model with an embedding and a head trains as torch's; dropout; what falls back to
torch; bad input raises what torch raises; pickling and torch.save.
"""

import copy
import io
import itertools
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
tt = pytest.importorskip("tbptt.torch")

CELLS = {  # name: (tbptt.torch class, torch class, extra constructor arguments)
    "lstm": (tt.LSTM, nn.LSTM, {}),
    "gru": (tt.GRU, nn.GRU, {}),
    "rnn_tanh": (tt.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (tt.RNN, nn.RNN, {"nonlinearity": "relu"}),
}
TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small graphs: torch's intra-op threads only add waits (and compete on a busy machine)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls into the core's sequence pass (so a test knows the kernels ran, not
    torch)."""
    from tbptt.torch import _layers

    calls = {"sequence_forward": 0, "sequence_backward": 0}
    real = _layers.core()

    class Counting:
        def __getattr__(self, name):
            if name in calls:
                calls[name] += 1
            return getattr(real, name)

    monkeypatch.setattr(_layers, "core", lambda: Counting())
    return calls


def twins(cell, *args, seed=0, **kwargs):
    """tbptt.torch's layer and torch's, each built right after torch.manual_seed(seed)."""
    ours, theirs, extra = CELLS[cell]
    torch.manual_seed(seed)
    a = ours(*args, **kwargs, **extra)
    torch.manual_seed(seed)
    b = theirs(*args, **kwargs, **extra)
    return a, b


def states(hx):
    return list(hx) if isinstance(hx, tuple) else [hx]


def run(layer, x, hx, weights):
    """Outputs, final states and the gradients of a fixed linear function of them."""
    x = x.detach().clone().requires_grad_()
    hx = None if hx is None else tuple(h.detach().clone().requires_grad_() for h in hx)
    given = None if hx is None else (hx if len(hx) == 2 else hx[0])
    out, final = layer(x, given)
    finals = states(final)
    loss = (out * weights[0]).sum() + sum((f * w).sum() for f, w in zip(finals, weights[1:]))
    layer.zero_grad()
    loss.backward()
    grads = [x.grad] + ([] if hx is None else [h.grad for h in hx])
    grads += [p.grad for p in layer.parameters()]
    return [out.detach()] + [f.detach() for f in finals] + grads


GRID = list(itertools.product(CELLS, [1, 2, 3], [False, True], [False, True], [False, True]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("cell,layers,bidirectional,batch_first,with_hx", GRID)
def test_equals_torch(cell, layers, bidirectional, batch_first, with_hx, dtype, kernel_calls):
    T, B, I, H = 6, 3, 4, 5
    a, b = twins(
        cell, I, H, layers, bidirectional=bidirectional, batch_first=batch_first, dtype=dtype
    )
    for (name, p), (name_b, q) in zip(a.named_parameters(), b.named_parameters()):
        assert name == name_b and torch.equal(p, q), "same initial parameters after manual_seed"
    g = torch.Generator().manual_seed(1)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=g, dtype=dtype)
    D = 2 if bidirectional else 1
    n_states = 2 if cell == "lstm" else 1
    hx = (
        tuple(torch.randn(layers * D, B, H, generator=g, dtype=dtype) for _ in range(n_states))
        if with_hx
        else None
    )
    weights = [
        torch.randn(*(B, T, D * H) if batch_first else (T, B, D * H), generator=g, dtype=dtype)
    ]
    weights += [torch.randn(layers * D, B, H, generator=g, dtype=dtype) for _ in range(n_states)]
    for ours, theirs in zip(run(a, x, hx, weights), run(b, x, hx, weights)):
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), **TOLERANCE[dtype])
    assert kernel_calls == {"sequence_forward": layers * D, "sequence_backward": layers * D}


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck(cell, kernel_calls):
    a, _ = twins(cell, 3, 4, 2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    hx = (
        (h0, torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True))
        if cell == "lstm"
        else h0
    )

    def f(x, *flat):
        out, final = a(x, tuple(flat) if cell == "lstm" else flat[0])
        return (out,) + tuple(states(final))

    assert torch.autograd.gradcheck(f, (x,) + tuple(states(hx)))
    # and every parameter (through torch.func.functional_call)
    names = [name for name, _ in a.named_parameters()]

    def g(*weights):
        return torch.func.functional_call(a, dict(zip(names, weights)), (x.detach(),))[0]

    assert torch.autograd.gradcheck(
        g, tuple(p.detach().clone().requires_grad_() for p in a.parameters())
    )
    assert kernel_calls["sequence_backward"] > 0


@pytest.mark.parametrize("cell", CELLS)
def test_unbatched_input_and_no_bias(cell):
    a, b = twins(cell, 3, 4, 2, bias=False, dtype=torch.float64)
    assert [n for n, _ in a.named_parameters()] == [
        "weight_ih_l0",
        "weight_hh_l0",
        "weight_ih_l1",
        "weight_hh_l1",
    ]
    x = torch.randn(5, 3, dtype=torch.float64)
    h = torch.randn(2, 4, dtype=torch.float64)
    hx = (h, h.clone()) if cell == "lstm" else h
    for hx_given in (None, hx):
        out_a, fin_a = a(x, hx_given)
        out_b, fin_b = b(x, hx_given)
        assert out_a.shape == out_b.shape == (5, 4)
        torch.testing.assert_close(out_a, out_b, rtol=1e-10, atol=1e-12)
        for p, q in zip(states(fin_a), states(fin_b)):
            assert p.shape == q.shape
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


class WordModel(nn.Module):
    """What the engine alone cannot train: an embedding, a two-layer LSTM with dropout, an MLP
    head."""

    def __init__(self, lstm_class, V=11, E=6, H=8):
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.lstm = lstm_class(E, H, 2, dropout=0.0)
        self.head = nn.Sequential(nn.Linear(H, H), nn.Tanh(), nn.Linear(H, V))

    def forward(self, tokens, state=None):
        out, state = self.lstm(self.embedding(tokens), state)
        return self.head(out), state


def test_a_model_trains_as_on_torch_layers():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 11, (40, 4), generator=g)
    models = []
    for cls in (tt.LSTM, nn.LSTM):
        torch.manual_seed(3)
        models.append(WordModel(cls).double())
    losses = {0: [], 1: []}
    for i, model in enumerate(models):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        state = None
        for start in range(0, 39, 10):  # chunked TBPTT: the state carried, detached
            x, y = tokens[start : start + 10], tokens[start + 1 : start + 11]
            out, state = model(x[: len(y)], state)
            loss = nn.functional.cross_entropy(out.reshape(-1, 11), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            state = tuple(s.detach() for s in state)
            losses[i].append(loss.item())
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-10)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)


def test_dropout_between_layers():
    a, b = twins("lstm", 3, 5, 3, dropout=0.5, dtype=torch.float64)
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    a.eval(), b.eval()
    torch.testing.assert_close(a(x)[0], b(x)[0], rtol=1e-10, atol=1e-12)  # eval: no dropout
    a.train()
    torch.manual_seed(5)
    first = a(x)[0]
    torch.manual_seed(5)
    again = a(x)[0]
    assert torch.equal(first, again), "torch's generator draws the masks: a seed reproduces them"
    assert not torch.allclose(first, a(x)[0]), "other masks without the seed"
    a.eval()
    assert not torch.allclose(first, a(x)[0]), "training drops units"
    one = tt.LSTM(3, 5, 1, dropout=0.0, dtype=torch.float64).train()
    torch.testing.assert_close(one(x)[0], one.eval()(x)[0])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["one way", "both ways"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_dropout_draws_torchs_own_masks(cell, dtype, bidirectional):
    """In train(), after the same torch.manual_seed, the masks between layers are the ones torch's
    module draws (the same dropout on the same layer outputs, in the same order): the outputs,
    final states and gradients equal torch's."""
    a, b = twins(cell, 3, 5, 3, dropout=0.5, bidirectional=bidirectional, dtype=dtype)
    a.train(), b.train()
    x = torch.randn(6, 2, 3, dtype=dtype)
    results = []
    for layer in (a, b):
        torch.manual_seed(7)
        out, hx = layer(x)
        (out.square().sum() + sum(s.sum() for s in states(hx))).backward()
        results.append([out, *states(hx), *(p.grad for p in layer.parameters())])
    tolerance = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {}
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, **tolerance)


@pytest.mark.parametrize("cell", CELLS)
def test_no_grad_keeps_nothing(cell):
    a, b = twins(cell, 3, 4, 2)
    x = torch.randn(5, 2, 3, requires_grad=True)
    with torch.no_grad():
        out, _ = a(x)
        expected, _ = b(x)
    assert out.grad_fn is None and not out.requires_grad
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    out, _ = a(x)
    assert out.grad_fn is not None


def test_what_falls_back_to_torch(kernel_calls):
    """What the kernels do not serve runs torch's own implementation: the same answer."""
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    # proj_size > 0
    a, b = twins("lstm", 3, 4, 1, proj_size=2, dtype=torch.float64)
    torch.testing.assert_close(a(x)[0], b(x)[0])
    # another device: torch's implementation runs there (meta tensors stand in for a GPU)
    a = tt.GRU(3, 4, device="meta")
    out, h = a(torch.empty(6, 3, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (6, 3, 4)
    # half precision
    a, b = twins("rnn_tanh", 3, 4, 1, dtype=torch.bfloat16)
    xb = x.to(torch.bfloat16)
    torch.testing.assert_close(a(xb)[0], b(xb)[0])
    assert kernel_calls["sequence_forward"] == 0


@pytest.mark.parametrize("lengths", [[2, 6, 1, 4], [5, 5, 5, 5]], ids=["varied", "equal"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["zeros", "hx"])
@pytest.mark.parametrize(
    "cell,layers,bidirectional", list(itertools.product(CELLS, [1, 2], [False, True]))
)
def test_packed_sequences_equal_torch(cell, layers, bidirectional, with_hx, lengths, kernel_calls):
    """Variable lengths (a PackedSequence, unsorted): each stream runs its own steps; outputs,
    final states and every gradient as torch's."""
    I, H, B = 3, 4, len(lengths)
    a, b = twins(cell, I, H, layers, bidirectional=bidirectional, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    padded = torch.randn(max(lengths), B, I, generator=g, dtype=torch.float64)
    D = 2 if bidirectional else 1
    n_states = 2 if cell == "lstm" else 1
    hx = [torch.randn(layers * D, B, H, generator=g, dtype=torch.float64) for _ in range(n_states)]
    results = []
    for layer in (a, b):
        x = padded.clone().requires_grad_()
        h = [t.clone().requires_grad_() for t in hx]
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        given = (tuple(h) if cell == "lstm" else h[0]) if with_hx else None
        out, final = layer(packed, given)
        assert isinstance(out, nn.utils.rnn.PackedSequence)
        unpacked, _ = nn.utils.rnn.pad_packed_sequence(out)
        loss = (
            unpacked
            * torch.arange(unpacked.numel(), dtype=torch.float64).reshape(unpacked.shape).sin()
        ).sum()
        loss = loss + sum((f * (k + 2)).sum() for k, f in enumerate(states(final)))
        layer.zero_grad()
        loss.backward()
        grads = (
            [x.grad]
            + ([t.grad for t in h] if with_hx else [])
            + [p.grad for p in layer.parameters()]
        )
        results.append([unpacked.detach()] + [f.detach() for f in states(final)] + grads)
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    assert kernel_calls["sequence_backward"] == layers * D


def raised(f):
    try:
        f()
    except Exception as error:  # noqa: BLE001 (the test compares exception types)
        return type(error), str(error)
    return None, None


@pytest.mark.parametrize("cell", CELLS)
def test_bad_input_raises_as_torch(cell):
    a, b = twins(cell, 3, 4, 2)
    n = 2 if cell == "lstm" else 1

    def hx(*shape, dtype=torch.float32):
        h = torch.zeros(*shape, dtype=dtype)
        return (h, h) if n == 2 else h

    cases = {
        "4-D input": (torch.zeros(2, 3, 4, 3), None),
        "1-D input": (torch.zeros(3), None),
        "input size": (torch.zeros(5, 2, 7), None),
        "integer input": (torch.zeros(5, 2, 3, dtype=torch.int64), None),
        "hx batch": (torch.zeros(5, 2, 3), hx(2, 3, 4)),
        "hx layers": (torch.zeros(5, 2, 3), hx(1, 2, 4)),
        "hx hidden": (torch.zeros(5, 2, 3), hx(2, 2, 5)),
        "hx rank": (torch.zeros(5, 2, 3), hx(2, 4)),
        "hx dtype": (torch.zeros(5, 2, 3), hx(2, 2, 4, dtype=torch.float64)),
    }
    for what, (x, h) in cases.items():
        ours, theirs = raised(lambda: a(x, h)), raised(lambda: b(x, h))  # noqa: B023 - called at once
        assert theirs[0] is not None, what
        assert ours[0] is theirs[0], (what, ours, theirs)
    # and the layer still works
    torch.testing.assert_close(a(torch.ones(5, 2, 3))[0], b(torch.ones(5, 2, 3))[0])


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_pickle_and_dtype(cell):
    a, b = twins(cell, 3, 4, 2, bidirectional=True)
    b.load_state_dict(a.state_dict())
    a.load_state_dict(b.state_dict())
    x = torch.randn(5, 2, 3)
    for other in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a)):
        assert type(other) is type(a)
        torch.testing.assert_close(other(x)[0], a(x)[0], rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.save(nn.Sequential(a), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)[0]
    assert type(loaded) is type(a)
    torch.testing.assert_close(loaded(x)[0], a(x)[0], rtol=0, atol=0)
    double = copy.deepcopy(a).double()
    assert double(x.double())[0].dtype == torch.float64
    back = double.to(torch.float32)
    torch.testing.assert_close(back(x)[0], a(x)[0])
