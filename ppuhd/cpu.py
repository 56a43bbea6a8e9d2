"""The processor, and the one setting that must precede Paddle: MKL's code path on AMD CPUs.

Paddle's CPU wheel runs eager matrix products through the Intel MKL it bundles
(``libmklml_intel.so``). That MKL picks its kernels by CPU vendor: on AMD
processors it takes a generic path. Measured on a 2-core AMD EPYC with
Paddle 3.3.1, a 2048x2048 float32 matmul ran at 36 GFLOP/s, at 98 with
``MKL_DEBUG_CPU_TYPE=5`` (MKL's AVX2 kernels) in the environment and at 172
with ``7`` (its AVX-512 kernels; that EPYC has AVX-512); on another AMD EPYC
(AVX2 only) 30 against 111 with ``5``. MKL reads the variable once, at its first
kernel call (measured: setting it after ``import paddle`` but before the first
matmul works, after the first matmul it does not). ``import ppuhd`` sets it
(see ``ppuhd/__init__.py``) to the widest path the processor supports, only on
AMD (and Hygon) x86 processors, and only
when the variable is unset, so a value you set yourself always wins (an empty
string keeps MKL's own choice). If Paddle ran a matrix product before ppuhd was
imported, the setting comes too late for that process. Paddle Inference's
oneDNN kernels are unaffected either way.

:func:`machine` describes the processor for benchmark reports.
"""

import os
import platform

MKL_VARIABLE = "MKL_DEBUG_CPU_TYPE"
# MKL 2019's code paths by number, as seen in the kernels it then runs: 5 AVX2, 6 and 8 Xeon Phi's
# AVX-512 (8 died with SIGILL on an AMD EPYC), 7 Skylake-server AVX-512 (F, CD, BW, DQ, VL).
MKL_PATHS = (("7", ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")), ("5", ("avx2", "fma")))
VENDORS_WITH_SLOW_MKL = ("AuthenticAMD", "HygonGenuine")
VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512_bf16", "amx_tile", "amx_bf16")
CPUINFO = "/proc/cpuinfo"

# What prefer_fast_mkl_path found when ppuhd was imported (filled in by it).
mkl_setting = {"value": None, "set_by_ppuhd": False, "reason": "not checked"}


def read_cpuinfo(path=CPUINFO):
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block ends at the first blank line
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def prefer_fast_mkl_path(environ=os.environ, cpuinfo_path=CPUINFO):
    """Point Paddle's MKL at the fastest code path an AMD x86 CPU supports, if MKL_DEBUG_CPU_TYPE is unset.

    7 (AVX-512) where the processor has Skylake-server AVX-512, else 5 (AVX2)
    where it has AVX2 and FMA, else nothing.

    Returns what was decided (also kept in :data:`mkl_setting`).
    """
    if MKL_VARIABLE in environ:
        decision = {"value": environ[MKL_VARIABLE], "set_by_ppuhd": False, "reason": "set by the user"}
    else:
        info = read_cpuinfo(cpuinfo_path)
        vendor, flags = info.get("vendor_id", ""), set(info.get("flags", "").split())
        path = next((value for value, needs in MKL_PATHS if flags.issuperset(needs)), None)
        if vendor in VENDORS_WITH_SLOW_MKL and path:
            environ[MKL_VARIABLE] = path
            decision = {"value": path, "set_by_ppuhd": True, "reason": f"{vendor} processor"}
        else:
            decision = {"value": None, "set_by_ppuhd": False, "reason": f"{vendor or 'unknown'} processor"}
    mkl_setting.update(decision)
    return decision


ALLOCATORS = ("jemalloc", "tcmalloc")  # libraries that replace malloc when loaded with LD_PRELOAD
PROCESS_MAPS = "/proc/self/maps"


def memory_allocator(maps_path=PROCESS_MAPS):
    """The malloc this process runs on: 'jemalloc' or 'tcmalloc' if one is loaded, else the C library's."""
    try:
        with open(maps_path) as maps:
            mapped = maps.read()
    except OSError:  # not Linux
        return "the system's malloc"
    return next((name for name in ALLOCATORS if f"lib{name}" in mapped), "glibc malloc")


def machine():
    """The processor, the MKL setting and the allocator, as a benchmark report records them."""
    info = read_cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id", ""),
        "vector_extensions": [name for name in VECTOR_EXTENSIONS if name in flags],
        "logical_cores": os.cpu_count(),
        "mkl_debug_cpu_type": os.environ.get(MKL_VARIABLE),
        "mkl_debug_cpu_type_set_by_ppuhd": mkl_setting["set_by_ppuhd"],
        "allocator": memory_allocator(),
    }


def describe_machine(info=None):
    """One line: processor, vector extensions, the MKL setting, the allocator."""
    info = info or machine()
    mkl = info["mkl_debug_cpu_type"]
    if mkl is None or mkl == "":
        mkl_text = "unset" if mkl is None else "empty (MKL's own choice)"
    else:
        mkl_text = f"{mkl}{' (set by ppuhd)' if info['mkl_debug_cpu_type_set_by_ppuhd'] else ''}"
    extensions = " ".join(info["vector_extensions"]) or "no vector extensions listed"
    return (f"{info['cpu']}, {info['logical_cores']} logical cores, {extensions}, MKL_DEBUG_CPU_TYPE {mkl_text}, "
            f"{info['allocator']}")
