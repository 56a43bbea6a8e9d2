#!/usr/bin/env python
"""``ppuhd compare``, run from a clone: see ppuhd/commands/compare.py."""

import _bootstrap  # noqa: F401  (first: makes the clone importable, sets up the process)

from ppuhd.commands import compare

if __name__ == "__main__":
    compare.main()
