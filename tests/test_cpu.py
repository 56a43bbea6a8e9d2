"""MKL's code path on AMD processors: set before Paddle's first matrix product, never over the user's choice."""

import json
import os
import subprocess
import sys

import pytest

from ppuhd import cpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPUINFO = "processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: {model}\nflags\t\t: {flags}\n\n" \
          "processor\t: 1\nvendor_id\t: SecondBlockIgnored\n"
AVX2 = "fpu sse4_2 avx avx2 fma"
AVX512 = AVX2 + " avx512f avx512dq avx512cd avx512bw avx512vl"


def fake_cpuinfo(tmp_path, vendor, model="Some CPU", flags=AVX2):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(vendor=vendor, model=model, flags=flags))
    return str(path)


@pytest.mark.parametrize("vendor", ["AuthenticAMD", "HygonGenuine"])
@pytest.mark.parametrize("flags, path", [(AVX2, "5"), (AVX512, "7"), (AVX2 + " avx512f", "5"),
                                         ("fpu sse4_2 avx", None)])
def test_amd_processors_get_the_widest_mkl_path_they_support(tmp_path, vendor, flags, path):
    environ = {}
    decision = cpu.prefer_fast_mkl_path(environ, fake_cpuinfo(tmp_path, vendor, flags=flags))
    assert environ == ({"MKL_DEBUG_CPU_TYPE": path} if path else {})
    assert decision["set_by_ppuhd"] == bool(path)


@pytest.mark.parametrize("vendor", ["GenuineIntel", ""])
def test_other_processors_are_left_alone(tmp_path, vendor):
    environ = {}
    assert not cpu.prefer_fast_mkl_path(environ, fake_cpuinfo(tmp_path, vendor))["set_by_ppuhd"]
    assert environ == {}
    assert not cpu.prefer_fast_mkl_path(environ, str(tmp_path / "no-such-file"))["set_by_ppuhd"]


@pytest.mark.parametrize("value", ["0", ""])
def test_a_value_the_user_set_always_wins(tmp_path, value):
    environ = {"MKL_DEBUG_CPU_TYPE": value}
    decision = cpu.prefer_fast_mkl_path(environ, fake_cpuinfo(tmp_path, "AuthenticAMD"))
    assert environ == {"MKL_DEBUG_CPU_TYPE": value}
    assert decision == {"value": value, "set_by_ppuhd": False, "reason": "set by the user"}


def test_the_first_processor_block_is_read(tmp_path):
    info = cpu.read_cpuinfo(fake_cpuinfo(tmp_path, "AuthenticAMD", "AMD EPYC 9B14"))
    assert info["vendor_id"] == "AuthenticAMD" and info["model name"] == "AMD EPYC 9B14"


def importing_ppuhd(env_value):
    """MKL_DEBUG_CPU_TYPE as a fresh interpreter sees it after ``import ppuhd`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    if env_value is not None:
        env["MKL_DEBUG_CPU_TYPE"] = env_value
    code = "import json, os, ppuhd; print(json.dumps(os.environ.get('MKL_DEBUG_CPU_TYPE')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_sets_it_on_this_machine_exactly_when_the_processor_is_amd():
    with open("/proc/cpuinfo") as f:
        first = f.read().split("\n\n")[0].splitlines()
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in first if ":" in line}
    flags = set(fields.get("flags", "").split())
    widest = "7" if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= flags else "5"
    expected = widest if fields.get("vendor_id") in ("AuthenticAMD", "HygonGenuine") and "avx2" in flags else None
    assert importing_ppuhd(None) == expected
    assert importing_ppuhd("0") == "0"  # the user's value, untouched


def test_the_allocator_is_named_from_the_libraries_mapped_into_the_process(tmp_path):
    maps = tmp_path / "maps"
    libc = "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
    for library, name in (("libjemalloc.so.2", "jemalloc"), ("libtcmalloc_minimal.so.4", "tcmalloc"), (None, "glibc malloc")):
        preloaded = f"7e00-7e01 r-xp 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/{library}\n" if library else ""
        maps.write_text(preloaded + libc)
        assert cpu.memory_allocator(str(maps)) == name
    assert cpu.memory_allocator(str(tmp_path / "absent")) == "the system's malloc"
    if not os.environ.get("LD_PRELOAD"):
        assert cpu.memory_allocator() == "glibc malloc"  # this process, as Linux maps it
