"""Trainer.fit, Trainer.evaluate and History: learning, bookkeeping, reset policies, budgets,
divergence and interruption."""

import json
import signal
import sys

import numpy as np
import pytest

import tbptt
from tbptt import _fit

pytestmark = pytest.mark.usefixtures("one_thread")


def mse_data(T=40, B=3, I=4, O=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, B, I)), rng.normal(size=(T, B, O))


def mse_trainer(k1=5, k2=7, dtype="float64", backend="cpp", lr=0.01):
    model = tbptt.LSTM(4, 6, 2, dtype=dtype, seed=1)
    return tbptt.Trainer(model, k1, k2, optimizer=tbptt.Adam(lr), clip_norm=5.0, backend=backend)


# ---- learning ----------------------------------------------------------------------------------


def test_fit_learns_delayed_echo():
    """Delay 5 with chunked TBPTT(10, 10): from chance (log 2) to > 0.9 validation accuracy."""
    task = tbptt.datasets.echo(1500, 32, delay=5, seed=0)
    valid = tbptt.datasets.echo(500, 32, delay=5, seed=1)
    model = tbptt.LSTM(2, 16, 2, seed=0, forget_bias=1.0)
    trainer = tbptt.Trainer(
        model, 10, 10, loss="cross_entropy", optimizer=tbptt.Adam(1e-2), clip_norm=5.0
    )
    history = trainer.fit(task, epochs=2, validation=valid, progress=False)
    assert history.train_loss[0] > history.train_loss[1]
    assert history.losses[:10].mean() > 0.6  # chance is log 2 = 0.69
    assert history.val_loss[-1] < 0.3 and history.val_accuracy[-1] > 0.9


# ---- history, evaluate -------------------------------------------------------------------------


def test_history_contents(tmp_path):
    task = tbptt.datasets.echo(50, 4, delay=2, seed=0)
    model = tbptt.LSTM(2, 5, 2, seed=0)
    trainer = tbptt.Trainer(model, 10, 10, loss="cross_entropy")
    history = trainer.fit(
        task, epochs=3, validation=tbptt.datasets.echo(30, 2, delay=2, seed=1), progress=False
    )
    assert (
        trainer.history is history and history.stop_reason == "epochs" and history.diverged is None
    )
    assert history.epochs == 3 and trainer.updates == 15
    assert history.losses.shape == (15,) and history.epoch_updates == [5, 10, 15]
    assert np.allclose(history.train_loss, history.losses.reshape(3, 5).mean(axis=1))
    assert len(history.val_loss) == len(history.val_accuracy) == 3
    assert history.val_loss[-1] == pytest.approx(
        trainer.evaluate(tbptt.datasets.echo(30, 2, delay=2, seed=1))["loss"]
    )
    assert history.samples == 3 * 50 * 4 and len(history.samples_per_s) == 3
    assert all(rate > 0 for rate in history.samples_per_s)
    assert 0 < history.train_time <= history.wall_time
    d = json.loads(json.dumps(history.to_dict()))
    assert d["losses"] == pytest.approx(history.losses.tolist()) and d["epochs"] == 3
    assert d["stop_reason"] == "epochs" and "15" in repr(history)
    pytest.importorskip("matplotlib")
    history.plot(tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_bar_and_epoch_lines(capsys):
    x, y = mse_data()
    mse_trainer().fit(x, y, epochs=2, validation=(x, y), progress=True)
    err = capsys.readouterr().err
    assert "epoch 2/2: loss" in err and "val_loss" in err and "samples/s" in err


def test_progress_to_a_log_is_a_line_every_few_seconds(monkeypatch, capsys):
    """stderr captured is not a terminal: no redrawn bar (no carriage returns), a line per
    block here (the interval set to 0), the epoch lines as on a terminal."""
    from tbptt import _progress

    x, y = mse_data(T=40)
    mse_trainer().fit(x, y, epochs=2, block=10, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 2  # the epoch lines only: 10 s have not passed
    monkeypatch.setattr(_progress, "LINE_INTERVAL", 0.0)
    mse_trainer().fit(x, y, epochs=2, block=10, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert "\r" not in "".join(lines) and len(lines) == 2 * (4 + 1)
    # the share of the whole run (2 epochs), not of the epoch; the loss in the loss function's unit
    assert lines[0].startswith("epoch 1/2: 12% of the run, 0 s elapsed, about 0 s left, loss ")
    assert " mse, " in lines[0] and lines[0].endswith(" samples/s")
    assert lines[3].startswith("epoch 1/2: 50% of the run")
    assert lines[4].startswith("epoch 1/2: loss") and lines[5].startswith("epoch 2/2: 62%")
    assert lines[8].startswith("epoch 2/2: 100% of the run") and "left" not in lines[8]


def test_progress_counts_against_the_time_budget_that_ends_the_run(monkeypatch, capsys):
    """With max_time the bar is the larger of the steps' and the budget's share, and says the
    budget: a run of 100 epochs that the budget ends after a few shows its share of the budget."""
    from tbptt import _progress

    x, y = mse_data(T=40)
    monkeypatch.setattr(_progress, "LINE_INTERVAL", 0.0)
    clock = iter(range(10_000))  # every perf_counter call: one second later
    monkeypatch.setattr(_fit.time, "perf_counter", lambda: float(next(clock)))
    history = mse_trainer().fit(x, y, epochs=100, block=10, progress=True, max_time=60)
    assert history.stop_reason == "max_time" and history.epochs < 100
    lines = [line for line in capsys.readouterr().err.splitlines() if "of the run" in line]
    assert lines[0].startswith("epoch 1/100 (60 s budget): ")
    shares = [int(line.split(": ")[1].split("%")[0]) for line in lines]
    assert shares == sorted(shares) and shares[-1] >= 90  # not 4% (the steps' share)


def test_cross_entropy_losses_shown_in_bits_when_asked(monkeypatch, capsys):
    task = tbptt.datasets.echo(60, 2, delay=2, seed=0)
    trainer = tbptt.Trainer(
        tbptt.LSTM(task.input_size, 8, task.output_size, seed=0), 5, 5, loss="cross_entropy"
    )
    history = trainer.fit(task, epochs=1, progress=True, loss_unit="bits/char")
    line = capsys.readouterr().err.splitlines()[-1]
    bits = history.train_loss[-1] / np.log(2)
    assert line.startswith(f"epoch 1/1: loss {bits:.4f} bits/char")
    trainer.fit(task, epochs=1, progress=True)
    assert " nats" in capsys.readouterr().err
    with pytest.raises(ValueError, match="loss_unit must be one of 'nats', 'bits', 'bits/char'"):
        trainer.fit(task, epochs=1, loss_unit="bit")
    with pytest.raises(ValueError, match="loss_unit must be one of 'mse' or None for loss='mse'"):
        mse_trainer().fit(*mse_data(), loss_unit="bits")


def test_progress_on_a_terminal_is_a_redrawn_bar(monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    x, y = mse_data(T=40)
    mse_trainer().fit(x, y, epochs=1, block=10, progress=True)
    assert "\r" in capsys.readouterr().err


def test_plot_without_matplotlib_names_the_extra(without_matplotlib, tmp_path):
    with pytest.raises(ImportError, match=r"pip install tbptt\[plot\]"):
        tbptt.History().plot(tmp_path / "x.png")


def test_evaluate_is_the_training_loss_computed_statefully():
    x, y = mse_data(T=30)
    mask = np.random.default_rng(1).uniform(0, 2, size=(30, 3))
    trainer = mse_trainer()
    out, _ = trainer.model.predict(x)
    per_position = ((out - y) ** 2).mean(axis=-1)
    expected = (mask * per_position).sum() / mask.sum()
    assert trainer.evaluate(x, y, mask, block=7)["loss"] == pytest.approx(expected, rel=1e-12)

    # resets zero a stream's state before their step: evaluate over each segment separately
    resets = np.zeros((30, 3), bool)
    resets[11, 1] = resets[20, :] = True
    predict = trainer.model.predict
    manual = np.concatenate([predict(x[s:e])[0] for s, e in ((0, 11), (11, 20), (20, 30))])
    manual[:20, [0, 2]] = predict(x[:20, [0, 2]])[0]  # streams 0 and 2 have no reset at 11
    expected = ((manual - y) ** 2).mean()
    result = trainer.evaluate(x, y, resets=resets, block=4)
    assert result["loss"] == pytest.approx(expected, rel=1e-12)


def test_evaluate_cross_entropy_and_accuracy():
    task = tbptt.datasets.copy(60, 3, seed=2)
    model = tbptt.LSTM(task.input_size, 7, task.output_size, dtype="float64", seed=0)
    trainer = tbptt.Trainer(model, 10, 10, loss="cross_entropy")
    out = np.concatenate(
        [model.predict(task.x[s : s + 31])[0] for s in (0, 31)]
    )  # episodes: 31 steps
    logp = out - np.log(np.exp(out).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(logp, task.y[..., None], axis=-1)[..., 0]
    m = task.mask
    result = trainer.evaluate(task)
    assert result["loss"] == pytest.approx(-(m * picked).sum() / m.sum(), rel=1e-12)
    assert result["accuracy"] == pytest.approx((m * (out.argmax(-1) == task.y)).sum() / m.sum())


# ---- fit is train in blocks ----------------------------------------------------------------------


def test_fit_equals_train_calls_and_splits_into_epochs():
    x, y = mse_data(T=23)
    a, b, c = mse_trainer(), mse_trainer(), mse_trainer()
    a.fit(x, y, epochs=2, reset="never", block=4, progress=False)
    b.train(x, y)
    b.train(x, y)
    np.testing.assert_allclose(a.model.flat_parameters, b.model.flat_parameters, rtol=1e-12, atol=0)
    assert a.pending_steps == b.pending_steps == 46 % 5  # pending steps stay pending
    c.fit(x, y, epochs=1, reset="never", progress=False)  # fit twice = fit with twice the epochs
    c.fit(x, y, epochs=1, reset="never", progress=False)
    np.testing.assert_allclose(c.model.flat_parameters, b.model.flat_parameters, rtol=1e-12, atol=0)


def test_reset_epoch_and_never(monkeypatch):
    x, y = mse_data(T=20)
    for policy in ("epoch", "never"):
        trainer = mse_trainer()
        seen = []
        train = trainer.train

        def spy(*a):  # records the state each call starts from
            seen.append(trainer.state())  # noqa: B023 - called within this iteration
            return train(*a)  # noqa: B023

        monkeypatch.setattr(trainer, "train", spy)
        trainer.fit(x, y, epochs=2, reset=policy, block=20, progress=False)
        assert seen[0] is None  # nothing trained yet
        h, c = seen[1]  # the state the first step of epoch 2 sees
        assert (not h.any() and not c.any()) == (policy == "epoch")


def test_reset_every_n_steps_across_epochs_and_with_resets():
    x, y = mse_data(T=23)
    explicit = np.zeros((23, 3), bool)
    explicit[5, 2] = True
    a, b = mse_trainer(), mse_trainer()
    a.fit(x, y, resets=explicit, epochs=2, reset=9, block=6, progress=False)
    for epoch in range(2):
        steps = 23 * epoch + np.arange(23)  # N counts steps from the start of fit, across epochs
        b.train(x, y, resets=explicit | (steps % 9 == 0)[:, None])
    np.testing.assert_allclose(a.model.flat_parameters, b.model.flat_parameters, rtol=1e-12, atol=0)


@pytest.mark.parametrize("reset", ["epoch", "never", 9])
@pytest.mark.parametrize("stop_after", [1, 4, 9])  # updates: mid-epoch, at an epoch's end, later
def test_a_fit_stopped_then_resumed_where_it_stopped_equals_one_fit(tmp_path, reset, stop_after):
    x, y = mse_data(T=20)
    whole = mse_trainer()
    whole.fit(x, y, epochs=3, reset=reset, block=5, progress=False)
    part = mse_trainer()  # blocks of k1 = 5 steps: max_updates stops between two blocks
    history = part.fit(x, y, epochs=3, reset=reset, block=5, max_updates=stop_after, progress=False)
    part.save(tmp_path / "trainer.npz")
    resumed = tbptt.load_trainer(tmp_path / "trainer.npz")
    epoch, step = history.resume_at
    assert (epoch, step) == divmod(stop_after * 5, 20)
    later = resumed.fit(
        x, y, epochs=3, reset=reset, block=5, initial_epoch=epoch, initial_step=step, progress=False
    )
    assert later.resume_at == (3, 0) and later.stop_reason == "epochs"
    np.testing.assert_array_equal(resumed.model.flat_parameters, whole.model.flat_parameters)
    history.extend(later)
    assert history.losses.size == whole.updates == 12 and history.epoch_updates[-1] == 12
    again = tbptt.History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert again.to_dict() == history.to_dict()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(initial_epoch=3), ValueError, r"initial_epoch must be in \[0, epochs=3\)"),
        (dict(initial_epoch=-1), ValueError, "initial_epoch"),
        (dict(initial_step=20), ValueError, r"initial_step must be in \[0, T=20\)"),
        (dict(initial_step=1.5), TypeError, "initial_step"),
    ],
)
def test_bad_initial_position(kwargs, error, match):
    x, y = mse_data(T=20)
    with pytest.raises(error, match=match):
        mse_trainer().fit(x, y, epochs=3, progress=False, **kwargs)


# ---- budgets and callbacks -----------------------------------------------------------------------


def test_max_updates_is_exact():
    x, y = mse_data(T=23)
    trainer = mse_trainer()
    trainer.train(x[:3], y[:3])  # 3 steps pending: fit must count from where the trainer is
    history = trainer.fit(x, y, epochs=10, max_updates=7, progress=False)
    assert trainer.updates == 7 and trainer.pending_steps == 0
    assert history.stop_reason == "max_updates" and history.losses.size == 7
    assert history.epochs == 2 and history.samples == (7 * 5 - 3) * 3


def test_max_time_stops_and_records_the_partial_epoch():
    x, y = mse_data(T=200)
    trainer = mse_trainer()
    history = trainer.fit(
        x, y, epochs=10**6, max_time=0.3, block=5, validation=(x, y), progress=False
    )
    assert history.stop_reason == "max_time" and 0.1 < history.wall_time < 5
    assert 1 <= history.epochs < 10**6 and len(history.val_loss) == history.epochs


def test_callback_stops_fit():
    x, y = mse_data()
    calls = []
    history = mse_trainer().fit(
        x,
        y,
        epochs=5,
        progress=False,
        callback=lambda trainer, h: calls.append(h.epochs) or h.epochs == 2,
    )
    assert calls == [1, 2] and history.stop_reason == "callback" and history.epochs == 2


# ---- divergence and interruption -----------------------------------------------------------------


def test_divergence_stops_with_last_good_parameters_and_can_go_on():
    x, y = mse_data(T=30)
    y[17] = 1e200  # the loss of the update over steps 15..19 overflows
    trainer = mse_trainer()
    good = mse_trainer()
    good.train(x[:15], y[:15])
    with pytest.warns(RuntimeWarning, match="diverged"):
        history = trainer.fit(x, y, epochs=3, block=5, progress=False)
    assert history.stop_reason == "diverged" and "update 4" in history.diverged
    assert history.losses.size == 3 and history.epochs == 1
    np.testing.assert_array_equal(trainer.model.flat_parameters, good.model.flat_parameters)
    trainer.lr = 1e-3
    history = trainer.fit(x[:15], y[:15], progress=False)  # the trainer goes on
    assert history.stop_reason == "epochs" and np.isfinite(trainer.model.flat_parameters).all()


def test_keyboard_interrupt_from_train_saves_checkpoint(monkeypatch, tmp_path):
    x, y = mse_data(T=40)
    trainer = mse_trainer()
    calls, train = [], trainer.train

    def interrupted_train(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return train(*args)

    monkeypatch.setattr(trainer, "train", interrupted_train)
    path = tmp_path / "trainer.npz"
    with pytest.raises(KeyboardInterrupt, match="saved to"):
        trainer.fit(x, y, epochs=2, block=10, checkpoint=path, progress=False)
    assert trainer.history.stop_reason == "interrupted" and trainer.history.losses.size == 4
    assert trainer.updates == 4 and tbptt.load_trainer(path).updates == 4


def test_ctrl_c_is_deferred_to_the_end_of_the_block(monkeypatch, tmp_path):
    """A real SIGINT during a train call: the call completes, fit saves and raises after it."""
    x, y = mse_data(T=40)
    trainer = mse_trainer(backend="numpy")
    calls, train = [], trainer.train

    def train_then_ctrl_c(*args):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # in the middle of this block
        return train(*args)

    monkeypatch.setattr(trainer, "train", train_then_ctrl_c)
    path = tmp_path / "trainer.npz"
    # Python's own handler, as in a terminal: a shell starts background jobs with SIGINT ignored,
    # and fit leaves any handler but Python's default alone.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit(
                x, y, epochs=2, block=10, checkpoint=path, validation=(x, y), progress=False
            )
        handler_after_fit = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(calls) == 2 and trainer.updates == 4 and trainer.history.losses.size == 4
    assert tbptt.load_trainer(path).updates == 4
    assert handler_after_fit is signal.default_int_handler  # handler restored


# ---- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(reset="sometimes"), ValueError, "reset"),
        (dict(reset=0), ValueError, "reset"),
        (dict(reset=True), ValueError, "reset"),
        (dict(epochs=0), ValueError, "epochs"),
        (dict(max_time=0), ValueError, "max_time"),
        (dict(max_updates=0), ValueError, "max_updates"),
        (dict(block=0), ValueError, "block"),
        (dict(validation=[1]), TypeError, "validation"),
        (dict(validation=(np.zeros((4, 2, 4)), np.zeros((5, 2, 2)))), ValueError, "y must start"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    x, y = mse_data()
    with pytest.raises(error, match=match):
        mse_trainer().fit(x, y, progress=False, **kwargs)


def test_bad_data():
    x, y = mse_data()
    trainer = mse_trainer()
    with pytest.raises(TypeError, match="y"):
        trainer.fit(x)
    with pytest.raises(ValueError, match="mask must start"):
        trainer.fit(x, y, np.ones((3, 3)))
    with pytest.raises(TypeError, match="Task"):
        trainer.fit(tbptt.datasets.echo(10, 2, 1), y)
    assert trainer.updates == 0


def test_history_plot_labels_its_unit(tmp_path):
    pytest.importorskip("matplotlib")
    x, y = mse_data()
    history = mse_trainer().fit(x, y, epochs=1, progress=False)
    history.plot(tmp_path / "loss.png", loss_unit="mse")
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(
        ValueError,
        match="loss_unit must be one of 'nats', 'bits', 'bits/char', 'mse' or None, got 'furlongs'",
    ):
        history.plot(tmp_path / "x.png", loss_unit="furlongs")
