"""Online learning, prequentially (predict each sample, then learn from it): microseconds per
sample and MAE / RMSE of tbptt.river.Regressor, deep-river's LSTMRegressor, a plain PyTorch
TBPTT(1, k2) loop, river's LinearRegression and the last value, on river's bundled regression
streams and on tbptt's CO2 and sunspot series.

    pip install river pandas && pip install --no-deps deep-river   # next to a CPU torch
    python benchmarks/online.py [--rounds 3] [--seeds 5] [--figure docs/figures/online.png]
    python benchmarks/online.py --breakdown     # where tbptt's time per sample goes
    python benchmarks/online.py --grid          # the settings that chose tbptt's defaults
    python benchmarks/online.py --classifier    # the Classifier, with and without recompute
    python benchmarks/online.py --forecaster --seeds 3  # the Forecaster against river's by horizon
    python benchmarks/online.py --forecaster-grid   # the settings that chose its defaults

Every learner sees the stream's numeric features and the previous target (river's
LinearRegression and deep-river get it as a feature "previous"; tbptt and the torch loop take
it themselves). Accuracy comes from full passes: the mean over --seeds initialisations for the
recurrent learners (their spread from seed to seed is larger than most differences between
them), one pass for the others; time per sample is the median over --rounds passes over the first
300 samples of each stream (seed 0), the learners interleaved within each round, one thread.
"""

from __future__ import annotations

import argparse
import collections
import math
import statistics
import time

import numpy as np

H, K2 = 32, 20
TIMED = 300
TOP = 1.3  # the figure's MAE ratios are cut here: the learners near the last value matter


# ---- streams -----------------------------------------------------------------------------------


def streams():
    from river import datasets

    import tbptt

    def numeric(dataset):
        return [
            (
                {
                    k: float(v)
                    for k, v in x.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                },
                float(y),
            )
            for x, y in dataset
        ]

    result = {
        name: numeric(getattr(datasets, name)())
        for name in ("TrumpApproval", "ChickWeights", "AirlinePassengers", "WaterFlow")
    }
    result["CO2 (tbptt)"] = [({}, float(v)) for v in tbptt.datasets.co2()[1]]
    result["sunspots (tbptt)"] = [({}, float(v)) for v in tbptt.datasets.sunspots()[1]]
    return result


# ---- learners: predict_one(x) -> float, learn_one(x, y) -------------------------------------


class LastValue:
    def __init__(self):
        self.last = 0.0

    def predict_one(self, x):
        return self.last

    def learn_one(self, x, y):
        self.last = y


class WithPrevious:
    """A river learner given the previous target as the feature "previous"."""

    def __init__(self, model):
        self.model, self.last = model, 0.0

    def predict_one(self, x):
        return self.model.predict_one({**x, "previous": self.last})

    def learn_one(self, x, y):
        self.model.learn_one({**x, "previous": self.last}, y)
        self.last = y


class TorchTBPTT:
    """A plain PyTorch TBPTT(1, k2) loop with tbptt's recipe: tbptt.river.Regressor itself (its
    inputs, target, statistics and gate), with the engine under it replaced by PyTorch's LSTM
    and Adam (same lr and clipping, head at zero). Each update re-runs the last k2 steps from
    the detached state entering them, with the current weights."""

    def __new__(cls, seed=0, **options):
        import tbptt.river

        class Regressor(tbptt.river.Regressor):
            def _buffers(self):
                super()._buffers()
                self._engine = _TorchEngine(
                    self.trainer_.model.input_size,
                    self.hidden_size,
                    self.k2,
                    self.lr,
                    self.clip_norm,
                    seed,
                )

        return Regressor(**{"hidden_size": H, "k2": K2, "seed": seed, **options})


class _TorchEngine:
    """The two calls tbptt.river.Regressor makes of tbptt's engine, in PyTorch: `train` for one
    step (T = B = 1) and `peek`."""

    def __init__(self, inputs, hidden, k2, lr, clip_norm, seed):
        import torch

        torch.manual_seed(seed)
        self.torch, self.clip_norm = torch, clip_norm
        self.lstm = torch.nn.LSTM(inputs, hidden)
        self.head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.head.weight), torch.nn.init.zeros_(self.head.bias)
        self.params = list(self.lstm.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.Adam(self.params, lr=lr)
        self.window = collections.deque(maxlen=k2)  # the inputs of the last k2 steps
        self.entering = collections.deque(maxlen=k2)  # the state entering each of them
        self.state = None  # the state after the newest step (None: zeros)

    def train(self, x, tokens, y, mask, resets, outputs):
        torch = self.torch
        step = torch.from_numpy(x.copy())
        self.entering.append(self.state)
        self.window.append(step)
        out, _ = self.lstm(torch.cat(list(self.window)), self.entering[0])
        prediction = self.head(out[-1, 0])
        outputs[0, 0, 0] = prediction.item()
        loss = float(mask[0, 0]) * (prediction - float(y[0, 0, 0])).pow(2).sum()
        if mask[0, 0] > 0:
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
            self.opt.step()
        with torch.no_grad():
            _, self.state = self.lstm(step, self.state)
        return [loss.item()]

    def peek(self, x, tokens, outputs):
        with self.torch.no_grad():
            out, _ = self.lstm(self.torch.from_numpy(x.copy())[None], self.state)
            outputs[0, 0] = self.head(out[-1, 0]).item()


def learners():
    from river import linear_model, preprocessing

    import tbptt.river

    made = {  # name: make(seed)
        "tbptt": lambda seed: tbptt.river.Regressor(hidden_size=H, k2=K2, seed=seed),
        "tbptt, recompute=False": lambda seed: tbptt.river.Regressor(
            hidden_size=H, k2=K2, seed=seed, recompute=False
        ),
        "PyTorch TBPTT(1, 20)": TorchTBPTT,
        "river LinearRegression": lambda seed: WithPrevious(
            preprocessing.StandardScaler() | linear_model.LinearRegression()
        ),
        "last value": lambda seed: LastValue(),
    }
    try:
        from deep_river.regression import LSTMRegressor

        made["deep-river LSTMRegressor"] = lambda seed: _DeepRiver(LSTMRegressor, seed)
    except ImportError as error:
        print(f"deep-river is not installed ({error}): left out")
    return made


class _DeepRiver(WithPrevious):
    """deep-river's LSTMRegressor (H = 32, its window of 20, Adam 1e-3), told its feature count
    at the first sample."""

    def __init__(self, cls, seed):
        super().__init__(None)
        self.cls, self.seed = cls, seed

    def learn_one(self, x, y):
        if self.model is None:
            import torch

            torch.manual_seed(self.seed)
            self.model = self.cls(n_features=len(x) + 1, hidden_size=H, window_size=K2, lr=1e-3)
        super().learn_one(x, y)

    def predict_one(self, x):
        return 0.0 if self.model is None else super().predict_one(x)


# ---- measuring ---------------------------------------------------------------------------------


def prequential(learner, data):
    """(predictions (N,), seconds per sample)."""
    predictions = np.empty(len(data))
    tic = time.perf_counter()
    for i, (x, y) in enumerate(data):
        predictions[i] = learner.predict_one(x)
        learner.learn_one(x, y)
    return predictions, (time.perf_counter() - tic) / len(data)


class _NoEngine:
    """An engine that does nothing: what is left of predict_one + learn_one is the Python."""

    def train(self, *args):
        return []

    def peek(self, *args):
        pass


def breakdown(data, rounds):
    """µs per sample of tbptt's predict_one + learn_one on each stream, of the same calls with
    the engine doing nothing (the Python around it), and of the two engine calls alone on the
    learner's own buffers (peek, then a step with an update): medians of interleaved rounds."""
    import tbptt.river

    def learner(stream, engine=None):
        made = tbptt.river.Regressor(hidden_size=H, k2=K2)
        for x, y in stream[:3]:  # started: statistics known, buffers made
            made.predict_one(x)
            made.learn_one(x, y)
        if engine is not None:
            made._engine = engine
        return made

    def engine_alone(made):
        engine, x, y, mask, out = made._engine, made._x, made._y, made._mask, made._out
        x_step, out_step = made._x_step, made._out_step
        mask[0, 0] = 1.0
        tic = time.perf_counter()
        for _ in range(TIMED):
            engine.peek(x_step, False, out_step)
            engine.train(x, False, y, mask, None, out)
        return (time.perf_counter() - tic) / TIMED

    times = collections.defaultdict(list)
    for _ in range(rounds):  # interleaved: every stream and every part once per round
        for name, stream in data.items():
            timed = stream[3 : TIMED + 3]
            times[name, "all"].append(prequential(learner(stream), timed)[1])
            times[name, "python"].append(prequential(learner(stream, _NoEngine()), timed)[1])
            times[name, "engine"].append(engine_alone(learner(stream)))
    us = {key: statistics.median(t) * 1e6 for key, t in times.items()}
    print(f"\nwhere tbptt's time goes (µs per sample, median of {rounds} interleaved rounds):\n")
    print("| stream | features | predict_one + learn_one | the Python alone | the engine alone |")
    print("|---|---:|---:|---:|---:|")
    for name, stream in data.items():
        print(
            f"| {name} | {len(stream[0][0])} | {us[name, 'all']:.1f} | "
            f"{us[name, 'python']:.1f} | {us[name, 'engine']:.1f} |"
        )


SEEDED = ("tbptt", "tbptt, recompute=False", "PyTorch TBPTT(1, 20)", "deep-river LSTMRegressor")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--seeds",
        type=int,
        default=5,
        help="initialisations the recurrent learners' accuracy is averaged over",
    )
    parser.add_argument(
        "--figure", help="write a PNG of µs per sample and MAE relative to the last value"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="only where tbptt's time per sample goes (Python, engine)",
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="only the grid of tbptt's settings that chose its defaults",
    )
    parser.add_argument(
        "--classifier",
        action="store_true",
        help="only tbptt's Classifier with and without recompute, on a synthetic sequence",
    )
    parser.add_argument(
        "--forecaster",
        action="store_true",
        help="only the Forecaster against river's forecasters, per horizon",
    )
    parser.add_argument(
        "--forecaster-grid",
        action="store_true",
        help="only the grid of settings that chose the Forecaster's defaults",
    )
    args = parser.parse_args(argv)
    import tbptt

    tbptt.set_num_threads(1)
    if args.forecaster:
        forecaster_table(seeds=args.seeds)
        return
    if args.forecaster_grid:
        forecaster_grid()
        return
    import torch

    torch.set_num_threads(1)
    if args.breakdown:
        breakdown(streams(), max(args.rounds, 7))
        return
    if args.grid:
        grid(streams())
        return
    if args.classifier:
        classifier()
        return
    data, made = streams(), learners()
    us, per_stream = timing(data, made, args.rounds)
    rows = accuracy(data, made, args.seeds)
    print(
        f"\nµs per sample (median of {args.rounds} interleaved rounds, first {TIMED} samples "
        f"of each stream; H = {H}, k2 = {K2}, one thread):\n"
    )
    short = [stream.split()[0] for stream in data]
    print(f"| learner | all streams | {' | '.join(short)} |\n|---|---:|{'---:|' * len(short)}")
    for name in made:
        print(
            f"| {name} | {us[name]:,.0f} | "
            f"{' | '.join(f'{per_stream[name, stream]:,.0f}' for stream in data)} |"
        )
    print(
        f"\nprequential error (all samples after the first; recurrent learners: mean over "
        f"seeds 0..{args.seeds - 1}, ± the standard deviation of the MAE over seeds):\n"
    )
    print("| stream | N | learner | MAE | RMSE |\n|---|---:|---|---:|---:|")
    for stream_name, n, name, mae, spread, rmse in rows:
        shown = f"{mae:.5g} ± {spread:.2g}" if name in SEEDED else f"{mae:.5g}"
        print(f"| {stream_name} | {n} | {name} | {shown} | {rmse:.4g} |")
    if args.figure:
        _figure(args.figure, us, rows, list(data), list(made))


def timing(data, made, rounds):
    """µs per sample of each learner (median over rounds and streams) and per (learner, stream)."""
    times = {(name, stream): [] for name in made for stream in data}
    for _ in range(rounds):  # interleaved: every learner once per round, on every stream
        for stream_name, stream in data.items():
            for name, make in made.items():
                times[name, stream_name].append(prequential(make(0), stream[:TIMED])[1])
    per_stream = {key: statistics.median(t) * 1e6 for key, t in times.items()}
    us = {
        name: statistics.median(t * 1e6 for (n, _), ts in times.items() if n == name for t in ts)
        for name in made
    }
    return us, per_stream


def accuracy(data, made, seeds):
    """Rows (stream, N, learner, MAE, its standard deviation over seeds, RMSE)."""
    rows = []
    for stream_name, stream in data.items():
        y = np.array([v for _, v in stream])
        for name, make in made.items():
            maes, rmses = [], []
            for seed in range(seeds if name in SEEDED else 1):
                error = prequential(make(seed), stream)[0][1:] - y[1:]  # the first: no forecast
                maes.append(np.abs(error).mean())
                rmses.append(math.sqrt((error**2).mean()))
            rows.append(
                (
                    stream_name,
                    len(stream),
                    name,
                    statistics.mean(maes),
                    statistics.pstdev(maes),
                    statistics.mean(rmses),
                )
            )
    return rows


def classifier(seeds=5, n=3000, scored_from=1000):
    """tbptt.river.Classifier with and without recompute on a synthetic sequence: a period-10
    pattern of 4 labels with 10% of them replaced at random (a perfect learner scores about
    0.92): accuracy of predict_one on samples scored_from..n (mean ± std over seeds) and µs per
    sample (median over seeds)."""
    import tbptt.river

    pattern = list("abcabdacbd")
    for recompute in (True, False):
        accuracies, times = [], []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            labels = [
                pattern[i % len(pattern)] if rng.random() > 0.1 else str(rng.choice(list("abcd")))
                for i in range(n)
            ]
            learner = tbptt.river.Classifier(seed=seed, recompute=recompute)
            correct, tic = 0, time.perf_counter()
            for i, label in enumerate(labels):
                correct += i >= scored_from and learner.predict_one({"z": 0.0}) == label
                learner.learn_one({"z": 0.0}, label)
            times.append((time.perf_counter() - tic) / n * 1e6)
            accuracies.append(correct / (n - scored_from))
        print(
            f"Classifier, recompute={recompute}: accuracy {statistics.mean(accuracies):.4f} "
            f"± {statistics.pstdev(accuracies):.4f}, {statistics.median(times):.1f} µs per sample"
        )


GRID = [  # (label, Regressor settings changed from the defaults); forget_bias is the LSTM's
    ("defaults (lr 3e-3, changes, gate, clip 5, forget bias 0, recompute)", {}),
    ("recompute=False", {"recompute": False}),
    *[(f"lr {lr:g}", {"lr": lr}) for lr in (1e-3, 2e-3, 5e-3)],
    ("changes=False", {"changes": False}),
    ("gate=False", {"gate": False}),
    ("clip=None (plain standardisation)", {"clip": None}),
    ("clip=3", {"clip": 3.0}),
    ("forget bias 1", {"forget_bias": 1.0}),
    ("k2 10", {"k2": 10}),
    ("k2 40", {"k2": 40}),
    ("H 16", {"hidden_size": 16}),
    ("H 64", {"hidden_size": 64}),
    ("GRU", {"cell": "gru"}),
    ("clip_norm 10", {"clip_norm": 10.0}),
    ("clip_norm None", {"clip_norm": None}),
    ("SGD lr 0.03", {"optimizer": "sgd", "lr": 0.03}),
    (
        "session-3 defaults: lr 1e-3, no changes, no gate, clip=None, forget bias 1, no recompute",
        {
            "lr": 1e-3,
            "changes": False,
            "gate": False,
            "clip": None,
            "forget_bias": 1.0,
            "recompute": False,
        },
    ),
]


def grid(data, seeds=(0, 1, 2)):
    """The table of docs/online.md that chose the Regressor's defaults: MAE over the MAE of the
    last value per stream (mean over seeds), one setting changed per row."""
    from unittest import mock

    import tbptt.river

    def mae(learner, stream):
        y = np.array([v for _, v in stream])
        return np.abs(prequential(learner, stream)[0][1:] - y[1:]).mean()

    last = {name: mae(LastValue(), stream) for name, stream in data.items()}
    print(f"| setting | {' | '.join(name.split()[0] for name in data)} | worst | geometric mean |")
    print(f"|---|{'---:|' * (len(data) + 2)}")
    for label, settings in GRID:
        settings = dict(settings)
        bias = settings.pop("forget_bias", None)
        build = tbptt.river.build
        if bias is None:
            forced = build
        else:

            def forced(*a, **k):
                return build(*a, **{**k, "forget_bias": bias})  # noqa: B023 - used in this iteration

        with mock.patch.object(tbptt.river, "build", forced):
            ratios = [
                statistics.mean(
                    mae(tbptt.river.Regressor(seed=seed, **settings), stream) for seed in seeds
                )
                / last[name]
                for name, stream in data.items()
            ]
        print(
            f"| {label} | {' | '.join(f'{r:.3f}' for r in ratios)} | {max(ratios):.3f} | "
            f"{math.exp(statistics.mean(math.log(r) for r in ratios)):.3f} |",
            flush=True,
        )


# ---- forecasting: tbptt.river.Forecaster against river's forecasters ------------------------

HORIZON = 12
SHOWN = (1, 2, 3, 6, 9, 12)  # the horizons of the table (the mean is over all twelve)


def series():
    """{name: (period, [(x, y)])}: river's single time series and tbptt's, as river's
    `evaluate.evaluate` takes them, without features (x = {}: their only one is the date, which
    SNARIMAX's regressor cannot take, and river's documentation feeds y alone)."""
    from river import datasets

    import tbptt

    return {
        name: (period, [({}, float(y)) for y in values])
        for name, period, values in [
            ("AirlinePassengers", 12, [y for _, y in datasets.AirlinePassengers()]),
            ("WaterFlow", 24, [y for _, y in datasets.WaterFlow()]),
            ("CO2 (tbptt)", 52, tbptt.datasets.co2()[1]),
            ("sunspots (tbptt)", 11, tbptt.datasets.sunspots()[1]),
        ]
    }


class LastValueForecaster:
    """Every future value is the last one seen."""

    def __init__(self):
        self.last = 0.0

    def learn_one(self, y, x=None):
        self.last = y

    def forecast(self, horizon, xs=None):
        return [self.last] * horizon


class UntilReady:
    """A river forecaster that cannot forecast before it has seen a season (Holt-Winters with a
    period longer than the horizon evaluate.evaluate warms up with): the last value until then."""

    def __init__(self, model):
        self.model, self.last = model, 0.0

    def learn_one(self, y, x=None):
        self.model.learn_one(y, x)
        self.last = y

    def forecast(self, horizon, xs=None):
        try:
            return self.model.forecast(horizon, xs)
        except IndexError:
            return [self.last] * horizon


def forecasters(name, period):
    """{label: (make(seed) -> forecaster, seeded)}. river's with the settings of river's own
    documentation: SNARIMAX(p=12, d=1, q=12, m=12, sd=1) and HoltWinters(alpha=0.3, beta=0.1,
    gamma=0.6, seasonality=12, multiplicative=True) for AirlinePassengers; HoltWinters(alpha=0.3,
    beta=0.1) for WaterFlow (river's anomaly.ThresholdFilter example); the other series get the
    AirlinePassengers settings with their own period (additive Holt-Winters: sunspots reach 0)."""
    from river import time_series

    import tbptt.river

    if name == "WaterFlow":
        holt = dict(alpha=0.3, beta=0.1, multiplicative=False)
    else:
        holt = dict(
            alpha=0.3,
            beta=0.1,
            gamma=0.6,
            seasonality=period,
            multiplicative=name == "AirlinePassengers",
        )
    return {
        "tbptt Forecaster": (lambda seed: tbptt.river.Forecaster(seed=seed), True),
        "SNARIMAX": (lambda seed: time_series.SNARIMAX(p=12, d=1, q=12, m=period, sd=1), False),
        "Holt-Winters": (lambda seed: UntilReady(time_series.HoltWinters(**holt)), False),
        "last value": (lambda seed: LastValueForecaster(), False),
    }


def horizon_mae(forecaster, data, horizon=HORIZON):
    """(MAE at each horizon 1..horizon as river's evaluate.evaluate measures it, seconds per
    sample of its loop: learn_one and forecast(horizon) at every step)."""
    from river import evaluate, metrics

    tic = time.perf_counter()
    metric = evaluate.evaluate(data, forecaster, metrics.MAE(), horizon=horizon)
    seconds = (time.perf_counter() - tic) / len(data)
    return [m.get() for m in metric.metrics], seconds


def forecaster_table(seeds=3, settings=None):
    """The forecasting table of docs/online.md: MAE per horizon of each forecaster on each
    series (tbptt: the mean over seeds), and µs per sample of evaluate's loop (learn_one +
    forecast(12)); with `settings`, tbptt's Forecaster with those instead of its defaults."""
    import warnings

    print(
        f"\nMAE at horizons {', '.join(f'+{h}' for h in SHOWN)} and the mean over +1..+{HORIZON} "
        f"(river's evaluate.evaluate, horizon {HORIZON}; tbptt: mean over seeds 0..{seeds - 1}); "
        f"µs per sample of the loop (learn_one + forecast({HORIZON})):\n"
    )
    print(f"| series | N | forecaster | {' | '.join(f'+{h}' for h in SHOWN)} | mean | µs |")
    print(f"|---|---:|---|{'---:|' * (len(SHOWN) + 2)}")
    for name, (period, data) in series().items():
        for label, (make, seeded) in forecasters(name, period).items():
            runs = []
            for seed in range(seeds if seeded else 1):
                model = make(seed)
                if settings and seeded:
                    model = model.clone(settings)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # SNARIMAX's overflows on some series
                    runs.append(horizon_mae(model, data))
            mae = np.mean([r[0] for r in runs], axis=0)
            us = statistics.median(r[1] for r in runs) * 1e6
            print(
                f"| {name} | {len(data)} | {label} | "
                f"{' | '.join(f'{mae[h - 1]:.4g}' for h in SHOWN)} | {mae.mean():.4g} | "
                f"{us:,.0f} |",
                flush=True,
            )


FORECASTER_GRID = [  # (label, Forecaster settings changed from the defaults: gate=False)
    ("defaults (the Regressor's but gate=False)", {}),
    ("gate=True (the Regressor's)", {"gate": True}),
    ("changes=False", {"changes": False}),
    *[(f"lr {lr:g}", {"lr": lr}) for lr in (1e-3, 1e-2)],
    ("k2 10", {"k2": 10}),
    ("k2 40", {"k2": 40}),
    ("H 16", {"hidden_size": 16}),
    ("H 64", {"hidden_size": 64}),
    ("GRU", {"cell": "gru"}),
    ("recompute=False", {"recompute": False}),
    ("predict_change=False", {"predict_change": False}),
]


def forecaster_grid(seeds=(0, 1, 2)):
    """The table that chose the Forecaster's defaults: the mean over horizons 1..12 of the MAE
    over that of the last value, per series (mean over seeds), one setting changed per row."""
    import tbptt.river

    data = series()
    last = {
        name: np.mean(horizon_mae(LastValueForecaster(), d)[0]) for name, (_, d) in data.items()
    }
    print(f"| setting | {' | '.join(name.split()[0] for name in data)} | worst | geometric mean |")
    print(f"|---|{'---:|' * (len(data) + 2)}")
    for label, settings in FORECASTER_GRID:
        ratios = [
            statistics.mean(
                np.mean(horizon_mae(tbptt.river.Forecaster(seed=seed, **settings), d)[0])
                for seed in seeds
            )
            / last[name]
            for name, (_, d) in data.items()
        ]
        print(
            f"| {label} | {' | '.join(f'{r:.3f}' for r in ratios)} | {max(ratios):.3f} | "
            f"{math.exp(statistics.mean(math.log(r) for r in ratios)):.3f} |",
            flush=True,
        )


def _figure(path, us, rows, stream_names, names):
    from matplotlib.figure import Figure

    from tbptt.checkpoint import atomic_write

    last = {s: mae for s, _, name, mae, _, _ in rows if name == "last value"}
    fig = Figure(figsize=(12.5, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1, 2))
    left.barh(names, [us[n] for n in names], color="tab:blue")
    left.set_xscale("log")
    left.set_xlabel("µs per sample (predict_one + learn_one), log scale")
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ratios = [
            next(mae for s, _, n, mae, _, _ in rows if s == stream and n == name) / last[stream]
            for stream in stream_names
        ]
        where = np.arange(len(stream_names)) + j * width
        right.bar(where, ratios, width, label=name)
        for x, ratio in zip(where, ratios):  # bars off the top: their value, written
            if ratio > TOP:
                right.text(
                    x,
                    TOP - 0.01,
                    f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×",
                    rotation=90,
                    ha="center",
                    va="top",
                    fontsize=7,
                    color="white",
                )
    right.axhline(1.0, color="gray", linestyle=":")
    right.set_xticks(np.arange(len(stream_names)) + 0.4 - width / 2, stream_names, rotation=20)
    right.set_ylabel("MAE / MAE of the last value")
    right.set_ylim(0.5, TOP)
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # clear of the bars
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


if __name__ == "__main__":
    main()
