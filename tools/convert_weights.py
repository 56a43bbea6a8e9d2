#!/usr/bin/env python
"""``ppuhd convert``, run from a clone: see ppuhd/commands/convert.py."""

import _bootstrap  # noqa: F401  (first: makes the clone importable, sets up the process)

from ppuhd.commands import convert

if __name__ == "__main__":
    convert.main()
