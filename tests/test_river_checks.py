"""river's own estimator checks (`river.checks.yield_checks`, the suite river runs on every
estimator it ships) on tbptt.river's learners with their defaults: every check, one test each.
Run as river's test_estimators.py runs them (on a deep copy of the estimator, skipping what the
estimator's `_unit_test_skips` names: nothing here). river's check datasets need scikit-learn;
without river (or scikit-learn) the module is skipped."""

import copy

import pytest

checks = pytest.importorskip("river.checks")
pytest.importorskip("sklearn")

import tbptt.river  # noqa: E402

LEARNERS = [
    name for name in ("Regressor", "Classifier", "Forecaster") if hasattr(tbptt.river, name)
]


def _cases():
    for name in LEARNERS:
        learner = getattr(tbptt.river, name)()
        seen = {}
        for check in checks.yield_checks(learner):
            number = seen[check.__name__] = seen.get(check.__name__, 0) + 1
            yield pytest.param(name, check, id=f"{name}-{check.__name__}-{number}")


@pytest.mark.parametrize("name, check", list(_cases()))
def test_river_check(name, check):
    learner = getattr(tbptt.river, name)()
    assert check.__name__ not in learner._unit_test_skips()
    check(copy.deepcopy(learner))


def test_every_learner_is_checked():
    assert LEARNERS == ["Regressor", "Classifier", "Forecaster"]
