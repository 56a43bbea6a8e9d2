#!/usr/bin/env python
"""``ppuhd train``, run from a clone: see ppuhd/commands/train.py."""

import _bootstrap  # noqa: F401  (first: makes the clone importable, sets up the process)

from ppuhd.commands import train

if __name__ == "__main__":
    train.main()
