"""Shared pytest configuration: hypothesis profiles and the reliability counts.

Hypothesis profiles (select with HYPOTHESIS_PROFILE=<name>):

* ``ci``       bounded examples, no deadline (the default when CI is set);
* ``dev``      hypothesis' default number of examples, no deadline (the default);
* ``thorough`` many examples, for a long local run before a release.

Tests marked ``hostile`` are hostile-input cases; a test may also count
several cases (or property examples) with the ``reliability_count`` fixture.
The totals are printed at the end of the run, e.g.
``fastjac reliability: 412 hostile input cases run (412 passed) ...``.
"""
import os
from collections import Counter

import pytest

try:
    from hypothesis import HealthCheck, settings
except ImportError:          # hypothesis is a test extra; tests that need it skip
    settings = None

if settings is not None:
    # function_scoped_fixture: reliability_count is meant to accumulate over examples.
    _quiet = [HealthCheck.too_slow, HealthCheck.data_too_large,
              HealthCheck.function_scoped_fixture]
    settings.register_profile("ci", max_examples=40, deadline=None, print_blob=True,
                              suppress_health_check=_quiet)
    settings.register_profile("dev", max_examples=100, deadline=None,
                              suppress_health_check=_quiet)
    settings.register_profile("thorough", max_examples=2000, deadline=None,
                              suppress_health_check=_quiet)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                         "ci" if os.environ.get("CI") else "dev"))

_COUNTS = Counter()
_OUTCOMES = Counter()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "hostile: a hostile-input case (counted in the reliability summary)")
    config.addinivalue_line(
        "markers", "cluster: starts a dask.distributed LocalCluster (bounded, < 60 s in all)")


@pytest.fixture
def reliability_count(record_property):
    """Call ``reliability_count("hostile", k)`` to add k cases to the summary."""
    counts = Counter()

    def add(kind, k=1):
        counts[kind] += k

    yield add
    for kind, k in counts.items():
        record_property(f"reliability:{kind}", k)


_CALL_OUTCOME = {}


def pytest_runtest_logreport(report):
    # The fixture records its counts at teardown, so they arrive with the
    # teardown report; the outcome that matters is the call's.
    if report.when == "call":
        _CALL_OUTCOME[report.nodeid] = report.outcome
        return
    if report.when != "teardown" or report.nodeid not in _CALL_OUTCOME:
        return
    outcome = _CALL_OUTCOME.pop(report.nodeid)
    counted = False
    for name, value in report.user_properties:
        if isinstance(name, str) and name.startswith("reliability:"):
            kind = name.split(":", 1)[1]
            _COUNTS[kind] += value
            _OUTCOMES[kind, outcome] += value
            counted = True
    if not counted and "hostile" in report.keywords:
        _COUNTS["hostile"] += 1
        _OUTCOMES["hostile", outcome] += 1


def pytest_terminal_summary(terminalreporter):
    if not _COUNTS:
        return
    parts = []
    labels = {"hostile": "hostile input cases", "property": "property examples",
              "fuzz": "fuzz inputs", "thread": "threaded calls", "memory": "leak-checked calls"}
    for kind in ("hostile", "property", "fuzz", "thread", "memory"):
        if _COUNTS[kind]:
            failed = _OUTCOMES[kind, "failed"]
            parts.append(f"{_COUNTS[kind]} {labels[kind]}"
                         + (f" ({failed} in failing tests)" if failed else ""))
    terminalreporter.write_sep("=", "fastjac reliability")
    terminalreporter.write_line("fastjac reliability: " + "; ".join(parts) + " run")


@pytest.fixture(scope="module")
def client():
    """A dask.distributed client of a LocalCluster of two worker processes
    on the loopback interface, one per test module that asks for it."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       host="127.0.0.1", dashboard_address=None,
                                       worker_dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()
