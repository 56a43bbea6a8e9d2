#!/usr/bin/env python
"""``ppuhd export``, run from a clone: see ppuhd/commands/export.py."""

import _bootstrap  # noqa: F401  (first: makes the clone importable, sets up the process)

from ppuhd.commands import export

if __name__ == "__main__":
    export.main()
