"""The applications: what is built on the trainer (docs/architecture.md, "The layers").

`sweep` (a grid of (k1, k2, reset) configurations, one trainer each) and `sweep_report` (its
table, files and plots), `forecast` (forecasts, samples and backtests of a trained model),
`generate` (text from a character model), `online` and `river` (learning one sample at a time,
River's interface), `bench` (the throughput benchmark). The command line (`tbptt.cli`) and the
PyTorch layers (`tbptt.torch`) are applications too, each a package of its own.

Each keeps its public name at the top of the package (`tbptt.sweep`, `tbptt.river`, ...): the
same module, under both names.
"""
