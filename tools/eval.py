#!/usr/bin/env python
"""``ppuhd eval``, run from a clone: see ppuhd/commands/eval.py."""

import _bootstrap  # noqa: F401  (first: makes the clone importable, sets up the process)

from ppuhd.commands import eval

if __name__ == "__main__":
    eval.main()
