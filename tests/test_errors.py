"""Bad input (docs/semantics.md §4): a ValueError or TypeError whose message names the argument;
nothing crashes and a refused call changes nothing. Also model files: save / load round trip and bad
files."""

import json
import os
import zipfile

import numpy as np
import pytest

import tbptt

I, H, O, B, T = 3, 4, 2, 2, 5
BACKENDS = ["cpp", "numpy"]


def model32(**kw):
    return tbptt.LSTM(I, H, O, seed=0, **kw)


def arr(*shape, value=0.0, dtype=np.float64):
    return np.full(shape, value, dtype=dtype)


STRINGS = np.full((T, B, I), "a")
OBJECTS = np.full((T, B, I), None, dtype=object)


# ---- constructors --------------------------------------------------------------------------------

LSTM_CASES = [
    # (kwargs overriding LSTM(3, 4, 2), exception, the name the message must hold)
    (dict(input_size=0), ValueError, "input_size"),
    (dict(input_size=2.5), TypeError, "input_size"),
    (dict(input_size="3"), TypeError, "input_size"),
    (dict(input_size=True), TypeError, "input_size"),
    (dict(hidden_size=-1), ValueError, "hidden_size"),
    (dict(hidden_size=None), TypeError, "hidden_size"),
    (dict(output_size=0), ValueError, "output_size"),
    (dict(output_size=1.0), TypeError, "output_size"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(num_layers="2"), TypeError, "num_layers"),
    (dict(dtype="float16"), (ValueError, TypeError), "dtype"),
    (dict(dtype="int32"), (ValueError, TypeError), "dtype"),
    (dict(dtype=np.int64), (ValueError, TypeError), "dtype"),
    (dict(dtype="nonsense"), (ValueError, TypeError), "dtype"),
    (dict(dtype=5), (ValueError, TypeError), "dtype"),
    (dict(dtype=object), (ValueError, TypeError), "dtype"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(seed="0"), TypeError, "seed"),
    (dict(seed=-1), (ValueError, TypeError), "seed"),
    (dict(forget_bias=float("nan")), ValueError, "forget_bias"),
    (dict(forget_bias=float("inf")), ValueError, "forget_bias"),
    (dict(forget_bias="1"), TypeError, "forget_bias"),
    (dict(forget_bias=None), TypeError, "forget_bias"),
]


@pytest.mark.parametrize("kwargs,exc,name", LSTM_CASES, ids=[repr(c[0]) for c in LSTM_CASES])
def test_lstm_arguments(kwargs, exc, name):
    args = dict(input_size=I, hidden_size=H, output_size=O)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        tbptt.LSTM(**args)


OPT_CASES = [
    (lambda: tbptt.SGD(), TypeError, "lr"),
    (lambda: tbptt.SGD(lr=-0.1), ValueError, "lr"),
    (lambda: tbptt.SGD(lr=float("nan")), ValueError, "lr"),
    (lambda: tbptt.SGD(lr="0.1"), TypeError, "lr"),
    (lambda: tbptt.SGD(lr=0.1, momentum=-0.5), ValueError, "momentum"),
    (lambda: tbptt.SGD(lr=0.1, momentum=float("inf")), ValueError, "momentum"),
    (lambda: tbptt.SGD(lr=0.1, momentum=None), TypeError, "momentum"),
    (lambda: tbptt.SGD(lr=0.1, weight_decay=-1e-4), ValueError, "weight_decay"),
    (lambda: tbptt.AdamW(weight_decay=float("nan")), ValueError, "weight_decay"),
    (lambda: tbptt.AdamW(weight_decay="0.1"), TypeError, "weight_decay"),
    (lambda: tbptt.AdamW(lr=-1.0), ValueError, "lr"),
    (lambda: tbptt.Adam(lr=-1e-3), ValueError, "lr"),
    (lambda: tbptt.Adam(lr=[1e-3]), TypeError, "lr"),
    (lambda: tbptt.Adam(betas=(1.0, 0.999)), ValueError, "betas"),
    (lambda: tbptt.Adam(betas=(0.9, -0.1)), ValueError, "betas"),
    (lambda: tbptt.Adam(betas=(0.9, float("nan"))), ValueError, "betas"),
    (lambda: tbptt.Adam(betas=(0.9,)), TypeError, "betas"),
    (lambda: tbptt.Adam(betas=0.9), TypeError, "betas"),
    (lambda: tbptt.Adam(betas=("a", 0.9)), TypeError, "betas"),
    (lambda: tbptt.Adam(eps=-1e-8), ValueError, "eps"),
    (lambda: tbptt.Adam(eps=float("nan")), ValueError, "eps"),
    (lambda: tbptt.Adam(eps="1e-8"), TypeError, "eps"),
]


@pytest.mark.parametrize("make,exc,name", OPT_CASES, ids=[f"opt{i}" for i in range(len(OPT_CASES))])
def test_optimizer_arguments(make, exc, name):
    with pytest.raises(exc, match=name):
        make()


TRAINER_CASES = [
    (dict(model="lstm"), TypeError, "model"),
    (dict(k1=0), ValueError, "k1"),
    (dict(k1=-3), ValueError, "k1"),
    (dict(k1=2.5), TypeError, "k1"),
    (dict(k1=4.0), TypeError, "k1"),
    (dict(k1="4"), TypeError, "k1"),
    (dict(k1=None), TypeError, "k1"),
    (dict(k2=0), ValueError, "k2"),
    (dict(k2=1.5), TypeError, "k2"),
    (dict(k2=np.float64(3)), TypeError, "k2"),
    (dict(loss="mae"), ValueError, "loss"),
    (dict(loss=None), (ValueError, TypeError), "loss"),
    (dict(optimizer="adam"), TypeError, "optimizer"),
    (dict(optimizer=tbptt.Adam), TypeError, "optimizer"),
    (dict(clip_norm=0), ValueError, "clip_norm"),
    (dict(clip_norm=-1.0), ValueError, "clip_norm"),
    (dict(clip_norm=float("nan")), ValueError, "clip_norm"),
    (dict(clip_norm=float("inf")), ValueError, "clip_norm"),
    (dict(clip_norm="1"), TypeError, "clip_norm"),
    (dict(backend="cuda"), ValueError, "backend"),
    (dict(backend=None), (ValueError, TypeError), "backend"),
]


@pytest.mark.parametrize("kwargs,exc,name", TRAINER_CASES, ids=[repr(c[0]) for c in TRAINER_CASES])
def test_trainer_arguments(kwargs, exc, name):
    args = dict(model=model32(), k1=3, k2=3)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        tbptt.Trainer(**args)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "value,exc",
    [(-0.1, ValueError), (float("nan"), ValueError), ("0.1", TypeError), (None, TypeError)],
)
def test_trainer_lr_setter(backend, value, exc):
    trainer = tbptt.Trainer(model32(), 3, 3, backend=backend)
    with pytest.raises(exc, match="lr"):
        trainer.lr = value
    assert trainer.lr == 1e-3


@pytest.mark.parametrize(
    "n,exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError)]
)
def test_set_num_threads(n, exc):
    with pytest.raises(exc, match="n "):
        tbptt.set_num_threads(n)


# ---- train ---------------------------------------------------------------------------------------


def good(loss="mse"):
    x = np.random.default_rng(0).normal(size=(T, B, I))
    y = (
        np.zeros((T, B), np.int64)
        if loss == "cross_entropy"
        else np.random.default_rng(1).normal(size=(T, B, O))
    )
    return dict(x=x, y=y, mask=np.ones((T, B)), resets=np.zeros((T, B), bool))


def bad(loss="mse", **changes):
    args = good(loss)
    args.update(changes)
    return args


def nan_at(a, value=np.nan):
    a = a.copy()
    a.flat[a.size // 2] = value
    return a


G = good()
TRAIN_CASES = [
    # (loss, train kwargs, exception, name in the message)
    ("mse", dict(x=arr(T, B, I + 1)), ValueError, "x"),
    ("mse", dict(x=arr(T, B)), ValueError, "x"),  # 2-D floats are not tokens
    ("mse", dict(x=arr(T * B * I)), ValueError, "x"),
    ("mse", dict(x=arr(T, B, I, 1)), ValueError, "x"),
    ("mse", dict(x=np.float64(1.0)), ValueError, "x"),
    ("mse", dict(x=STRINGS), TypeError, "x"),
    ("mse", dict(x=OBJECTS), TypeError, "x"),
    ("mse", dict(x=arr(T, B, I, dtype=complex)), TypeError, "x"),
    ("mse", dict(x=[[[1.0, 2.0, 3.0]], [[1.0, 2.0]]]), TypeError, "x"),  # ragged
    ("mse", dict(x=nan_at(G["x"])), ValueError, "x"),
    ("mse", dict(x=nan_at(G["x"], np.inf)), ValueError, "x"),
    ("mse", dict(x=nan_at(G["x"], -np.inf)), ValueError, "x"),
    ("mse", dict(x=nan_at(G["x"], 1e300)), ValueError, "x"),  # not finite as float32
    ("mse", dict(x=arr(T, B, value=I, dtype=np.int64)), ValueError, "x"),  # token id = I
    ("mse", dict(x=arr(T, B, value=-1, dtype=np.int64)), ValueError, "x"),
    ("mse", dict(x=arr(T, B, value=2**40, dtype=np.uint64)), ValueError, "x"),
    (
        "mse",
        dict(x=arr(T, 0, I), y=arr(T, 0, O), mask=arr(T, 0), resets=arr(T, 0, dtype=bool)),
        ValueError,
        r"B = 0|x\.shape\[1\]",
    ),
    ("mse", dict(y=arr(T, B, O + 1)), ValueError, "y"),
    ("mse", dict(y=arr(T + 1, B, O)), ValueError, "y"),
    ("mse", dict(y=arr(T, B)), ValueError, "y"),
    ("mse", dict(y=np.full((T, B, O), "a")), TypeError, "y"),
    ("mse", dict(y=nan_at(G["y"])), ValueError, "y"),
    ("mse", dict(y=nan_at(G["y"], np.inf)), ValueError, "y"),
    ("mse", dict(y=nan_at(G["y"], 1e300)), ValueError, "y"),
    ("cross_entropy", dict(y=arr(T, B)), TypeError, "y"),  # float class ids
    ("cross_entropy", dict(y=arr(T, B, dtype=bool)), TypeError, "y"),
    ("cross_entropy", dict(y=arr(T, B, value=O, dtype=np.int64)), ValueError, "y"),
    ("cross_entropy", dict(y=arr(T, B, value=-1, dtype=np.int64)), ValueError, "y"),
    ("cross_entropy", dict(y=arr(T, B, O, dtype=np.int64)), ValueError, "y"),
    ("cross_entropy", dict(y=arr(T, B + 1, dtype=np.int64)), ValueError, "y"),
    ("mse", dict(mask=arr(T, B + 1)), ValueError, "mask"),
    ("mse", dict(mask=arr(T, B, 1)), ValueError, "mask"),
    ("mse", dict(mask=nan_at(np.ones((T, B)), -0.5)), ValueError, "mask"),
    ("mse", dict(mask=arr(T, B, value=-1, dtype=np.int64)), ValueError, "mask"),
    ("mse", dict(mask=nan_at(np.ones((T, B)))), ValueError, "mask"),
    ("mse", dict(mask=nan_at(np.ones((T, B)), np.inf)), ValueError, "mask"),
    ("mse", dict(mask=nan_at(np.ones((T, B)), 1e300)), ValueError, "mask"),
    ("mse", dict(mask=np.full((T, B), "1")), TypeError, "mask"),
    ("mse", dict(resets=arr(T + 1, B, dtype=bool)), ValueError, "resets"),
    ("mse", dict(resets=arr(T, B)), TypeError, "resets"),  # floats
    ("mse", dict(resets=arr(T, B, value=2, dtype=np.int64)), ValueError, "resets"),
    ("mse", dict(resets=arr(T, B, value=-1, dtype=np.int64)), ValueError, "resets"),
    ("mse", dict(resets=np.full((T, B), "x")), TypeError, "resets"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "loss,changes,exc,name",
    TRAIN_CASES,
    ids=[f"{c[0]}-{'-'.join(c[1])}{i}" for i, c in enumerate(TRAIN_CASES)],
)
def test_train_arguments(backend, loss, changes, exc, name):
    """A refused call raises naming the argument and changes nothing: the trainer goes on as if
    the call had not been made."""
    trainer = tbptt.Trainer(model32(), 2, 3, loss=loss, backend=backend)
    first = good(loss)
    trainer.train(first["x"][:3], first["y"][:3])  # B fixed, one update, one step pending
    before = (
        trainer.model.flat_parameters.copy(),
        trainer.pending_steps,
        trainer.updates,
        [s.copy() for s in trainer.state()],
    )
    with pytest.raises(exc, match=name):
        trainer.train(**bad(loss, **changes))
    assert np.array_equal(trainer.model.flat_parameters, before[0])
    assert (trainer.pending_steps, trainer.updates) == before[1:3]
    assert all(np.array_equal(a, b) for a, b in zip(trainer.state(), before[3]))
    assert len(trainer.train(**good(loss))) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_refuses_B_zero_and_a_changed_B(backend):
    trainer = tbptt.Trainer(model32(), 2, 2, backend=backend)
    with pytest.raises(ValueError, match=r"B = 0|x\.shape\[1\]"):
        trainer.train(arr(3, 0, I), arr(3, 0, O))
    trainer.train(arr(3, 2, I), arr(3, 2, O))
    with pytest.raises(ValueError, match=r"B = |x\.shape\[1\]"):
        trainer.train(arr(3, 3, I), arr(3, 3, O))
    with pytest.raises(ValueError, match=r"B = |x\.shape\[1\]"):
        trainer.train(arr(3, 1, I, value=0, dtype=np.int64)[..., 0], arr(3, 1, O))


def test_float64_model_accepts_what_float32_refuses():
    """1e300 is finite in float64: a float64 model takes it (the float32 case is refused above)."""
    model = tbptt.LSTM(I, H, O, dtype="float64", seed=0)
    out, _ = model.predict(arr(2, 1, I, value=1e300))
    assert np.isfinite(out).all()


# ---- predict ------------------------------------------------------------------------------------

S = (1, B, H)
PREDICT_CASES = [
    (dict(x=arr(T, B, I - 1)), ValueError, "x"),
    (dict(x=arr(T, B)), ValueError, "x"),
    (dict(x=STRINGS), TypeError, "x"),
    (dict(x=OBJECTS), TypeError, "x"),
    (dict(x=nan_at(arr(T, B, I))), ValueError, "x"),
    (dict(x=nan_at(arr(T, B, I), np.inf)), ValueError, "x"),
    (dict(x=nan_at(arr(T, B, I), 1e300)), ValueError, "x"),
    (dict(x=arr(T, B, value=I, dtype=np.int32)), ValueError, "x"),
    (dict(x=arr(T, B, value=-2, dtype=np.int8)), ValueError, "x"),
    (dict(x=arr(T, 0, I)), ValueError, r"B = 0|x\.shape\[1\]"),
    (dict(x=arr(0, 0, I)), ValueError, r"B = 0|x\.shape\[1\]"),
    (dict(state=arr(*S)), TypeError, "state"),
    (dict(state=(arr(*S),)), TypeError, "state"),
    (dict(state=(arr(*S), arr(*S), arr(*S))), TypeError, "state"),
    (dict(state=(arr(1, B + 1, H), arr(*S))), ValueError, "state"),
    (dict(state=(arr(*S), arr(2, B, H))), ValueError, "state"),
    (dict(state=(arr(B, H), arr(B, H))), ValueError, "state"),
    (dict(state=(np.full(S, "a"), arr(*S))), TypeError, "state"),
    (dict(state=(arr(*S), np.full(S, None, dtype=object))), TypeError, "state"),
    (dict(state=(nan_at(arr(*S)), arr(*S))), ValueError, "state"),
    (dict(state=(arr(*S), nan_at(arr(*S), np.inf))), ValueError, "state"),
    (dict(state=(arr(*S), nan_at(arr(*S), 1e300))), ValueError, "state"),
]


@pytest.mark.parametrize(
    "kwargs,exc,name", PREDICT_CASES, ids=[f"predict{i}" for i in range(len(PREDICT_CASES))]
)
def test_predict_arguments(kwargs, exc, name):
    args = dict(x=arr(T, B, I), state=None)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        model32().predict(**args)


# ---- load_state_dict -----------------------------------------------------------------------------


def sd_with(name, value):
    sd = model32(num_layers=2).state_dict()
    sd[name] = value
    return sd


def sd_without(name):
    sd = model32(num_layers=2).state_dict()
    del sd[name]
    return sd


W = "lstm.weight_hh_l1"
SD_CASES = [
    ([1, 2], TypeError, "state_dict"),
    (None, TypeError, "state_dict"),
    (sd_without(W), ValueError, W),
    (sd_without("head.bias"), ValueError, "head.bias"),
    (sd_with("lstm.weight_hh_l2", arr(4 * H, H)), ValueError, "lstm.weight_hh_l2"),
    (sd_with(W, arr(4 * H, H + 1)), ValueError, W),
    (sd_with(W, arr(4 * H * H)), ValueError, W),
    (sd_with("head.bias", arr(O, 1)), ValueError, "head.bias"),
    (sd_with(W, np.full((4 * H, H), "a")), TypeError, W),
    (sd_with(W, None), TypeError, W),
    (sd_with(W, nan_at(arr(4 * H, H))), ValueError, W),
    (sd_with(W, nan_at(arr(4 * H, H), -np.inf)), ValueError, W),
    (sd_with(W, nan_at(arr(4 * H, H), 1e300)), ValueError, W),  # not finite as float32
]


@pytest.mark.parametrize(
    "sd,exc,name", SD_CASES, ids=[f"state_dict{i}" for i in range(len(SD_CASES))]
)
def test_load_state_dict_arguments(sd, exc, name):
    model = model32(num_layers=2)
    before = model.state_dict()
    with pytest.raises(exc, match=name.replace(".", r"\.")):
        model.load_state_dict(sd)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # a bad dict changes nothing


# ---- inputs the C++ engine may refuse: refused naming the argument, never a crash ---------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_tokens_then_features_works_or_is_refused_naming_x(backend):
    """A 2-D integer x is tokens, a 3-D x features (docs/semantics.md §2): a stream may switch
    between calls. An engine may refuse that with a ValueError naming x; it must not crash or change
    anything."""
    x_tok, x_feat = arr(2, B, value=1, dtype=np.int64), np.zeros((2, B, I))
    x_feat[:, :, 1] = 1.0  # the same one-hot inputs
    trainer = tbptt.Trainer(model32(), 2, 2, backend=backend)
    trainer.train(x_tok, arr(2, B, O))
    before = trainer.model.flat_parameters.copy()
    try:
        trainer.train(x_feat, arr(2, B, O))
    except ValueError as error:
        assert "x" in str(error)
        assert np.array_equal(trainer.model.flat_parameters, before) and trainer.updates == 1
    else:
        assert trainer.updates == 2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [2**31 - 1, 2**31, 2**63])
def test_huge_k_works_or_is_refused_naming_it(backend, k):
    """k1 = k2 = a huge number ("never truncate"): train either works (as full BPTT over what it
    has seen) or raises ValueError / TypeError / MemoryError naming k1 or k2."""
    try:
        trainer = tbptt.Trainer(model32(), k, k, backend=backend)
        trainer.train(arr(3, B, I), arr(3, B, O))
    except (ValueError, TypeError, MemoryError) as error:
        assert "k1" in str(error).split("\n")[0] or "k2" in str(error).split("\n")[0], str(error)[
            :300
        ]
    else:
        assert trainer.pending_steps == 3 and isinstance(trainer.flush(), float)


# ---- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip(tmp_path, dtype):
    model = tbptt.LSTM(I, H, O, num_layers=2, dtype=dtype, seed=3, forget_bias=1.0)
    tbptt.Trainer(model, 2, 2).train(
        np.ones((4, B, I)), np.ones((4, B, O))
    )  # not the seed's values
    path = tmp_path / "model.npz"
    model.save(path)
    model.save(str(path))  # overwrites, atomically
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left behind
    loaded = tbptt.load(path)
    assert isinstance(loaded, tbptt.LSTM) and loaded.config() == model.config()
    assert loaded.dtype == np.dtype(dtype)
    a, b = model.state_dict(), loaded.state_dict()
    assert list(a) == list(b) and all(
        np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a
    )
    x = np.random.default_rng(0).normal(size=(6, B, I))
    assert np.array_equal(model.predict(x)[0], loaded.predict(x)[0])
    with zipfile.ZipFile(path) as z:  # no pickle inside
        assert all(not n.endswith(".pkl") for n in z.namelist())
    np.load(path, allow_pickle=False)["__header__"]


def saved(tmp_path):
    path = tmp_path / "model.npz"
    model32(num_layers=2).save(path)
    return path


@pytest.mark.parametrize("keep", [0, 1, 10, 100, 0.5, -1])
def test_load_truncated_file(tmp_path, keep):
    path = saved(tmp_path)
    data = path.read_bytes()
    n = {0.5: len(data) // 2, -1: len(data) - 1}.get(keep, keep)
    path.write_bytes(data[:n])
    with pytest.raises(ValueError):
        tbptt.load(path)


def write_npz(path, header, arrays):
    blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    np.savez(path, __header__=blob, **arrays)


def foreign_text(path):
    path.write_text("hello, this is not a model\n")


def foreign_npy(path):
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


def foreign_npz(path):
    np.savez(path, weights=np.zeros(3))


def foreign_zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hi")


def foreign_header(path):
    write_npz(path, {"format": "something-else", "version": 1, "kind": "model"}, {})


def header_not_an_object(path):
    write_npz(path, ["tbptt", 1], model32().state_dict())


def header_not_json(path):
    np.savez(path, __header__=np.frombuffer(b"\xff\xfe{", dtype=np.uint8))


def header_without_config(path):
    write_npz(path, {"format": "tbptt", "version": 1, "kind": "model"}, model32().state_dict())


def header_with_bad_config(path):
    write_npz(
        path,
        {
            "format": "tbptt",
            "version": 1,
            "kind": "model",
            "config": {"input_size": I, "colour": "red"},
        },
        model32().state_dict(),
    )


def missing_parameter(path):
    sd = model32().state_dict()
    del sd["head.weight"]
    write_npz(
        path, {"format": "tbptt", "version": 1, "kind": "model", "config": model32().config()}, sd
    )


BAD_FILES = [
    foreign_text,
    foreign_npy,
    foreign_npz,
    foreign_zip,
    foreign_header,
    header_not_json,
    header_not_an_object,
    header_without_config,
    header_with_bad_config,
    missing_parameter,
]


@pytest.mark.parametrize("make", BAD_FILES, ids=[f.__name__ for f in BAD_FILES])
def test_load_non_tbptt_or_damaged_file(tmp_path, make):
    path = tmp_path / "file.npz"
    make(path)
    with pytest.raises(ValueError):
        tbptt.load(path)


@pytest.mark.parametrize("version", [2, 99])
def test_load_newer_version(tmp_path, version):
    model = model32()
    path = tmp_path / "future.npz"
    write_npz(
        path,
        {"format": "tbptt", "version": version, "kind": "model", "config": model.config()},
        model.state_dict(),
    )
    with pytest.raises(ValueError, match="version|newer"):
        tbptt.load(path)
    write_npz(
        path,
        {"format": "tbptt", "version": 1, "kind": "model", "config": model.config()},
        model.state_dict(),
    )
    assert tbptt.load(path).config() == model.config()  # the same file at version 1 loads


def test_optimizers_round_trip_through_their_config():
    for opt in (
        tbptt.SGD(0.1, momentum=0.5, weight_decay=0.01),
        tbptt.Adam(0.01, (0.8, 0.9), 1e-6),
        tbptt.AdamW(0.01, (0.8, 0.9), 1e-6, weight_decay=0.2),
    ):
        again = tbptt.optim.from_config(opt.config())
        assert (
            type(again) is type(opt) and again.config() == opt.config() and repr(again) == repr(opt)
        )
    assert tbptt.optim.from_config({"name": "sgd", "lr": 0.1, "momentum": 0.0}).weight_decay == 0.0


def test_a_batch_first_array_is_named_when_the_shape_can_tell():
    """The batch-first trap: once B is known (the trainer's first call, a state), an x whose first
    axis is that B and whose second is not gets a hint to swap the axes."""
    model = tbptt.LSTM(3, 4, 2, seed=0)
    trainer = tbptt.Trainer(model, 5, 5)
    rng = np.random.default_rng(0)
    trainer.train(rng.normal(size=(20, 8, 3)), rng.normal(size=(20, 8, 2)))  # T = 20, B = 8
    batch_first = rng.normal(size=(8, 20, 3))
    with pytest.raises(
        ValueError,
        match=r"x has B = 20 .* B = 8 .*is x batch-first, \(B, T, \.\.\.\)\? "
        r".*x\.swapaxes\(0, 1\)",
    ):
        trainer.train(batch_first, rng.normal(size=(8, 20, 2)))
    with pytest.raises(ValueError, match=r"x has B = 6 streams") as error:  # no hint: not B first
        trainer.train(rng.normal(size=(20, 6, 3)), rng.normal(size=(20, 6, 2)))
    assert "batch-first" not in str(error.value)
    _, state = model.predict(rng.normal(size=(20, 8, 3)))
    with pytest.raises(ValueError, match=r"state\[0\] \(h\) must have shape .*is x batch-first"):
        model.predict(batch_first, state)
