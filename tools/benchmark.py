#!/usr/bin/env python
"""``ppuhd benchmark``, run from a clone: see ppuhd/commands/benchmark.py."""

import _bootstrap  # noqa: F401  (first: makes the clone importable, sets up the process)

from ppuhd.commands import benchmark

if __name__ == "__main__":
    benchmark.main()
