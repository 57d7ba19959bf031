"""The README's figures come from commands, not from typing: its size-error example, the forecast
RMSEs (docs/figures/make_readme_figures.py, which also draws the pictures), and its commands,
which .ci/run runs as they are written."""

import importlib.util
import os
import re

import pytest

from tbptt import _sizes, cli

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


README = read("README.md")


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    """docs/figures/make_readme_figures.py's numbers (the pictures are not redrawn)."""
    path = os.path.join(ROOT, "docs", "figures", "make_readme_figures.py")
    spec = importlib.util.spec_from_file_location("make_readme_figures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.numbers(str(tmp_path_factory.mktemp("readme")))


def test_the_forecast_numbers_are_the_commands(figures):
    """The README's figures are the script's, to the digits it prints. Another instruction-set
    module (the sanitizer run's AVX2 build, a wheel on another machine) rounds differently and
    trains a slightly different model: one unit of the last digit is allowed there."""
    (co2, co2_naive), (sun, sun_naive) = figures["co2"], figures["sunspots"]
    found = re.search(r"RMSE of ([\d.]+) ppm against ([\d.]+) ppm for the\nlast value", README)
    assert found, "the co2 sentence"
    assert abs(float(found.group(1)) - co2) <= 0.01 + 1e-9 and found.group(2) == f"{co2_naive:.2f}"
    found = re.search(r"on sunspots (\d+) against\n(\d+) \(", README)
    assert found, "the sunspots sentence"
    assert abs(int(found.group(1)) - sun) <= 1.0 and found.group(2) == f"{sun_naive:.0f}"
    from tbptt import build_info

    if build_info()["isa"] == "avx512":  # the module the README's figures were made with
        assert found.group(1) == f"{sun:.0f}"
        assert re.search(f"RMSE of {co2:.2f} ppm", README)


def test_the_size_error_is_the_commands(monkeypatch, capsys):
    """The README's example, for the machine memory it quotes."""
    example = re.search(r"^\$ tbptt train --hidden 100000\n(.*)$", README, flags=re.M).group(1)
    gib = float(re.search(r"this machine's memory \(([\d.]+) GiB\)", example).group(1))
    monkeypatch.setattr(_sizes, "machine_memory", lambda: int(gib * 2**30))
    assert cli.main(["train", "--hidden", "100000"]) == 2
    assert capsys.readouterr().err.strip() == example


def commands():
    """The commands of the README's first bash block, without comments."""
    block = re.search(
        r"^## The two commands\n.*?```bash\n(.*?)```", README, flags=re.S | re.M
    ).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_two_commands_each_set_up_alone_and_ci_runs_the_tests_as_written():
    main_job, tests = commands()
    for command in (main_job, tests):
        assert command.startswith("python3 -m venv .venv && ")  # a fresh machine: all the set-up
        assert command.count("pip install") == 1 and '".[plot,test]"' in command
    assert main_job.endswith("&& .venv/bin/tbptt train")
    assert tests.endswith("&& .venv/bin/python -m pytest -q")
    # after the main job, the tests without a second build: the part after the install
    run_tests = tests.split(" && ")[-1]
    assert f"so `{run_tests}` alone runs the tests" in README.replace("\n", " ")
    ci = read(".ci", "run").splitlines()
    assert any(line == tests or line.startswith(tests + " || exit 1") for line in ci), (
        f".ci/run does not run the README's test command as written: {tests}"
    )


def test_the_test_extra_named_in_the_readme_is_pyprojects():
    """The README tells how to add the test tools without a second build: their names."""
    tomllib = pytest.importorskip("tomllib")
    extra = tomllib.loads(read("pyproject.toml"))["project"]["optional-dependencies"]["test"]
    names = {re.match(r"[A-Za-z0-9_.-]+", requirement).group(0) for requirement in extra}
    listed = re.search(r"`\.venv/bin/pip install ([^`]*)`, the `test`", README).group(1).split()
    assert set(listed) | {"matplotlib"} == names  # matplotlib: the plot extra's, installed first
