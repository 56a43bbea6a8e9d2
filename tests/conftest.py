"""Shared test setup."""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (still run in CI)")


@pytest.fixture(scope="session", autouse=True)
def fast_cpu():
    """The CPU settings the tools use (threads, contiguous kernels, kept memory); logging left to pytest."""
    from ppuhd.runtime import configure

    configure(log=False)
