"""CPU runtime settings: the allocator keeps freed memory for reuse."""

import subprocess
import sys
import textwrap

MEASURE = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from ppuhd.runtime import keep_freed_memory

    def resident_bytes():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    if sys.argv[1] == "keep":
        keep_freed_memory()
    before = resident_bytes()
    block = np.ones(256 * 2**20, dtype=np.uint8)  # touched, so resident
    del block
    print((resident_bytes() - before) / 2**20)
    """
)


def resident_growth_mib(mode):
    out = subprocess.run([sys.executable, "-c", MEASURE, mode], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def test_freed_large_blocks_stay_in_the_process_for_reuse():
    # By default glibc unmaps a freed 256 MiB block; kept, the next large tensor reuses it
    # instead of page-faulting fresh memory in.
    assert resident_growth_mib("default") < 64
    assert resident_growth_mib("keep") > 192
