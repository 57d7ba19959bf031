"""The `tbptt` command (run in-process with tiny settings) and tbptt.generate."""

import json
import subprocess
import sys

import numpy as np
import pytest

import tbptt
from tbptt import _files, _progress, cli
from tbptt.cli import _folder as cli_folder
from tbptt.cli import train as cli_train

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = ["--hidden", "8", "--no-progress", "--threads", "1"]


# ---- tbptt generate (the function) ------------------------------------------------------------


def text_model(seed=0):
    vocab = tbptt.data.Vocabulary("abc\n")
    return tbptt.LSTM(vocab.size, 6, vocab.size, seed=seed), vocab


def test_generate_is_deterministic_for_a_seed():
    model, vocab = text_model()
    a = tbptt.generate(model, vocab, "ab", 40, seed=5)
    assert isinstance(a, str) and len(a) == 40 and set(a) <= set(vocab.chars)
    assert tbptt.generate(model, vocab, "ab", 40, seed=5) == a
    assert tbptt.generate(model, vocab, "ab", 40, seed=6) != a
    ids = tbptt.generate(model, None, vocab.encode("ab"), 40, seed=5)  # ids in, ids out
    assert ids.dtype == np.int64 and vocab.decode(ids) == a


def test_generate_temperature_zero_is_greedy_with_carried_state():
    model, vocab = text_model(seed=3)
    out, state = model.predict(vocab.encode("abca")[:, None])
    expected = []
    for _ in range(12):
        token = int(out[-1, 0].argmax())
        expected.append(token)
        out, state = model.predict(np.array([[token]]), state)
    assert tbptt.generate(model, vocab, "abca", 12, temperature=0) == vocab.decode(expected)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m, v: tbptt.generate(m, v, "", 5), ValueError, "at least one token"),
        (lambda m, v: tbptt.generate(m, None, "ab", 5), TypeError, "Vocabulary"),
        (lambda m, v: tbptt.generate(m, v, "abz", 5), ValueError, "'z'"),
        (lambda m, v: tbptt.generate(m, v, "ab", 0), ValueError, "length"),
        (lambda m, v: tbptt.generate(m, v, "ab", 5, temperature=-1), ValueError, "temperature"),
        (
            lambda m, v: tbptt.generate(m, tbptt.data.Vocabulary("ab"), "ab", 5),
            ValueError,
            "input_size",
        ),
        (lambda m, v: tbptt.generate(tbptt.LSTM(3, 4, 2), None, [0], 5), ValueError, "output_size"),
    ],
)
def test_generate_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(*text_model())


# ---- tbptt train / generate / info --------------------------------------------------------------


def test_train_shakespeare_then_generate_and_info(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--max-time", "1", "--k1", "20", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "bits per character" in printed and "sample (temperature" in printed
    for name in ("model.npz", "trainer.npz", "history.json", "loss.png"):
        assert (out / name).exists(), name
    history = json.loads((out / "history.json").read_text())
    assert history["stop_reason"] in ("max_time", "epochs") and history["losses"]
    assert tbptt.load(out / "model.npz").hidden_size == 8
    assert tbptt.load_trainer(out / "trainer.npz").k1 == 20

    samples = []
    for _ in range(2):
        argv = ["generate", str(out), "--prime", "KING", "--length", "30", "--seed", "4"]
        assert cli.main(argv) == 0
        samples.append(capsys.readouterr().out)
    assert samples[0] == samples[1] and samples[0].startswith("KING")
    assert len(samples[0]) == 4 + 30 + 1  # prime, sample, newline

    assert cli.main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    parameters = tbptt.load(out / "model.npz").num_parameters
    assert f"parameters: {parameters:,}" in printed and "bits_per_character" in printed
    assert "trainer checkpoint" in printed and "k1=20" in printed


@pytest.mark.parametrize(
    "task, expect",
    [
        ("echo", "accuracy"),
        ("adding", "loss"),
        ("copy", "accuracy"),
        ("co2", "MSE"),
        ("sunspots", "MSE"),
    ],
)
def test_train_tasks(task, expect, tmp_path, capsys):
    assert cli.main(["train", "--task", task, "--epochs", "1", "--out", str(tmp_path), *TINY]) == 0
    assert f"validation: {expect}" in capsys.readouterr().out
    assert (tmp_path / "model.npz").exists()


def test_the_rmse_printed_is_the_one_in_forecast_png(tmp_path, capsys, monkeypatch):
    """One computation (cli.train._held_out) gives the printed RMSEs, the model file's and the
    legend of forecast.png."""
    pytest.importorskip("matplotlib")
    drawn = []
    monkeypatch.setattr(
        cli_train.forecast, "plot", lambda path, title, lines, **kw: drawn.extend(lines)
    )
    assert cli.main(["train", "--task", "co2", "--epochs", "2", "--out", str(tmp_path), *TINY]) == 0
    printed = capsys.readouterr().out
    legend = [label for _, _, label, _ in drawn]
    results = _files.load_arrays(str(tmp_path / "model.npz"), "model")[0]["results"]
    model_rmse, naive_rmse = f"{results['val_rmse']:.4g}", f"{results['persistence_rmse']:.4g}"
    assert legend[1] == f"model, one step ahead (RMSE {model_rmse})"
    assert legend[2] == f"last value (RMSE {naive_rmse})"
    assert (
        f"RMSE {model_rmse} in the data's units; predicting the last value: RMSE {naive_rmse}"
        in printed
    )


def test_train_with_recompute_keeps_it_in_the_trainer_file(tmp_path, capsys):
    argv = ["train", "--task", "echo", "--k1", "5", "--k2", "12", "--epochs", "1", *TINY]
    assert cli.main([*argv, "--recompute", "--out", str(tmp_path / "on")]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "off")]) == 0
    on, off = (tbptt.load_trainer(tmp_path / run / "trainer.npz") for run in ("on", "off"))
    assert on.recompute and not off.recompute
    assert not np.array_equal(on.model.flat_parameters, off.model.flat_parameters)


@pytest.mark.parametrize("cell, model", [("gru", tbptt.GRU), ("rnn", tbptt.RNN)])
def test_train_generate_and_info_with_another_cell(cell, model, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        cli.main(
            ["train", "--cell", cell, "--max-time", "1", "--k1", "20", "--out", str(out), *TINY]
        )
        == 0
    )
    assert f"model: {cell.upper()} 1 x 8" in capsys.readouterr().out
    assert type(tbptt.load(out / "model.npz")) is model
    assert type(tbptt.load_trainer(out / "trainer.npz").model) is model
    assert cli.main(["generate", str(out), "--length", "10", "--seed", "1"]) == 0
    assert cli.main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"model: {model.__name__}(" in printed and f"cell={cell}" in printed
    assert "forget_bias" not in printed  # an LSTM-only setting


def test_train_with_the_numpy_backend(tmp_path, capsys):
    assert (
        cli.main(
            [
                "train",
                "--task",
                "sunspots",
                "--epochs",
                "1",
                "--backend",
                "numpy",
                "--out",
                str(tmp_path),
                *TINY,
            ]
        )
        == 0
    )
    assert "numpy backend" in capsys.readouterr().out
    assert tbptt.load_trainer(tmp_path / "trainer.npz").backend == "numpy"


def test_train_text_and_csv_files(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 60, encoding="utf-8")
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(text),
                "--epochs",
                "2",
                "--batch",
                "4",
                "--out",
                str(tmp_path / "a"),
                *TINY,
            ]
        )
        == 0
    )
    assert "bits per character" in capsys.readouterr().out

    table = tmp_path / "series.csv"
    t = np.arange(300)
    rows = [f"{i},{'' if i == 7 else round(float(np.sin(i / 5)), 4)}" for i in t]  # one gap
    table.write_text("step,level\n" + "\n".join(rows) + "\n")
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(table),
                "--column",
                "level",
                "--epochs",
                "2",
                "--out",
                str(tmp_path / "b"),
                *TINY,
            ]
        )
        == 0
    )
    assert "RMSE" in capsys.readouterr().out
    assert cli.main(["info", str(tmp_path / "b" / "model.npz")]) == 0
    assert "'mean'" in capsys.readouterr().out  # the normalisation is stored with the model
    assert cli.main(["generate", str(tmp_path / "b")]) == 1  # a series model has no vocabulary
    assert "not a text model" in capsys.readouterr().err
    assert cli.main(["train", "--data", str(table), "--column", "nope", *TINY]) == 2  # bad input
    with pytest.raises(SystemExit) as exit:  # a CSV needs --column
        cli.main(["train", "--data", str(table), *TINY])
    assert exit.value.code == 2


def test_ctrl_c_during_train_saves_what_there_is(tmp_path, monkeypatch, capsys):
    calls, train = [], tbptt.Trainer.train

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return train(self, *args)

    monkeypatch.setattr(tbptt.Trainer, "train", interrupted)
    assert cli.main(["train", "--task", "echo", "--out", str(tmp_path), *TINY]) == 130
    assert "interrupted" in capsys.readouterr().err
    for name in ("model.npz", "trainer.npz", "history.json"):
        assert (tmp_path / name).exists(), name


# ---- tbptt train --resume ------------------------------------------------------------------------

ECHO = ["train", "--task", "echo", "--hidden", "8", "--no-progress"]


def parameters(folder):
    """The model's parameters and the trainer checkpoint's arrays of a run folder."""
    arrays = tbptt.checkpoint.load_arrays(folder / "trainer.npz", "trainer")[1]
    return {**tbptt.load(folder / "model.npz").state_dict(), **arrays}


def assert_same_bits(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """`tbptt train --task echo --epochs 2`, never stopped: what every resumed run must equal."""
    out = tmp_path_factory.mktemp("whole")
    assert cli.main([*ECHO, "--epochs", "2", "--out", str(out)]) == 0
    return out


def test_resume_after_the_end_equals_one_run(tmp_path, two_epochs, capsys):
    assert cli.main([*ECHO, "--epochs", "1", "--out", str(tmp_path)]) == 0
    assert cli.main(["train", "--resume", str(tmp_path), "--epochs", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"resuming {tmp_path}: epoch 2 of 2, from step 0 (250 updates made)" in printed
    assert "all 2 epoch(s) done" in printed
    assert_same_bits(parameters(tmp_path), parameters(two_epochs))
    history = json.loads((tmp_path / "history.json").read_text())  # appended
    whole = json.loads((two_epochs / "history.json").read_text())
    assert history["losses"] == whole["losses"] and history["epoch_updates"] == [250, 500]
    assert history["resume_at"] == [2, 0] and history["stop_reason"] == "epochs"
    assert tbptt.load(tmp_path / "model.npz").num_parameters == 402
    with pytest.raises(SystemExit) as exit:  # all epochs done: --epochs must say how many more
        cli.main(["train", "--resume", str(tmp_path)])
    assert exit.value.code == 2 and "trained all its 2 epoch(s)" in capsys.readouterr().err


def test_resume_after_ctrl_c_mid_epoch_equals_one_run(tmp_path, two_epochs, monkeypatch, capsys):
    calls, train = [], tbptt.Trainer.train

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 13:  # epoch 2, its third block of 1,000 steps
            raise KeyboardInterrupt
        return train(self, *args)

    monkeypatch.setattr(tbptt.Trainer, "train", interrupted)
    assert cli.main([*ECHO, "--epochs", "2", "--out", str(tmp_path)]) == 130
    assert f"--resume {tmp_path} goes on" in capsys.readouterr().err
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(tmp_path), "--no-progress"]) == 0
    assert "epoch 2 of 2, from step 2,000 (300 updates made)" in capsys.readouterr().out
    assert_same_bits(parameters(tmp_path), parameters(two_epochs))
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["losses"]) == 500 and history["epoch_updates"] == [250, 300, 500]


def test_resume_after_the_time_budget_equals_one_run(tmp_path, two_epochs, capsys):
    """Wherever --max-time stopped it (between two blocks), the resumed run ends the same."""
    code = cli.main([*ECHO, "--epochs", "2", "--max-time", "0.05", "--out", str(tmp_path)])
    assert code == 0 and "stopped by" in capsys.readouterr().out
    assert cli.main(["train", "--resume", str(tmp_path), "--max-time", "0", "--no-progress"]) == 0
    assert_same_bits(parameters(tmp_path), parameters(two_epochs))


@pytest.mark.parametrize(
    "flag",
    [
        ["--hidden", "9"],
        ["--task", "copy"],
        ["--k1", "5"],
        ["--lr", "0.1"],
        ["--seed", "1"],
        ["--out", "x"],
        ["--backend", "numpy"],
        ["--layers", "1"],
        ["--recompute"],
    ],
)
def test_resume_refuses_flags_that_change_the_data_or_the_model(tmp_path, flag, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["train", "--resume", str(tmp_path), *flag])
    assert exit.value.code == 2 and f"{flag[0]} cannot change" in capsys.readouterr().err


def test_resume_refuses_changed_data_and_folders_without_a_run(tmp_path, capsys):
    table = tmp_path / "series.csv"
    table.write_text("v\n" + "\n".join(str(i % 7) for i in range(100)) + "\n")
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(table),
                "--column",
                "v",
                "--epochs",
                "1",
                "--out",
                str(run),
                *TINY,
            ]
        )
        == 0
    )
    table.write_text("v\n" + "\n".join(str(i % 5) for i in range(100)) + "\n")
    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 1
    assert "have changed since the run began" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path), "--epochs", "2"]) == 1  # no trainer.npz
    trainer = tbptt.load_trainer(run / "trainer.npz")
    trainer.save(run / "trainer.npz")  # a trainer checkpoint without the run's settings
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 1
    assert "holds no settings of a `tbptt train` run" in capsys.readouterr().err


def test_divergence_is_reported_and_the_last_good_model_kept(tmp_path, monkeypatch, capsys):
    calls, train = [], tbptt.Trainer.train

    def diverging(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("update 7: the loss is not finite")
        return train(self, *args)

    monkeypatch.setattr(tbptt.Trainer, "train", diverging)
    assert cli.main(["train", "--task", "echo", "--out", str(tmp_path), *TINY]) == 0
    assert "training diverged: update 7" in capsys.readouterr().out
    assert (tmp_path / "model.npz").exists()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["fly"],
        ["train", "--bogus"],
        ["train", "--k1", "0"],
        ["train", "--lr", "-1"],
        ["train", "--task", "nope"],
        ["train", "--max-time", "x"],
        ["train", "--task", "echo", "--data", "f"],
        ["train", "--task", "echo", "--column", "c"],
        ["generate"],
        ["info"],
        ["generate", "x", "--temperature", "-1"],
    ],
)
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2 and "usage: tbptt" in capsys.readouterr().err


def test_unreadable_files_exit_1(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "missing.npz")]) == 1
    assert cli.main(["info", str(tmp_path)]) == 1
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert cli.main(["generate", str(tmp_path / "junk.npz")]) == 1
    assert "not a readable tbptt file" in capsys.readouterr().err


def test_module_runs_as_a_command():
    done = subprocess.run(
        [sys.executable, "-m", "tbptt.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "usage: tbptt" in done.stdout and "train" in done.stdout


def test_bench_runs_a_tiny_configuration_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    assert (
        cli.main(
            [
                "bench",
                "--config",
                "2,8,5,10",
                "--repeats",
                "1",
                "--budget",
                "0.05",
                "--no-torch",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(r["B"], r["H"], r["k1"], r["k2"]) for r in rows] == [(2, 8, 5, 10)]
    assert rows[0]["samples_per_s"]["tbptt"] > 0 and rows[0]["speedup_vs_numpy"] > 0


def test_bench_counts_the_products_tbptt_needs():
    """k1 = k2: forward + the two backward products per step; TBPTT(10, 50): each step is
    backpropagated by 5 windows on average, so 1 + 2 x 5 products; k2 < k1: fewer than 1."""
    from tbptt.bench import flops_per_step

    one = 2 * 3 * 4 * 8 * (32 + 8)  # B = 3, H = 8, I = 32: one product
    assert flops_per_step(3, 8, 25, 25) == 3 * one
    assert flops_per_step(3, 8, 10, 50) == 11 * one
    assert flops_per_step(3, 8, 10, 5) == 2 * one
    assert flops_per_step(3, 8, 25, 25, "gru") == 3 * one * 3 / 4  # 3H gate rows, not 4H
    assert flops_per_step(3, 8, 25, 25, "rnn") == 3 * one / 4


def test_bench_bad_config_exits_2():
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--config", "1,2,3"])
    assert exit_.value.code == 2


def test_train_writes_the_best_epochs_model_with_the_new_training_flags(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--task",
        "echo",
        "--epochs",
        "5",
        "--out",
        str(out),
        "--dropout",
        "0.1",
        "--weight-decay",
        "0.01",
        "--schedule",
        "cosine",
        "--warmup",
        "0.1",
        "--patience",
        "2",
        "--lr",
        "0.05",
        *TINY,
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    best = int(np.argmin(history["val_loss"]))
    assert f"the best epoch, {best + 1}:" in printed and history["best_epoch"] == best
    assert len(history["lr"]) == history["epochs"] and history["lr"][-1] < 0.05
    header = cli_folder.load_model(out / "model.npz")[1]
    assert header["results"]["best_epoch"] == best + 1
    settings = header["settings"]
    assert (settings["dropout"], settings["weight_decay"], settings["schedule"]) == (
        0.1,
        0.01,
        "cosine",
    )
    model = tbptt.load(out / "model.npz")
    assert model.dropout == model.head_dropout == 0.1
    trainer = tbptt.load_trainer(out / "trainer.npz")
    assert isinstance(trainer.optimizer, tbptt.AdamW) and trainer.optimizer.weight_decay == 0.01
    # model.npz holds the best epoch's parameters, trainer.npz the last update's
    assert header["results"]["val_loss"] == pytest.approx(history["val_loss"][best])
    if best != history["epochs"] - 1:
        assert not np.array_equal(model.flat_parameters, trainer.model.flat_parameters)
    with pytest.raises(SystemExit):
        cli.main(["train", "--resume", str(out), "--dropout", "0.2"])
    assert "--dropout cannot change" in capsys.readouterr().err


def test_the_text_defaults_are_the_studys_choice():
    """docs/main_job.md: text trains a GRU 1 x 384 with dropout 0.25 and a cosine schedule; the
    defaults of a kind of data win over the common ones."""
    args = cli._parser().parse_args(["train"])
    cli_train._fill_defaults(args)
    assert (args.cell, args.hidden, args.dropout, args.schedule) == ("gru", 384, 0.25, "cosine")
    args = cli._parser().parse_args(["train", "--task", "echo"])
    cli_train._fill_defaults(args)
    assert (args.cell, args.dropout, args.schedule) == ("lstm", 0.0, "constant")


def test_every_command_logs_lines_without_carriage_returns(tmp_path, capsys, monkeypatch):
    """Standard error in a file (not a terminal): every command writes whole lines, as `train`
    does (a progress line every LINE_INTERVAL seconds, 0 here so that each block writes one),
    never a redrawn bar's carriage returns."""
    monkeypatch.setattr(_progress, "LINE_INTERVAL", 0.0)
    small = ["--hidden", "4", "--threads", "1"]
    run = str(tmp_path / "run")
    commands = [
        ["train", "--task", "co2", "--epochs", "2", "--out", run, *small],
        [
            "sweep",
            "--task",
            "echo",
            "--k1",
            "2,4",
            "--k2",
            "4",
            "--steps",
            "200",
            "--points",
            "2",
            "--batch",
            "3",
            "--out",
            str(tmp_path / "sweep"),
            *small,
        ],
        ["forecast", run, "--steps", "5", "--plot", str(tmp_path / "ahead.png")],
        ["info", run],
        [
            "bench",
            "--config",
            "1,4,5,5",
            "--budget",
            "0.01",
            "--repeats",
            "1",
            "--no-torch",
            "--threads",
            "1",
        ],
    ]
    for argv in commands:
        assert cli.main(argv) == 0, argv
        out, err = capsys.readouterr()
        assert "\r" not in out + err, argv
        if argv[0] in ("train", "sweep"):
            assert "% (" in err or "% of the run" in err, argv  # progress lines were written


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out == f"tbptt {tbptt.__version__}\n"
