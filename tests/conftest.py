"""Shared test setup."""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (still run in CI)")
    _pin_xdist_worker()


def _pin_xdist_worker():
    """Give each pytest-xdist worker its own share of the cores (inherited by the tools it starts).

    Paddle sizes its thread pool to the cores it may use; without this, two workers on two
    cores would run four spinning threads and lose the time that running in parallel gains.
    """
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))
    if not worker or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= count:
        os.sched_setaffinity(0, cores[int(worker.removeprefix("gw")) :: count])


@pytest.fixture(scope="session", autouse=True)
def fast_cpu():
    """The CPU settings the tools use (threads, contiguous kernels, kept memory); logging left to pytest."""
    from ppuhd.runtime import configure

    configure(log=False)
