"""Test-suite configuration shared by every test file.

- Hypothesis profiles: "dev" (the default: a quick run, new random examples each time, failures
  remembered in .hypothesis/) and "ci" (200 examples per property, derandomized so that a CI run is
  reproducible, no example database). Select one with HYPOTHESIS_PROFILE=ci|dev.
- Slow tests (`@pytest.mark.slow`, e.g. the million-step soak) are skipped unless pytest is given
  `--run-slow` or the environment sets TBPTT_RUN_SLOW=1.
"""

import os

import pytest

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; the property tests importorskip it
    settings = None

if settings is not None:
    # deadline=None: the examples are tiny, but the NumPy reference runs in Python and a busy
    # machine (or a sanitizer build) makes single examples slow now and then.
    _common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
    settings.register_profile("dev", max_examples=25, **_common)
    settings.register_profile("ci", max_examples=200, derandomize=True, database=None, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def one_thread():
    """One engine thread for the test (restored after): tiny models gain nothing from a second
    thread, and on a busy 2-core machine OpenMP's waiting makes two far slower."""
    import tbptt

    before = tbptt.get_num_threads()
    tbptt.set_num_threads(1)
    yield
    tbptt.set_num_threads(before)


@pytest.fixture
def without_matplotlib(monkeypatch):
    """For the test: importing matplotlib fails, as where the `plot` extra is not installed."""
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run tests marked slow (or set TBPTT_RUN_SLOW=1)",
    )


def _run_slow(config):
    return config.getoption("--run-slow") or os.environ.get("TBPTT_RUN_SLOW", "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    if _run_slow(config):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow or TBPTT_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
