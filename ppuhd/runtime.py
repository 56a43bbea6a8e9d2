"""Process-wide settings, applied only when asked.

Building a model, a trainer or a predictor never changes the process: its
logging, Paddle's flags, the allocator and the thread count stay as they
were. The tools call :func:`configure` first; a script or notebook that wants
the same fast CPU settings calls it too::

    import ppuhd
    ppuhd.runtime.configure()          # all cores, fast CPU kernels, freed memory kept, console log
"""

import ctypes
import logging
import os
import sys

import paddle

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def processes_on_this_machine():
    """Processes sharing this machine's cores (``paddle.distributed.launch`` sets PADDLE_LOCAL_SIZE)."""
    return max(int(os.environ.get("PADDLE_LOCAL_SIZE", os.environ.get("PADDLE_TRAINERS_NUM", 1))), 1)


def is_main_process():
    """Rank 0 of a ``paddle.distributed.launch`` run, or a process run on its own."""
    return int(os.environ.get("PADDLE_TRAINER_ID", 0)) == 0


def keep_freed_memory():
    """Let glibc reuse freed blocks instead of returning them to the OS.

    Paddle's CPU tensors come straight from malloc. glibc serves blocks above
    32 MiB with a fresh mmap and unmaps them on free, so every large tensor
    (a convolution's im2col buffer at 4K is about 1 GB) is page-faulted in
    anew: that took half the time of UHDFour's big convolutions here. Served
    from the heap and kept there, they are reused: UHDFour at 4K ran 1.5x
    faster. The heap fragments where mappings did not, so peak memory rises
    somewhat (+0.4 GiB there), and the process keeps what it has used.
    No-op outside glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, -1)  # never give the top of the heap back
    except (OSError, AttributeError):
        pass


def run_static_programs_in_order():
    """Make Paddle's executor run a static program's operators one at a time, in program order.

    By default it runs independent operators concurrently, so random ones
    (dropout, drop path) draw from the generator in an order that changes from
    run to run, and a ``train.to_static`` run could not be repeated or resumed
    exactly (measured: losses apart from the second step). The trainer applies
    this when a config sets ``train.to_static``.
    """
    paddle.set_flags({"FLAGS_new_executor_serial_run": True})


def configure_logging(is_main=True):
    """INFO lines on the console (warnings only on processes other than rank 0, so N do not print N copies).

    Replaces the root logger's handlers: meant for the tools, which own their
    process. Paddle's and VisualDL's own chatter is kept to warnings.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(console)
    for noisy in ("paddle", "visualdl", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def configure(num_threads=None, fast_cpu=True, keep_memory=True, log=True):
    """Apply the settings the tools run with, to this whole process.

    Args:
        num_threads: CPU threads for Paddle's kernels; default: this
            process's share of the cores (all of them unless launched with
            several processes per machine).
        fast_cpu: turn off Paddle's strided views (``FLAGS_use_stride_kernel``):
            transposes and slices then copy, and the next kernel reads
            contiguous memory; on CPU a ViT training step ran 2.5x faster so.
            Results are identical either way.
        keep_memory: :func:`keep_freed_memory`.
        log: :func:`configure_logging`.
    """
    threads = num_threads or max(1, available_cores() // processes_on_this_machine())
    paddle.base.core.set_num_threads(threads)
    if fast_cpu:
        paddle.set_flags({"FLAGS_use_stride_kernel": False})
    if keep_memory:
        keep_freed_memory()
    if log:
        configure_logging(is_main_process())
    logging.getLogger(__name__).debug("CPU threads per process: %d", threads)


def configure_for(run_settings, log=True):
    """:func:`configure` as a config's ``runtime`` section asks: its ``num_threads`` and ``keep_freed_memory``."""
    configure(num_threads=run_settings.num_threads, keep_memory=run_settings.keep_freed_memory, log=log)
