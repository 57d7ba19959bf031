"""tbptt.data (stream preparation) and tbptt.datasets (shipped data, synthetic tasks)."""

import json

import numpy as np
import pytest

from tbptt import datasets
from tbptt.data import Normalizer, Vocabulary, batchify, chunks, next_step, split

# --------------------------------------------------------------------------------------------- data


def test_batchify_streams_are_contiguous_and_remainder_dropped():
    series = np.arange(23)
    streams = batchify(series, 4)
    assert streams.shape == (5, 4) and streams.dtype == series.dtype
    assert streams.flags.c_contiguous
    for b in range(4):
        np.testing.assert_array_equal(streams[:, b], series[b * 5 : (b + 1) * 5])
    assert 20 not in streams and 22 not in streams  # the last 23 - 4*5 are dropped


def test_batchify_features():
    series = np.arange(30.0).reshape(10, 3)
    streams = batchify(series, 3)
    assert streams.shape == (3, 3, 3)
    for b in range(3):
        np.testing.assert_array_equal(streams[:, b], series[b * 3 : (b + 1) * 3])


def test_batchify_one_stream_and_list_input():
    np.testing.assert_array_equal(batchify([1, 2, 3], 1), [[1], [2], [3]])


@pytest.mark.parametrize(
    "series, num_streams, error, name",
    [
        (np.arange(10), 0, ValueError, "num_streams"),
        (np.arange(10), 2.0, TypeError, "num_streams"),
        (np.arange(3), 4, ValueError, "series"),
        (np.zeros((2, 3, 4)), 1, ValueError, "series"),
        (np.array(["a", "b"]), 1, TypeError, "series"),
        ("some text", 2, TypeError, "series"),
    ],
)
def test_batchify_bad_arguments(series, num_streams, error, name):
    with pytest.raises(error, match=name):
        batchify(series, num_streams)


def test_next_step_alignment():
    streams = batchify(np.arange(40), 4)
    x, y = next_step(streams)
    assert x.shape == y.shape == (9, 4)
    np.testing.assert_array_equal(y, x + 1)  # the next element of the same stream
    with pytest.raises(ValueError, match="streams"):
        next_step(streams[:1])


def test_split():
    train, valid = split(np.arange(10), 0.8)
    np.testing.assert_array_equal(train, np.arange(8))
    np.testing.assert_array_equal(valid, [8, 9])
    assert split("abcdefghij", 0.5) == ("abcde", "fghij")
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            split(np.arange(10), fraction)
    with pytest.raises(TypeError, match="fraction"):
        split(np.arange(10), "half")
    with pytest.raises(ValueError, match="series"):
        split([1], 0.5)


def test_chunks():
    x, y = np.arange(10).reshape(10, 1), np.arange(10.0).reshape(10, 1, 1)
    mask = np.ones((10, 1))
    parts = list(chunks(x, y, 4, mask=mask))
    assert [len(p[0]) for p in parts] == [4, 4, 2]
    assert all(len(p) == 4 and p[3] is None for p in parts)
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
    np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), mask)
    with pytest.raises(ValueError, match="resets"):
        list(chunks(x, y, 4, resets=np.zeros((9, 1), dtype=bool)))
    with pytest.raises(ValueError, match="size"):
        list(chunks(x, y, 0))


def test_vocabulary_round_trip_and_unknown_character():
    vocab = Vocabulary("hello, world\n")
    assert vocab.chars == "\n ,dehlorw" and vocab.size == len(vocab) == 10
    ids = vocab.encode("world, hello")
    assert ids.dtype == np.int64 and ids.shape == (12,) and ids.min() >= 0 and ids.max() < 10
    assert vocab.decode(ids) == "world, hello"
    assert vocab.decode(ids.reshape(3, 4)) == "world, hello"
    assert vocab.encode("").shape == (0,)
    restored = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab
    np.testing.assert_array_equal(restored.encode("hello"), vocab.encode("hello"))
    with pytest.raises(ValueError, match="'z'"):
        vocab.encode("hello z")
    with pytest.raises(ValueError, match="'é'"):  # beyond the table of code points
        vocab.encode("é")
    with pytest.raises(ValueError, match="ids"):
        vocab.decode([10])
    with pytest.raises(TypeError, match="text"):
        vocab.encode(b"hello")


def test_vocabulary_unicode():
    vocab = Vocabulary("naïve café ☕")
    assert vocab.decode(vocab.encode("café ☕")) == "café ☕"


def test_normalizer_round_trip_and_dict():
    rng = np.random.default_rng(0)
    data = rng.normal([10.0, -5.0, 0.0], [2.0, 0.5, 3.0], size=(500, 3))
    norm = Normalizer().fit(data)
    z = norm.transform(data)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(norm.inverse_transform(z), data, rtol=1e-12)
    d = json.loads(json.dumps(norm.to_dict()))
    assert isinstance(d["mean"], list) and all(isinstance(v, float) for v in d["std"])
    np.testing.assert_allclose(Normalizer.from_dict(d).transform(data), z)
    assert norm.transform(data.astype(np.float32)).dtype == np.float32
    streams = batchify(data, 5)  # (T, B, F) data uses the same statistics
    np.testing.assert_allclose(norm.transform(streams), batchify(z, 5))


def test_normalizer_1d_nan_and_errors():
    series = np.array([1.0, 2.0, np.nan, 3.0])
    norm = Normalizer().fit(series)
    assert norm.to_dict()["mean"] == 2.0 and isinstance(norm.to_dict()["std"], float)
    assert np.isnan(norm.transform(series)[2])
    assert Normalizer().fit(np.ones(4)).to_dict() == {"mean": 1.0, "std": 1.0}  # constant feature
    with pytest.raises(RuntimeError, match="fit"):
        Normalizer().transform(series)
    with pytest.raises(ValueError, match="data"):
        Normalizer().fit(np.zeros((4, 2))).transform(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="std"):
        Normalizer(0.0, 0.0)
    with pytest.raises(TypeError, match="data"):
        Normalizer().fit(["a", "b"])


# ----------------------------------------------------------------------------------------- datasets


def test_shakespeare():
    text = datasets.shakespeare()
    assert isinstance(text, str) and len(text) == 1_115_394
    assert text.startswith("First Citizen:") and Vocabulary(text).size == 65


def test_co2():
    dates, ppm = datasets.co2()
    assert dates.dtype == np.dtype("datetime64[D]") and dates.shape == ppm.shape == (2284,)
    assert dates[0] == np.datetime64("1958-03-29") and dates[-1] == np.datetime64("2001-12-29")
    assert (np.diff(dates) == np.timedelta64(7, "D")).all()
    assert ppm.dtype == np.float64 and not np.isnan(ppm).any()
    raw = datasets.co2(fill=None)[1]
    missing = np.isnan(raw)
    assert missing.sum() == 59
    np.testing.assert_array_equal(ppm[~missing], raw[~missing])
    i = np.flatnonzero(missing)[0]  # an interpolated week lies between its neighbours
    assert min(ppm[i - 1], ppm[i + 1]) <= ppm[i] <= max(ppm[i - 1], ppm[i + 1])
    with pytest.raises(ValueError, match="fill"):
        datasets.co2(fill="zero")


def test_sunspots():
    years, activity = datasets.sunspots()
    assert years.shape == activity.shape == (309,)
    assert years.dtype.kind == "i" and activity.dtype == np.float64
    np.testing.assert_array_equal(years, np.arange(1700, 2009))
    assert activity[0] == 5.0 and (activity >= 0).all()


# ---------------------------------------------------------------------------------- synthetic tasks


def test_echo():
    task = datasets.echo(T=200, B=3, delay=7, seed=1, num_symbols=4)
    assert task.x.shape == task.y.shape == task.mask.shape == (200, 3)
    assert task.x.dtype == task.y.dtype == np.int64 and task.mask.dtype == np.float64
    assert task.resets is None and task.loss == "cross_entropy"
    assert task.input_size == task.output_size == 4
    np.testing.assert_array_equal(task.y[7:], task.x[:-7])
    np.testing.assert_array_equal(task.mask[:7], 0.0)
    np.testing.assert_array_equal(task.mask[7:], 1.0)
    assert set(np.unique(task.x)) == {0, 1, 2, 3}
    # chance accuracy is 1/num_symbols: without memory, y[t] is independent of x[t]
    big = datasets.echo(T=20_000, B=4, delay=3)
    assert abs((big.y[3:] == big.x[3:]).mean() - 0.5) < 0.02


def test_adding():
    T, B, seq_len = 107, 4, 10
    task = datasets.adding(T, B, seq_len, seed=3)
    assert task.x.shape == (T, B, 2) and task.y.shape == (T, B, 1)
    assert task.mask.shape == task.resets.shape == (T, B) and task.resets.dtype == bool
    assert (task.loss, task.input_size, task.output_size) == ("mse", 2, 1)
    values, markers = task.x[..., 0], task.x[..., 1]
    assert ((0 <= values) & (values < 1)).all() and set(np.unique(markers)) <= {0.0, 1.0}
    np.testing.assert_array_equal(task.resets[:, 0], np.arange(T) % seq_len == 0)
    np.testing.assert_array_equal(task.mask[:, 0], np.arange(T) % seq_len == seq_len - 1)
    assert task.mask[100:].sum() == 0  # the partial last sequence carries no loss
    for start in range(0, 100, seq_len):
        for b in range(B):
            seq = slice(start, start + seq_len)
            where = np.flatnonzero(markers[seq, b])
            assert len(where) == 2 and where[0] < seq_len // 2 <= where[1]
            assert task.y[start + seq_len - 1, b, 0] == pytest.approx(values[seq, b][where].sum())
    np.testing.assert_array_equal(task.y[task.mask == 0], 0.0)


def test_copy():
    T, B, k, L, d = 100, 3, 5, 4, 6
    task = datasets.copy(T, B, num_symbols=k, length=L, seed=2, delay=d)
    blank, delimiter, period = k, k + 1, 2 * L + d + 1
    assert task.x.shape == task.y.shape == task.mask.shape == task.resets.shape == (T, B)
    assert task.x.dtype == task.y.dtype == np.int64
    assert (task.loss, task.input_size, task.output_size) == ("cross_entropy", k + 2, k)
    assert task.x.max() < task.input_size and task.y.max() < task.output_size
    np.testing.assert_array_equal(task.resets[:, 0], np.arange(T) % period == 0)
    for start in range(0, T, period):
        x, y, mask = (a[start : start + period] for a in (task.x, task.y, task.mask))
        assert (x[:L] < k).all()
        if len(x) == period:
            assert (x[L : L + d] == blank).all() and (x[L + d] == delimiter).all()
            assert (x[L + d + 1 :] == blank).all()
            np.testing.assert_array_equal(y[L + d + 1 :], x[:L])  # recall reproduces the sequence
            np.testing.assert_array_equal(mask[L + d + 1 :], 1.0)
            np.testing.assert_array_equal(mask[: L + d + 1], 0.0)
    assert (
        task.mask[90:].sum() == 0 and task.mask.sum() == 6 * L * B
    )  # 100 = 6*15 + 10: no recall in the tail


def test_copy_partial_episode_keeps_recall_loss():
    task = datasets.copy(
        T=12, B=1, num_symbols=3, length=4, delay=0
    )  # period 9: 3 recall steps kept
    np.testing.assert_array_equal(task.y[5:9, 0], task.x[:4, 0])
    assert task.mask[:, 0].tolist() == [0] * 5 + [1] * 4 + [0] * 3


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: datasets.echo(50, 2, 3, seed=seed),
        lambda seed: datasets.adding(50, 2, 7, seed=seed),
        lambda seed: datasets.copy(50, 2, seed=seed),
    ],
)
def test_tasks_are_deterministic(make):
    a, b, c = make(5), make(5), make(6)
    for name in ("x", "y", "mask", "resets"):
        u, v = getattr(a, name), getattr(b, name)
        assert (u is None and v is None) or np.array_equal(u, v)
    assert not np.array_equal(a.x, c.x)


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: datasets.echo(0, 2, 1), ValueError, "T"),
        (lambda: datasets.echo(10, 0, 1), ValueError, "B"),
        (lambda: datasets.echo(10, 2, -1), ValueError, "delay"),
        (lambda: datasets.echo(10, 2, 10), ValueError, "delay"),
        (lambda: datasets.echo(10, 2, 1.5), TypeError, "delay"),
        (lambda: datasets.echo(10, 2, 1, num_symbols=1), ValueError, "num_symbols"),
        (lambda: datasets.adding(10, 2, 1), ValueError, "seq_len"),
        (lambda: datasets.adding("10", 2, 5), TypeError, "T"),
        (lambda: datasets.copy(10, 2, length=0), ValueError, "length"),
        (lambda: datasets.copy(10, 2, num_symbols=1), ValueError, "num_symbols"),
        (lambda: datasets.copy(10, 2, delay=-1), ValueError, "delay"),
    ],
)
def test_task_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_task_builds_model_sizes():
    for task in (datasets.echo(20, 2, 3), datasets.adding(20, 2, 5), datasets.copy(40, 2)):
        if task.loss == "cross_entropy":
            assert task.y.ndim == 2 and task.y[task.mask > 0].max() < task.output_size
        else:
            assert task.y.shape[2] == task.output_size
        assert task.x.ndim == 2 or task.x.shape[2] == task.input_size
        assert task.description and repr(task).startswith("Task(")


# --------------------------------------------------------------------------------------------- pack


def test_pack_places_each_sequence_after_a_reset_with_its_label_on_the_last_step():
    from tbptt.data import pack, unpack

    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 2)) for n in (5, 3, 4, 2, 6)]
    packed = pack(seqs, 2, labels=np.array([0, 1, 2, 1, 0]))
    # greedy: 5 -> s0, 3 -> s1, 4 -> s1 (3 < 5), 2 -> s0 (5 < 7), 6 -> s0 (7 = 7: the first)
    np.testing.assert_array_equal(
        packed.spans, [[0, 0, 5], [1, 0, 3], [1, 3, 7], [0, 5, 7], [0, 7, 13]]
    )
    T = 13
    assert packed.x.shape == (T, 2, 2) and packed.y.shape == (T, 2) and packed.y.dtype == np.int64
    assert packed.mask.shape == packed.resets.shape == (T, 2) and packed.resets.dtype == bool
    for i, (b, start, stop) in enumerate(packed.spans):
        np.testing.assert_array_equal(packed.x[start:stop, b], seqs[i])
        assert packed.resets[start, b] and not packed.resets[start + 1 : stop, b].any()
        assert packed.mask[stop - 1, b] == 1 and packed.mask[start : stop - 1, b].sum() == 0
        assert packed.y[stop - 1, b] == [0, 1, 2, 1, 0][i]
    assert packed.mask.sum() == 5 and (packed.x[7:, 1] == 0).all()  # stream 1 padded after 7
    pieces = unpack(packed.x, packed.spans)
    assert all(np.array_equal(p, s) for p, s in zip(pieces, seqs))
    np.testing.assert_array_equal(unpack(packed.x, packed.spans, last=True), [s[-1] for s in seqs])


def test_pack_tokens_float_labels_per_step_targets_and_loss_on_all():
    from tbptt.data import pack

    tokens = [np.array([1, 2, 3]), np.array([4, 5])]
    packed = pack(tokens, 4, labels=[0.5, -1.0], loss_on="all")
    assert packed.x.shape == (3, 2) and packed.x.dtype == np.int64  # at most N streams
    assert packed.y.shape == (3, 2, 1) and packed.y[1, 1, 0] == -1.0
    np.testing.assert_array_equal(packed.mask, [[1, 1], [1, 1], [1, 0]])
    steps = pack([np.arange(4.0), np.arange(2.0)], 1, targets=[np.arange(4.0) + 1, [7.0, 8.0]])
    assert steps.x.shape == (6, 1, 1) and steps.y[:, 0, 0].tolist() == [1, 2, 3, 4, 7, 8]
    assert steps.mask.sum() == 6 and steps.resets[:, 0].tolist() == [1, 0, 0, 0, 1, 0]
    same = pack(np.zeros((3, 4, 2), np.float32), 3)  # one (N, L, I) array; no labels
    assert same.x.shape == (4, 3, 2) and same.x.dtype == np.float32 and same.y is None


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(sequences=[]), ValueError, "at least one sequence"),
        (dict(sequences=[np.zeros(0)]), ValueError, "at least one time step"),
        (dict(sequences=[np.zeros((2, 1)), np.zeros((2, 3))]), ValueError, "same features"),
        (dict(sequences=[np.zeros(2)], labels=[1, 2]), ValueError, "one per sequence"),
        (dict(sequences=[np.zeros(2)], targets=[np.zeros(3)]), ValueError, "length of sequences"),
        (dict(sequences=[np.zeros(2)], labels=[1], targets=[np.zeros(2)]), ValueError, "not both"),
        (dict(sequences=[np.zeros(2)], loss_on="first"), ValueError, "loss_on"),
        (dict(sequences=[["a"]]), TypeError, "sequences"),
        (dict(sequences=[np.zeros(2)], num_streams=0), ValueError, "num_streams"),
    ],
)
def test_pack_bad_arguments(kwargs, error, match):
    from tbptt.data import pack

    kwargs.setdefault("num_streams", 2)
    with pytest.raises(error, match=match):
        pack(**kwargs)


def test_the_labelled_sequences_example_learns_fast(one_thread):
    """examples/labelled_sequences.py: variable-length sequences packed into streams, one label
    each, learned to high accuracy in a few seconds (here a smaller run)."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "labelled_sequences.py")
    spec = importlib.util.spec_from_file_location("labelled_sequences", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--sequences", "2000", "--epochs", "6"]) > 0.95
