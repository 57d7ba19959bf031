"""Learning-rate schedules in fit, and keeping the best model (restore_best, patience)."""

import math

import numpy as np
import pytest

import tbptt
from tbptt import schedules


def test_schedule_shapes():
    cosine = tbptt.Schedule("cosine", warmup=0.1, final=0.1)
    assert cosine(0.0) == 0.0 and cosine(0.05) == pytest.approx(0.5) and cosine(0.1) == 1.0
    assert cosine(0.55) == pytest.approx(0.1 + 0.9 * 0.5) and cosine(1.0) == pytest.approx(0.1)
    assert cosine(2.0) == pytest.approx(0.1) and cosine(-1.0) == 0.0  # clamped
    linear = tbptt.Schedule("linear")
    assert [linear(p) for p in (0, 0.25, 1)] == [1.0, 0.75, 0.0]
    assert tbptt.Schedule("constant", warmup=0.5)(0.25) == 0.5
    assert tbptt.Schedule("constant", warmup=0.5)(0.75) == 1.0


def test_progress_is_the_larger_share_of_steps_and_time():
    assert schedules.progress(10, 100) == 0.1
    assert schedules.progress(10, 100, seconds=30, max_time=60) == 0.5
    assert schedules.progress(90, 100, seconds=30, max_time=60) == 0.9
    assert schedules.progress(10, 100, seconds=90, max_time=60) == 1.0


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: tbptt.Schedule("exp"), ValueError, "shape"),
        (lambda: tbptt.Schedule(warmup=1.0), ValueError, "warmup"),
        (lambda: tbptt.Schedule(final=1.5), ValueError, "final"),
        (lambda: tbptt.Schedule(final="0"), TypeError, "final"),
    ],
)
def test_bad_schedules(call, error, match):
    with pytest.raises(error, match=match):
        call()


def echo(T=600, B=8, seed=0):
    return tbptt.datasets.echo(T, B, delay=3, seed=seed)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_fit_follows_the_schedule_and_leaves_the_lr_as_it_was(backend):
    model = tbptt.GRU(2, 8, 2, seed=0, dtype="float64")
    trainer = tbptt.Trainer(
        model, 10, 10, loss="cross_entropy", optimizer=tbptt.Adam(0.01), backend=backend
    )
    seen = []
    original = trainer.engine.set_lr
    trainer.engine.set_lr = lambda lr: (seen.append(lr), original(lr))
    history = trainer.fit(
        echo(), epochs=4, block=100, progress=False, schedule=tbptt.Schedule("linear", warmup=0.25)
    )
    # 4 epochs x 6 blocks: progress 0, 1/24, ..., 23/24; warm-up over the first quarter
    expected = [0.01 * tbptt.Schedule("linear", warmup=0.25)(i / 24) for i in range(24)]
    np.testing.assert_allclose(seen[:-1], expected)
    assert seen[-1] == 0.01 and trainer.lr == 0.01  # restored for later train calls
    np.testing.assert_allclose(history.lr, expected[5::6])


def test_a_time_budget_ends_the_schedule_low():
    model = tbptt.LSTM(2, 8, 2, seed=0)
    trainer = tbptt.Trainer(model, 10, 10, loss="cross_entropy", optimizer=tbptt.Adam(0.01))
    history = trainer.fit(
        echo(3000, 32),
        epochs=10_000,
        block=50,
        progress=False,
        max_time=1.0,
        schedule=tbptt.Schedule("cosine", final=0.0),
    )
    assert history.stop_reason == "max_time"
    assert history.lr[-1] < 0.01 * 0.2  # the last blocks ran near the end of the cosine


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_restore_best_and_patience(backend):
    model = tbptt.LSTM(2, 8, 2, seed=0, forget_bias=1.0, dtype="float64")
    trainer = tbptt.Trainer(
        model, 10, 10, loss="cross_entropy", optimizer=tbptt.Adam(0.3), backend=backend
    )  # a learning rate high enough to get worse again
    history = trainer.fit(
        echo(),
        epochs=12,
        validation=echo(200, 4, seed=1),
        progress=False,
        restore_best=True,
        patience=3,
    )
    best = history.best_epoch
    assert trainer.best["epoch"] == best and trainer.best["val_loss"] == min(history.val_loss)
    np.testing.assert_array_equal(model.flat_parameters, trainer.best["parameters"])
    assert trainer.evaluate(echo(200, 4, seed=1))["loss"] == pytest.approx(history.val_loss[best])
    assert best < history.epochs - 1  # so the model was put back, not left at its last epoch
    if history.stop_reason == "early_stopping":
        assert history.epochs == best + 1 + 3
    else:
        assert history.stop_reason == "epochs" and history.epochs - 1 - best < 3
    assert history.to_dict()["best_epoch"] == best


def test_best_needs_validation():
    trainer = tbptt.Trainer(tbptt.LSTM(2, 4, 2), 5, 5, loss="cross_entropy")
    with pytest.raises(ValueError, match="validation"):
        trainer.fit(echo(), restore_best=True, progress=False)
    with pytest.raises(ValueError, match="patience"):
        trainer.fit(echo(), validation=echo(50, 2), patience=0, progress=False)
    with pytest.raises(TypeError, match="schedule"):
        trainer.fit(echo(), schedule="cosine", progress=False)
    assert math.isnan(tbptt.History().best_epoch or math.nan)
