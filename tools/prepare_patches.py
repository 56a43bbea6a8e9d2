#!/usr/bin/env python
"""``ppuhd prepare-patches``, run from a clone: see ppuhd/commands/prepare_patches.py."""

import _bootstrap  # noqa: F401  (first: makes the clone importable, sets up the process)

from ppuhd.commands import prepare_patches

if __name__ == "__main__":
    prepare_patches.main()
