"""Batch samplers for one or many processes, reproducible and resumable.

Every process draws the same global permutation (seeded by run seed and
epoch) and takes its own slice of each global batch, so N processes with
batch B see exactly the samples one process with batch N*B sees, step by step.
A resumed run starts mid-epoch at the batch where it stopped.
"""

import math

import numpy as np
import paddle

from .base import SampleKey


class TrainBatchSampler(paddle.io.BatchSampler):
    """Shuffled (or ordered) batches of :class:`SampleKey` for training.

    Args:
        num_samples: dataset length.
        batch_size: per process.
        rank, world_size: this process and the number of processes.
        shuffle: a new permutation every epoch.
        drop_last: drop the last incomplete global batch; otherwise it is
            filled by wrapping around to the start of the permutation.
        seed: run seed; also seeds each sample's augmentation.
    """

    def __init__(self, num_samples, batch_size, rank=0, world_size=1, shuffle=True, drop_last=True, seed=0):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed = seed
        self.epoch, self.start_batch = 0, 0
        global_batch = batch_size * world_size
        count = num_samples // global_batch if drop_last else math.ceil(num_samples / global_batch)
        if count == 0:
            raise ValueError(
                f"the dataset has {num_samples} samples, fewer than one global batch "
                f"({batch_size} x {world_size} processes); lower the batch size or set drop_last: false"
            )
        self.num_batches = count

    def set_epoch(self, epoch, start_batch=0):
        """Choose the epoch's permutation; skip ``start_batch`` batches (resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def order(self, epoch):
        """The global order of sample indices for ``epoch``."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def __len__(self):
        return self.num_batches - self.start_batch

    def __iter__(self):
        order = self.order(self.epoch)
        global_batch = self.batch_size * self.world_size
        needed = self.num_batches * global_batch
        if needed > len(order):
            order = np.resize(order, needed)  # wrap around to fill the last batch
        for b in range(self.start_batch, self.num_batches):
            start = b * global_batch + self.rank * self.batch_size
            yield [SampleKey(int(i), self.epoch, self.seed) for i in order[start : start + self.batch_size]]


class EvalBatchSampler(paddle.io.BatchSampler):
    """Every sample exactly once across processes (rank r takes r, r+N, ...), in order."""

    def __init__(self, num_samples, batch_size, rank=0, world_size=1):
        self.indices = list(range(rank, num_samples, world_size))
        self.batch_size = batch_size

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.indices), self.batch_size):
            yield [SampleKey(i) for i in self.indices[start : start + self.batch_size]]


def build_loader(dataset, batch_sampler, num_workers=0):
    """A Paddle DataLoader over ``dataset`` with the given batch sampler."""
    return paddle.io.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        use_shared_memory=num_workers > 0,
        return_list=True,
    )
