#!/usr/bin/env python
"""``ppuhd app``, run from a clone: see ppuhd/commands/app.py."""

import _bootstrap  # noqa: F401  (first: makes the clone importable, sets up the process)

from ppuhd.commands import app

if __name__ == "__main__":
    app.main()
