"""The online learners' inputs by name: the order of a sample's keys does not matter, features
may appear later (new input columns, zero weights: nothing learnt changes) and go missing
(imputed with their running mean), and bad input is refused with the learner unchanged."""

import numpy as np
import pytest

import tbptt
from tbptt.river import Classifier, Regressor, _widened


def _samples(n, keys=("a", "b", "c"), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        x = {k: float(np.sin(i / (3 + j)) + 0.1 * rng.normal()) for j, k in enumerate(keys)}
        rows.append((x, float(np.cos(i / 4) + 0.1 * rng.normal())))
    return rows


def _shuffled(x, rng):
    keys = list(x)
    rng.shuffle(keys)
    return {k: x[k] for k in keys}


@pytest.mark.parametrize("make", [Regressor, Classifier])
def test_the_order_of_the_keys_does_not_matter(make):
    rng = np.random.default_rng(1)
    plain, shuffled = make(hidden_size=8), make(hidden_size=8)
    for i, (x, y) in enumerate(_samples(60)):
        y = y if make is Regressor else i % 3
        x2 = _shuffled(x, rng)
        if make is Regressor:
            assert plain.predict_one(x) == shuffled.predict_one(x2)
        else:
            assert plain.predict_proba_one(x) == shuffled.predict_proba_one(x2)
        plain.learn_one(x, y)
        shuffled.learn_one(x2, y)
    assert plain.keys_ == shuffled.keys_ == ("a", "b", "c")
    np.testing.assert_array_equal(
        plain.trainer_.model.flat_parameters, shuffled.trainer_.model.flat_parameters
    )


@pytest.mark.parametrize("backend", ["numpy", "cpp"])
def test_a_widened_trainer_computes_what_it_computed(backend):
    """_widened: new input columns with zero weights and zero moments; the held window gets
    zeros there. Fed zeros in the new column it goes on as the narrow one (to rounding: NumPy's
    products of another size may add in another order), and any value there changes no output
    until its weights learn."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 1, 2)), rng.normal(size=(30, 1, 1))
    narrow = tbptt.Trainer(
        tbptt.LSTM(2, 5, 1, dtype="float64", seed=0),
        1,
        6,
        backend=backend,
        optimizer=tbptt.Adam(1e-2),
        recompute=True,
    )
    narrow.train(x[:12], y[:12])
    wide = _widened(narrow, [0, 2], 3)  # old columns 0, 1 -> new 0, 2; column 1 is new
    assert (
        wide.model.input_size == 3
        and not wide.model.parameter_views["lstm.weight_ih_l0"][:, 1].any()
    )
    probe = np.insert(x[12, :, :], 1, 7.0, axis=-1)
    np.testing.assert_allclose(wide.predict_next(probe), narrow.predict_next(x[12]), rtol=1e-13)
    padded = np.insert(x, 1, 0.0, axis=-1)
    lw, ln = wide.train(padded[12:], y[12:]), narrow.train(x[12:], y[12:])
    np.testing.assert_allclose(lw, ln, rtol=1e-12)
    np.testing.assert_allclose(
        np.delete(wide.model.parameter_views["lstm.weight_ih_l0"], 1, axis=1),
        narrow.model.parameter_views["lstm.weight_ih_l0"],
        rtol=1e-12,
    )
    assert not wide.model.parameter_views["lstm.weight_ih_l0"][:, 1].any()


@pytest.mark.parametrize("make", [Regressor, Classifier])
def test_features_that_appear_later_get_columns(make):
    learner = make(hidden_size=8, backend="numpy")
    rows = _samples(80, keys=("a", "b", "c", "d"))
    for i, (x, y) in enumerate(rows):
        y = y if make is Regressor else i % 2
        if i < 20:
            x = {"b": x["b"]}
        elif i < 40:
            x = {k: x[k] for k in ("d", "b")}
        learner.learn_one(x, y)
        if i == 19:
            before = learner.predict_one({"b": 0.5, "zz": 3.0})  # unknown keys are ignored
            assert before == learner.predict_one({"b": 0.5})
    assert learner.keys_ == ("b", "d", "a", "c")  # in order of appearance, each batch sorted
    assert learner.added_features == 3 and learner.imputed_values == 0
    model = learner.trainer_.model
    assert model.input_size == len(learner._layout(4))
    assert np.abs(model.parameter_views[f"{learner.cell}.weight_ih_l0"]).min(axis=0).max() > 0
    assert np.isfinite(learner.predict_one(rows[-1][0])) if make is Regressor else True


def test_a_new_feature_changes_nothing_the_network_computes():
    """The sample that brings a new feature gives the same prediction (the output of its
    step, before its update) as the same sample without it would: zero weights."""
    rows = _samples(40, keys=("a", "b"))
    with_b, without = (
        Regressor(hidden_size=8, backend="numpy"),
        Regressor(hidden_size=8, backend="numpy"),
    )
    for x, y in rows[:30]:
        with_b.learn_one({"a": x["a"]}, y)
        without.learn_one({"a": x["a"]}, y)
    x, y = rows[30]
    with_b.learn_one(x, y)
    without.learn_one({"a": x["a"]}, y)
    assert with_b.added_features == 1
    np.testing.assert_allclose(with_b._out, without._out, rtol=1e-6)  # the step's output, before
    # its update: the same (to the rounding of a product one column wider)


@pytest.mark.parametrize(
    "make", [lambda: Regressor(changes=False, hidden_size=8), lambda: Classifier(hidden_size=8)]
)
def test_missing_features_are_their_running_mean(make):
    learner = make()
    rows = _samples(60)
    for i, (x, y) in enumerate(rows[:40]):
        learner.learn_one(x, y if isinstance(learner, Regressor) else i % 3)
    x = rows[40][0]
    infer = learner.predict_one if isinstance(learner, Regressor) else learner.predict_proba_one
    mean_c = learner._stats.mean[learner.keys_.index("c")]
    assert infer({"a": x["a"], "b": x["b"]}) == infer({**x, "c": mean_c})
    for i, (x, y) in enumerate(rows[40:]):
        learner.learn_one({"a": x["a"]}, y if isinstance(learner, Regressor) else i % 3)
    assert learner.imputed_values == 2 * 20 and learner.added_features == 0
    assert learner._stats.n[:3] == [60, 40, 40]  # the missing ones' statistics stand still


def test_a_regressor_survives_radically_disappearing_features():
    learner = Regressor(hidden_size=8)
    for i, (x, y) in enumerate(_samples(120)):
        if i >= 40:
            x = {} if i % 7 == 0 else {"c": x["c"]}
        learner.learn_one(x, y)
        assert np.isfinite(learner.predict_one(x))
    assert learner.imputed_values > 150 and learner.skipped_updates == 0


def test_counts_survive_save_and_pickle(tmp_path):
    import pickle

    learner = Regressor(hidden_size=8)
    for i, (x, y) in enumerate(_samples(30)):
        learner.learn_one({"a": x["a"]} if i < 10 else ({"b": x["b"]} if i % 2 else x), y)
    learner.save(tmp_path / "r.npz")
    twins = [tbptt.river.load(tmp_path / "r.npz"), pickle.loads(pickle.dumps(learner))]
    for twin in twins:
        assert (twin.keys_, twin.added_features, twin.imputed_values) == (
            learner.keys_,
            learner.added_features,
            learner.imputed_values,
        )
        assert twin._stats.n == learner._stats.n
    for x, y in _samples(10, seed=3):
        for twin in twins:
            assert twin.predict_one(x) == learner.predict_one(x)
            twin.learn_one(x, y)
        learner.learn_one(x, y)


# ---- bad input: refused, naming it, the learner unchanged -------------------------------------

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m: m.learn_one({"a": NAN, "b": 1.0}, 1.0), ValueError, r"x\['a'\] must be finite"),
        (
            lambda m: m.learn_one({"a": 1.0, "new": INF}, 1.0),
            ValueError,
            r"x\['new'\] must be finite",
        ),
        (
            lambda m: m.learn_one({"a": 1.0, "new": "x"}, 1.0),
            TypeError,
            r"x\['new'\] must be a real",
        ),
        (lambda m: m.learn_one([1.0], 1.0), TypeError, "x must be a dict"),
        (lambda m: m.learn_one({"a": 1.0}, NAN), ValueError, "y must be finite"),
        (lambda m: m.learn_one({"a": 1.0}, "2"), TypeError, "y must be a real number"),
        (lambda m: m.learn_one({"a": 1.0}, None), TypeError, "y must be a real number"),
        (lambda m: m.predict_one({"a": -INF}), ValueError, r"x\['a'\] must be finite"),
    ],
)
@pytest.mark.parametrize("when", [0, 12])
def test_a_refused_regressor_call_changes_nothing(call, error, match, when):
    rows = _samples(30, keys=("a", "b"))
    learner, twin = Regressor(hidden_size=8), Regressor(hidden_size=8)
    for i, (x, y) in enumerate(rows):
        if i == when:
            with pytest.raises(error, match=match):
                call(learner)
        assert learner.predict_one(x) == twin.predict_one(x)
        learner.learn_one(x, y)
        twin.learn_one(x, y)
    assert learner.keys_ == twin.keys_ == ("a", "b") and learner.added_features == 0
    np.testing.assert_array_equal(
        learner.trainer_.model.flat_parameters, twin.trainer_.model.flat_parameters
    )


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m: m.learn_one({"a": 1.0}, [1]), TypeError, "y must be a label"),
        (lambda m: m.learn_one({"a": 1.0}, None), TypeError, "y must be a label"),
        (lambda m: m.learn_one({"a": 1.0}, "fourth"), ValueError, "max_classes = 3"),
        (
            lambda m: m.learn_one({"a": True}, "x"),
            TypeError,
            r"x\['a'\] must be a real number, got bool",
        ),
        (lambda m: m.predict_proba_one({"a": NAN}), ValueError, r"x\['a'\] must be finite"),
    ],
)
@pytest.mark.parametrize("when", [0, 12])
def test_a_refused_classifier_call_changes_nothing(call, error, match, when):
    if when == 0 and "max_classes" in match:
        pytest.skip("no label is known yet: a fourth is a first")
    rows = _samples(30, keys=("a", "b"))
    learner, twin = (
        Classifier(hidden_size=8, max_classes=3),
        Classifier(hidden_size=8, max_classes=3),
    )
    for i, (x, _) in enumerate(rows):
        if i == when:
            with pytest.raises(error, match=match):
                call(learner)
        assert learner.predict_proba_one(x) == twin.predict_proba_one(x)
        learner.learn_one(x, ("x", "y", "z")[i % 3])
        twin.learn_one(x, ("x", "y", "z")[i % 3])
    assert learner.classes_ == twin.classes_ == ["x", "y", "z"]
    np.testing.assert_array_equal(
        learner.trainer_.model.flat_parameters, twin.trainer_.model.flat_parameters
    )


# ---- river's mini-batch protocol: pandas frames -------------------------------------------------


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_learn_many_and_predict_many(backend):
    pd = pytest.importorskip("pandas")
    rows = _samples(60)
    frame = pd.DataFrame([x for x, _ in rows[:40]])
    frame.loc[5, "b"] = np.nan  # a missing value
    rows[5][0].pop("b")
    one, many = Regressor(hidden_size=8, backend=backend), Regressor(hidden_size=8, backend=backend)
    for x, y in rows[:40]:
        one.learn_one(x, y)
    many.learn_many(frame, pd.Series([y for _, y in rows[:40]]))
    np.testing.assert_array_equal(
        one.trainer_.model.flat_parameters, many.trainer_.model.flat_parameters
    )
    assert many.imputed_values == 1
    test = pd.DataFrame([x for x, _ in rows[40:]], index=range(100, 120))
    predicted = many.predict_many(test)
    assert list(predicted.index) == list(range(100, 120))
    np.testing.assert_allclose(
        predicted.to_numpy(), [one.predict_one(x) for x, _ in rows[40:]], rtol=1e-6
    )
    assert many.predict_one(rows[40][0]) == one.predict_one(rows[40][0])  # nothing advanced


def test_classifier_predict_proba_many():
    pd = pytest.importorskip("pandas")
    rows = _samples(50)
    learner = Classifier(hidden_size=8)
    assert learner.predict_proba_many(pd.DataFrame([rows[0][0]])).shape == (1, 0)
    learner.learn_many(pd.DataFrame([x for x, _ in rows[:40]]), pd.Series(["u", "v"] * 20))
    proba = learner.predict_proba_many(pd.DataFrame([x for x, _ in rows[40:]]))
    assert list(proba.columns) == ["u", "v"]
    for (x, _), (_, row) in zip(rows[40:], proba.iterrows()):
        one = learner.predict_proba_one(x)
        np.testing.assert_allclose([row["u"], row["v"]], [one["u"], one["v"]], rtol=1e-5)
    labels = learner.predict_many(pd.DataFrame([x for x, _ in rows[40:]]))
    assert list(labels) == [learner.predict_one(x) for x, _ in rows[40:]]
