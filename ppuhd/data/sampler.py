"""Batch samplers for one or many processes, reproducible and resumable.

Every process draws the same global order (seeded by run seed and epoch) and
takes every N-th sample of each global batch, so N processes with batch B see
exactly the samples one process with batch N*B sees, step by step. A resumed
run starts mid-epoch at the batch where it stopped.
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
        repeats: repeated augmentation (Hoffer et al.; DeiT uses 3): each
            image appears this many times in a row in the global order, each
            copy augmented differently, and since processes take every N-th
            sample, the copies land in different processes, as DeiT's
            RASampler arranges. An epoch keeps ``num_samples`` samples, so it
            sees about num_samples / repeats distinct images.
    """

    def __init__(self, num_samples, batch_size, rank=0, world_size=1, shuffle=True, drop_last=True, seed=0,
                 repeats=1):
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed = seed
        self.repeats = repeats
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
        """The global order of ``(index, copy)`` for ``epoch``, as two arrays."""
        if self.shuffle:
            indices = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        else:
            indices = np.arange(self.num_samples)
        indices = np.repeat(indices, self.repeats)[: self.num_samples]
        copies = np.arange(len(indices)) % self.repeats
        return indices, copies

    def __len__(self):
        return self.num_batches - self.start_batch

    def __iter__(self):
        indices, copies = self.order(self.epoch)
        global_batch = self.batch_size * self.world_size
        needed = self.num_batches * global_batch
        if needed > len(indices):  # wrap around to fill the last batch
            indices, copies = np.resize(indices, needed), np.resize(copies, needed)
        for b in range(self.start_batch, self.num_batches):
            mine = slice(b * global_batch + self.rank, (b + 1) * global_batch, self.world_size)
            yield [SampleKey(int(i), self.epoch, self.seed, int(c)) for i, c in zip(indices[mine], copies[mine])]


class EvalBatchSampler(paddle.io.BatchSampler):
    """Every sample exactly once across processes (rank r takes r, r+N, ...), in order.

    An unreadable sample of a dataset with ``on_error: skip`` is left out, never
    replaced by another, so no image is scored twice.
    """

    def __init__(self, num_samples, batch_size, rank=0, world_size=1):
        self.indices = list(range(rank, num_samples, world_size))
        self.batch_size = batch_size

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.indices), self.batch_size):
            yield [SampleKey(i, substitute=False) for i in self.indices[start : start + self.batch_size]]

