#!/usr/bin/env python
"""``ppuhd infer``, run from a clone: see ppuhd/commands/infer.py."""

import _bootstrap  # noqa: F401  (first: makes the clone importable, sets up the process)

from ppuhd.commands import infer

if __name__ == "__main__":
    infer.main()
