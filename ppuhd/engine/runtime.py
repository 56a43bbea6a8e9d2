"""Device, processes and seeds of a run (CPU threads and other process-wide settings: ``ppuhd.runtime``)."""

import dataclasses
import logging
import os
import random

import numpy as np
import paddle
import paddle.distributed as dist

from ..registry import ConfigError

logger = logging.getLogger(__name__)


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


def _choose_device(requested, local_rank):
    if requested == "auto":
        requested = "gpu" if gpu_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if not requested.startswith("gpu"):
        raise ConfigError(f"runtime.device must be auto, cpu, gpu or gpu:N, got {requested!r}")
    if not gpu_available():
        raise ConfigError(
            f"runtime.device is {requested!r}, but this Paddle has no usable GPU "
            f"(compiled with CUDA: {paddle.is_compiled_with_cuda()}); use device: cpu or auto"
        )
    return requested if ":" in requested else f"gpu:{local_rank}"


def setup_runtime(device="auto"):
    """Select the device and join the process group if launched with several.

    Under ``python -m paddle.distributed.launch --nproc_per_node N``, each
    process takes its own GPU (on CPU, ``ppuhd.runtime.configure`` gives each
    an equal share of the cores).
    """
    world_size = dist.get_world_size()
    if world_size > 1 and not dist.is_initialized():
        dist.init_parallel_env()
    rank = dist.get_rank()
    local_rank = int(os.environ.get("PADDLE_LOCAL_RANK", rank))
    chosen = _choose_device(device, local_rank)
    paddle.set_device(chosen)
    return Runtime(device=chosen, rank=rank, world_size=world_size)


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
