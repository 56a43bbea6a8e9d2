"""CPU runtime settings: the allocator keeps freed memory for reuse, unless a config's runtime says not to."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MEASURE = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from ppuhd import runtime
    from ppuhd.config import load_config

    def resident_bytes():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    if sys.argv[1] == "keep":
        runtime.keep_freed_memory()
    elif sys.argv[1].startswith("config:"):  # as train, eval and benchmark apply a config's runtime section
        override = "runtime.keep_freed_memory=" + sys.argv[1].split(":")[1]
        runtime.configure_for(load_config("configs/demo/uhdfour_demo.yml", [override]).runtime, log=False)
    before = resident_bytes()
    block = np.ones(256 * 2**20, dtype=np.uint8)  # touched, so resident
    del block
    print((resident_bytes() - before) / 2**20)
    """
)


def resident_growth_mib(mode):
    out = subprocess.run([sys.executable, "-c", MEASURE, mode], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    return float(out.strip().splitlines()[-1])


def test_freed_large_blocks_stay_in_the_process_for_reuse():
    # By default glibc unmaps a freed 256 MiB block; kept, the next large tensor reuses it
    # instead of page-faulting fresh memory in.
    assert resident_growth_mib("default") < 64
    assert resident_growth_mib("keep") > 192


def test_a_config_can_let_freed_memory_go_back_to_the_system():
    # The lower peak of a memory-tight run (runtime.keep_freed_memory: false), at some speed.
    assert resident_growth_mib("config:false") < 64
    assert resident_growth_mib("config:true") > 192
