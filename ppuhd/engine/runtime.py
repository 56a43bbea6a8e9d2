"""Device, CPU threads, processes and seeds."""

import ctypes
import dataclasses
import logging
import os
import random

import numpy as np
import paddle
import paddle.distributed as dist

logger = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


@dataclasses.dataclass
class Runtime:
    device: str  # 'cpu' or 'gpu:N'
    rank: int
    world_size: int

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def on_gpu(self):
        return self.device.startswith("gpu")


def gpu_available():
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _choose_device(requested, local_rank):
    if requested == "auto":
        requested = "gpu" if gpu_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if not requested.startswith("gpu"):
        raise ValueError(f"runtime.device must be auto, cpu, gpu or gpu:N, got {requested!r}")
    if not gpu_available():
        raise RuntimeError(
            f"runtime.device is {requested!r}, but this Paddle has no usable GPU "
            f"(compiled with CUDA: {paddle.is_compiled_with_cuda()}); use device: cpu or auto"
        )
    return requested if ":" in requested else f"gpu:{local_rank}"


def setup_runtime(device="auto", num_threads=None):
    """Select the device, set CPU threads and join the process group if launched with several.

    Under ``python -m paddle.distributed.launch --nproc_per_node N``, each
    process takes its own GPU (or, on CPU, an equal share of the cores).
    """
    world_size = dist.get_world_size()
    if world_size > 1 and not dist.is_initialized():
        dist.init_parallel_env()
    rank = dist.get_rank()
    local_rank = int(os.environ.get("PADDLE_LOCAL_RANK", rank))
    chosen = _choose_device(device, local_rank)
    paddle.set_device(chosen)
    if chosen == "cpu":
        local_processes = int(os.environ.get("PADDLE_LOCAL_SIZE", world_size))
        configure_cpu(num_threads or max(1, available_cores() // max(local_processes, 1)))
    return Runtime(device=chosen, rank=rank, world_size=world_size)


def configure_cpu(num_threads=None):
    """Make Paddle's eager CPU execution fast: threads and contiguous kernels.

    Paddle's eager CPU kernels run single-threaded unless told otherwise. Its
    strided views (transpose, slicing) make the next kernel gather through
    strides, which on CPU cost more than copying: a ViT training step ran
    2.5x faster here with them off. Results are identical either way.
    """
    threads = num_threads or available_cores()
    paddle.base.core.set_num_threads(threads)
    paddle.set_flags({"FLAGS_use_stride_kernel": False})
    keep_freed_memory()
    logger.debug("CPU threads per process: %d", threads)


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


def seed_everything(seed):
    """Seed Python, NumPy and Paddle (used before building models)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)


def step_seed(seed, rank, step):
    """The Paddle seed for one training step.

    Re-seeding each step from (run seed, rank, step) makes dropout and drop
    path a function of the step counter alone, so a resumed run draws exactly
    what an uninterrupted one would.
    """
    return int(np.random.default_rng([seed, rank, step]).integers(2**31 - 1))
