"""Online learning: prequential outputs of train, predict_next, tbptt.river's learners (river's
protocol where river is installed) and the `tbptt online` command on a pipe."""

import collections
import os
import subprocess
import sys

import numpy as np
import pytest

import tbptt
from tbptt.river import Classifier, Regressor, load

CELLS = ("lstm", "gru", "rnn")  # names of tbptt.model.build

# The child processes import the tbptt this test imports (a source tree with a built module in
# development, the installed package in CI), whatever PYTHONPATH says.
PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(tbptt.__file__)))


def _pair(cell, backend, k1, k2, dtype="float64"):
    """Two identical trainers."""
    return [
        tbptt.Trainer(
            tbptt.model.build(cell, 3, 8, 2, dtype=dtype, seed=1),
            k1,
            k2,
            optimizer=tbptt.Adam(1e-2),
            backend=backend,
        )
        for _ in range(2)
    ]


# ---- prequential outputs and predict_next -----------------------------------------------------


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("k1, k2", [(1, 5), (3, 2), (4, 6)])
def test_outputs_are_the_predictions_before_the_update(backend, cell, k1, k2):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(13, 2, 3)), rng.normal(size=(13, 2, 2))
    whole, stepwise = _pair(cell, backend, k1, k2)
    losses, outputs = whole.train(x, y, return_outputs=True)
    assert outputs.shape == (13, 2, 2) and outputs.dtype == np.float64
    before = []
    for t in range(13):  # test-then-train, one step at a time
        before.append(stepwise.predict_next(x[t]))
        stepwise.train(x[t : t + 1], y[t : t + 1])
    np.testing.assert_array_equal(np.array(before), outputs)
    np.testing.assert_array_equal(whole.model.flat_parameters, stepwise.model.flat_parameters)


@pytest.mark.parametrize("cell", CELLS)
def test_outputs_agree_between_backends(cell):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 2, 3)), rng.normal(size=(9, 2, 2))
    (cpp, _), (ref, _) = _pair(cell, "cpp", 2, 4), _pair(cell, "numpy", 2, 4)
    _, out_cpp = cpp.train(x, y, return_outputs=True)
    _, out_ref = ref.train(x, y, return_outputs=True)
    np.testing.assert_allclose(out_cpp, out_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cpp.predict_next(x[0]), ref.predict_next(x[0]), rtol=1e-10)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_predict_next_leaves_pending_steps_and_flush_alone(backend):
    """predict_next borrows the window's next slot, which a pending update still reads."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 2, 3)), rng.normal(size=(5, 2, 2))
    a, b = _pair("lstm", backend, 4, 4)
    a.train(x[:3], y[:3])
    b.train(x[:3], y[:3])
    for _ in range(3):
        a.predict_next(rng.normal(size=(2, 3)))
    assert a.flush() == b.flush()
    np.testing.assert_array_equal(a.model.flat_parameters, b.model.flat_parameters)
    np.testing.assert_array_equal(a.state()[0], b.state()[0])


def test_outputs_of_an_empty_call_and_tokens():
    trainer = tbptt.Trainer(tbptt.LSTM(5, 4, 5, seed=0), 2, 2, loss="cross_entropy")
    losses, outputs = trainer.train(
        np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64), return_outputs=True
    )
    assert losses.shape == (0,) and outputs.shape == (0, 3, 5)
    ids = np.array([[1, 2, 3], [4, 0, 1]])
    peek = trainer.predict_next(ids[0])
    _, outputs = trainer.train(ids, ids, return_outputs=True)
    np.testing.assert_array_equal(peek, outputs[0])


def test_predict_next_bad_input():
    trainer = tbptt.Trainer(tbptt.LSTM(3, 4, 1, seed=0), 1, 2)
    trainer.train(np.zeros((1, 2, 3)), np.zeros((1, 2, 1)))
    with pytest.raises(ValueError, match="B = 3"):
        trainer.predict_next(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="input_size=3"):
        trainer.predict_next(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="finite"):
        trainer.predict_next(np.array([[0, 0, np.nan], [0, 0, 0]]))


# ---- the learners -----------------------------------------------------------------------------


def _stream(n=200, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 10 + 3 * np.sin(t / 5) + 0.1 * rng.normal(size=n)
    return [({"a": float(np.cos(i / 5)), "b": float(i % 3)}, float(v)) for i, v in zip(t, y)]


def _prequential(learner, stream):
    predictions = []
    for x, y in stream:
        predictions.append(learner.predict_one(x))
        learner.learn_one(x, y)
    return np.array(predictions)


def test_regressor_learns_and_beats_the_last_value():
    stream = _stream(600)
    predictions = _prequential(Regressor(), stream)
    y = np.array([v for _, v in stream])
    learner_mae = np.abs(predictions[300:] - y[300:]).mean()
    last_mae = np.abs(y[299:-1] - y[300:]).mean()
    assert learner_mae < last_mae


def _mae_over_last_value(learner, values):
    """The learner's prequential MAE on a stream of values (no features) over that of
    predicting the last value, from the second value on."""
    values = np.asarray(values, dtype=float)
    predictions = _prequential(learner, [({}, float(v)) for v in values])
    return np.abs(predictions[1:] - values[1:]).mean() / np.abs(np.diff(values)).mean()


def test_regressor_beats_the_last_value_on_sunspots():
    # a short real stream (309 yearly counts): the defaults (changes as inputs, lr 3e-3) gain
    # 28% on the last value; the earlier recipe (lr 1e-3, no changes, no gate) gained 18%
    _, values = tbptt.datasets.sunspots()
    assert _mae_over_last_value(Regressor(), values) < 0.8
    earlier = Regressor(lr=1e-3, changes=False, gate=False, recompute=False)
    assert _mae_over_last_value(earlier, values) > 0.8


def test_the_gate_keeps_a_random_walk_at_the_last_value():
    # nothing in a random walk is predictable: the last value is the best forecast. On six
    # walks the gate keeps the learner within 0.1% of it; without the gate the network's noise
    # costs up to 0.5%
    walks = [50 + np.cumsum(np.random.default_rng(seed).normal(size=1000)) for seed in range(6)]
    assert max(_mae_over_last_value(Regressor(), walk) for walk in walks) < 1.001
    assert max(_mae_over_last_value(Regressor(gate=False), walk) for walk in walks) > 1.003


def test_robust_statistics_are_not_inflated_by_one_shock():
    from tbptt.river import _Stats

    values = np.random.default_rng(0).normal(size=200)
    robust, plain = _Stats(1, clip=5.0), _Stats(1)
    for v in [*values, 1000.0, *values[:20]]:
        robust.add([float(v)])
        plain.add([float(v)])
    assert 0.8 < 1 / robust.inv[0] < 1.3 and 1 / plain.inv[0] > 50
    for stats in (robust, plain):  # a checkpoint's statistics resume exactly
        again = _Stats.from_dict(stats.to_dict(), stats.clip)
        assert (again.n, again.mean, again.m2, again.inv) == (
            stats.n,
            stats.mean,
            stats.m2,
            stats.inv,
        )


def test_predict_one_does_not_advance_the_state():
    stream = _stream(60)
    once, many = Regressor(), Regressor()
    for x, y in stream:
        p = once.predict_one(x)
        for _ in range(3):
            assert many.predict_one(x) == p
            many.predict_one({"a": 5.0, "b": -1.0})
        once.learn_one(x, y)
        many.learn_one(x, y)
    np.testing.assert_array_equal(
        once.trainer_.model.flat_parameters, many.trainer_.model.flat_parameters
    )


def test_regressor_backends_agree():
    stream = _stream(80)
    cpp = _prequential(Regressor(backend="cpp"), stream)
    ref = _prequential(Regressor(backend="numpy"), stream)
    np.testing.assert_allclose(cpp, ref, rtol=1e-4)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"predict_change": False},
        {"standardize": False},
        {"previous_target": False, "cell": "gru"},
        {"changes": False, "gate": False, "clip": None},
    ],
)
def test_checkpoint_resumes_exactly(tmp_path, options):
    stream = _stream(120)
    straight = Regressor(**options)
    expected = _prequential(straight, stream)
    first = Regressor(**options)
    head = _prequential(first, stream[:70])
    first.predict_one(stream[70][0])  # a prediction in between must not matter
    first.save(tmp_path / "online.npz")
    resumed = load(tmp_path / "online.npz")
    assert type(resumed) is Regressor and resumed.k2 == first.k2
    tail = _prequential(resumed, stream[70:])
    np.testing.assert_array_equal(np.concatenate([head, tail]), expected)


def test_recompute_is_the_learners_default_and_is_kept(tmp_path):
    """The learners run the window again after each update (Trainer's recompute) unless told not
    to; the choice survives save/load, and files from before the option load without it."""
    from tbptt import checkpoint

    stream = _stream(40)
    on, off = Regressor(), Regressor(recompute=False)
    predicted = [_prequential(learner, stream) for learner in (on, off)]
    assert on.trainer_.recompute and not off.trainer_.recompute
    assert np.abs(predicted[0] - predicted[1]).max() > 1e-6  # it changes what is learnt
    on.save(tmp_path / "on.npz")
    assert load(tmp_path / "on.npz").recompute is True
    header, arrays = checkpoint.load_arrays(tmp_path / "on.npz", "trainer")
    del header["online"]["params"]["recompute"], header["trainer"]["recompute"]
    checkpoint.save_arrays(tmp_path / "old.npz", header, arrays)
    old = load(tmp_path / "old.npz")
    assert old.recompute is False and old.trainer_.recompute is False
    with pytest.raises(TypeError, match="recompute"):
        Regressor(recompute="yes")
    with pytest.raises(TypeError, match="recompute"):
        Classifier(recompute=1)


def test_an_earlier_regressor_checkpoint_is_refused_clearly(tmp_path, monkeypatch):
    from tbptt import checkpoint

    learner = Regressor()
    for x, y in _stream(10):
        learner.learn_one(x, y)
    learner.save(tmp_path / "online.npz")
    load_arrays = checkpoint.load_arrays

    def as_written_before(path, kind):  # the header of the first version had no "version"
        header, arrays = load_arrays(path, kind)
        del header["online"]["version"]
        return header, arrays

    monkeypatch.setattr(checkpoint, "load_arrays", as_written_before)
    with pytest.raises(ValueError, match="earlier tbptt"):
        load(tmp_path / "online.npz")


def test_regressor_bad_samples():
    learner = Regressor()
    with pytest.raises(ValueError, match="nothing to save"):
        learner.save("never.npz")
    learner.learn_one({"a": 1.0}, 2.0)
    # features that come and go are not errors (tests/test_features.py)
    learner.learn_one({"a": 1.0, "b": 2.0}, 1.0)
    learner.predict_one({"b": 1.0})
    assert learner.keys_ == ("a", "b") and learner.added_features == 1
    with pytest.raises(TypeError, match="x\\['a'\\] must be a real number"):
        learner.learn_one({"a": "high"}, 1.0)
    with pytest.raises(ValueError, match="x\\['a'\\] must be finite"):
        learner.predict_one({"a": float("nan")})
    with pytest.raises(ValueError, match="y must be finite"):
        learner.learn_one({"a": 1.0}, float("inf"))
    with pytest.raises(TypeError, match="x must be a dict"):
        learner.predict_one([1.0])
    with pytest.raises(TypeError, match="x\\['a'\\] must be a real number, got bool"):
        learner.learn_one({"a": True}, 1.0)
    with pytest.raises(ValueError, match="x\\['a'\\] must be finite"):
        learner.learn_one({"a": float("-inf")}, 1.0)
    with pytest.raises(TypeError, match="y must be a real number"):
        learner.learn_one({"a": 1.0}, "3")
    # other real numbers are taken as floats: an int, NumPy's scalars, a dict subclass
    learner.learn_one({"a": 1}, np.float32(2.0))
    learner.learn_one(collections.OrderedDict(a=np.float64(1.5)), 2)
    with pytest.raises(ValueError, match="cell must be"):
        Regressor(cell="transformer")
    with pytest.raises(ValueError, match="no input"):
        Regressor(previous_target=False).learn_one({}, 1.0)
    # the learner is unharmed by the refused samples
    learner.learn_one({"a": 1.0}, 2.5)
    assert np.isfinite(learner.predict_one({"a": 1.0}))


def test_regressor_survives_huge_values():
    # squares of values beyond 1e154 overflow: the statistics stay finite, the diverged updates
    # are skipped, and the learner goes on
    learner = Regressor()
    for v in [1.0, 2.0, 3.0, 1e200, -1e200, 5.0, 1e300, *range(6, 30)]:
        learner.predict_one({"a": float(v)})
        learner.learn_one({"a": float(v)}, float(v))
    assert learner.skipped_updates > 0 and np.isfinite(learner.predict_one({"a": 30.0}))


def test_classifier_learns_a_cycle(tmp_path):
    labels = ["red", "green", "blue"] * 300
    learner = Classifier(lr=1e-2)
    correct = 0
    for i, label in enumerate(labels):
        if i >= 600:
            correct += learner.predict_one({"i": 0.0}) == label
        learner.learn_one({"i": 0.0}, label)
    assert correct / 300 > 0.9
    proba = learner.predict_proba_one({"i": 0.0})
    assert set(proba) == {"red", "green", "blue"} and abs(sum(proba.values()) - 1) < 1e-6
    learner.save(tmp_path / "c.npz")
    resumed = load(tmp_path / "c.npz")
    assert resumed.predict_proba_one({"i": 0.0}) == proba
    small = Classifier(max_classes=2)
    small.learn_one({"i": 0.0}, "a")
    small.learn_one({"i": 0.0}, "b")
    with pytest.raises(ValueError, match="max_classes = 2"):
        small.learn_one({"i": 0.0}, "c")


# ---- river's protocol -------------------------------------------------------------------------


def test_river_protocol():
    river = pytest.importorskip("river")
    from river import compose, datasets, evaluate, linear_model, metrics, preprocessing, utils

    assert isinstance(Regressor(), river.base.Regressor)
    assert isinstance(Classifier(), river.base.Classifier)
    numeric = compose.Select(
        "ordinal_date", "gallup", "ipsos", "morning_consult", "rasmussen", "you_gov"
    )
    model = numeric | Regressor()
    metric = evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())
    assert 0 < metric.get() < 1.0
    clone = model.clone()
    assert clone["Regressor"].trainer_ is None and clone["Regressor"].k2 == 20
    scaled = preprocessing.StandardScaler() | Regressor(standardize=False)
    metric = evaluate.progressive_val_score(
        datasets.TrumpApproval().take(200), numeric | scaled, metrics.RMSE()
    )
    assert np.isfinite(metric.get())
    assert linear_model  # river's own learners sit beside ours in the benchmark
    assert utils


def test_river_classifier_protocol():
    pytest.importorskip("river")
    from river import datasets, evaluate, metrics

    stream = ((x, y) for x, y in datasets.Phishing())
    metric = evaluate.progressive_val_score(stream, Classifier(), metrics.Accuracy())
    assert metric.get() > 0.6


# ---- tbptt online -------------------------------------------------------------------------------


def _online(args, text, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([PYTHON_DIR, os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "tbptt.cli", "online", *args, "--out", str(tmp_path / "run")],
        input=text,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_online_on_a_pipe_with_bad_lines(tmp_path):
    values = [f"{t},{10 + np.sin(t / 4):.4f}\n" for t in range(60)]
    text = (
        "time,load\n"
        + "".join(values[:30])
        + "30,abc\n31,nan\n32\n33,\n"
        + "".join(values[30:])
        + "99,12."
    )  # the last line stops mid-way
    done = _online(["--column", "load"], text, tmp_path)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert rows[0] == "line,value,prediction,next" and len(rows) == 61
    for message in (
        "line 32: 'load' is 'abc', not a number: skipped",
        "line 33: 'load' is nan, not a finite number: skipped",
        "line 34: expected 2 fields, got 1: skipped",
        "line 35: 'load' is empty: skipped",
        "line 66: cut mid-way (no newline at the end of the input): skipped",
        "60 values used, 5 lines skipped",
    ):
        assert message in done.stderr
    lines = [row.split(",") for row in rows[1:]]
    assert all(float(a[3]) == float(b[2]) for a, b in zip(lines, lines[1:]))  # next = prediction
    assert sorted(os.listdir(tmp_path / "run")) == ["model.npz", "online.npz", "online.png"]
    assert isinstance(tbptt.load(tmp_path / "run" / "model.npz"), tbptt.LSTM)

    more = _online(["--resume", str(tmp_path / "run")], "time,load\n60,10.1\n", tmp_path)
    assert more.returncode == 0, more.stderr
    assert more.stdout.splitlines()[1].split(",")[2] == lines[-1][3]  # goes on where it stopped
    refused = _online(["--resume", str(tmp_path / "run"), "--no-recompute"], "", tmp_path)
    assert refused.returncode == 2 and "drop --no-recompute" in refused.stderr


def test_online_without_recompute(tmp_path):
    text = "load\n" + "".join(f"{10 + np.sin(t / 4):.4f}\n" for t in range(30))
    done = _online(["--column", "load", "--no-recompute"], text, tmp_path)
    assert done.returncode == 0, done.stderr
    assert load(tmp_path / "run" / "online.npz").recompute is False


def test_online_refuses_what_it_cannot_use(tmp_path):
    done = _online(["--column", "power"], "time,load\n1,2\n", tmp_path)
    assert done.returncode == 1 and "no column 'power'" in done.stderr
    done = _online(["--column", "load"], "", tmp_path)
    assert done.returncode == 1 and "empty" in done.stderr
    done = _online([], "time,load\n", tmp_path)
    assert done.returncode == 2 and "--column" in done.stderr
    done = _online(
        ["--column", "load", "--features", "time"], "time,load\n1,2\nx,3\n4,5\n", tmp_path
    )
    assert done.returncode == 0 and "line 3: 'time' is 'x', not a number: skipped" in done.stderr


def test_online_answers_each_line_as_it_arrives(tmp_path):
    """A live pipe: the prediction for a line comes before the next line is written."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([PYTHON_DIR, os.environ.get("PYTHONPATH", "")]),
    }
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tbptt.cli",
            "online",
            "--column",
            "v",
            "--out",
            str(tmp_path / "live"),
            "--quiet",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=env,
    ) as process:
        try:
            process.stdin.write("v\n")
            assert process.stdout.readline() == "line,value,prediction,next\n"
            for i in range(5):
                process.stdin.write(f"{i}\n")
                process.stdin.flush()
                assert process.stdout.readline().startswith(f"{i + 2},{i},")
            process.stdin.close()
            assert process.wait(timeout=60) == 0
        finally:
            process.kill()
    assert os.path.exists(tmp_path / "live" / "online.npz")
