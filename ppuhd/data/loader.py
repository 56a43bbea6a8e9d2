"""Batches from a dataset, read in this process or in worker processes.

This replaces ``paddle.io.DataLoader``, whose failure modes lose runs: with
workers, an exception in a sample is re-raised as ``type(message)`` (which
breaks every exception that takes other arguments) from a background thread,
and the training loop sees only "Blocking queue is killed"; without workers
the loop waits forever; a ``kill -9`` of the parent leaves the workers alive
with their shared-memory segments; and an iterator left before its end can
deadlock the next worker forked. Here:

* ``num_workers: 0`` reads each batch in the calling thread: an error is
  raised where it happened.
* ``num_workers: N`` forks N processes that each read whole batches (samples
  and collation) and send them back through a pipe, up to ``prefetch``
  batches per worker ahead, in order. A failure in a worker travels back as
  the exception itself (with the worker's traceback as its ``__cause__``) and
  is raised in the loop; a worker that dies (out of memory, a crash in a
  decoder) ends the iteration with an error naming it, within seconds. The
  kernel kills the workers when the parent dies (``PR_SET_PDEATHSIG``), and
  nothing outlives them: pipes, no shared-memory files.

Batches are dicts of Paddle tensors stacked from the samples' numpy arrays.
Samples left out (``on_error: skip`` during evaluation) arrive as
:class:`~ppuhd.data.base.LeftOutSample` and are removed from the batch; their
indices are its ``left_out`` entry (empty when none was), and a batch of
nothing but left-out samples has no ``image``.
"""

import ctypes
import gc
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import time
import traceback

import numpy as np
import paddle

from ..errors import UserError
from .base import LeftOutSample

logger = logging.getLogger(__name__)

LEFT_OUT = "left_out"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_POLL_SECONDS = 2.0  # how often a waiting loop checks that its workers are alive


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a loader worker (set as its ``__cause__``)."""

    def __str__(self):
        return "\n" + self.args[0]


class BatchSizeError(UserError, ValueError):
    """Samples of one batch that cannot be stacked because their sizes differ."""


class LoaderWorkerError(UserError, RuntimeError):
    """A loader worker process that died without reporting an error."""


class _Failure:
    """An exception raised while reading a batch, in a form that crosses process boundaries."""

    def __init__(self, exc):
        self.trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            self.pickled = pickle.dumps(exc)
            pickle.loads(self.pickled)  # some exception classes cannot be rebuilt from their args
        except Exception:
            self.pickled = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))

    def reraise(self):
        # Made by this package's own worker processes, never read from a file.
        raise pickle.loads(self.pickled) from RemoteTraceback(self.trace)


def read_batch(dataset, keys):
    """The samples of ``keys`` stacked into a batch of numpy arrays."""
    samples = [dataset[key] for key in keys]
    present = [s for s in samples if not isinstance(s, LeftOutSample)]
    left_out = np.array([s.index for s in samples if isinstance(s, LeftOutSample)], dtype=np.int64)
    try:
        batch = {key: np.stack([np.asarray(s[key]) for s in present]) for key in present[0]} if present else {}
    except ValueError:
        raise _size_error(dataset, present) from None
    batch[LEFT_OUT] = left_out
    return batch


def _size_error(dataset, samples):
    sizes = "; ".join(
        f"{dataset.describe(int(s['index']))} {'x'.join(str(n) for n in np.shape(s['image']))}" for s in samples
    )
    return BatchSizeError(
        f"the samples of one batch have different sizes after the transforms and cannot be stacked: {sizes}. "
        "Use a batch size of 1 (dataloader.val_batch_size for evaluation) or add a transform that gives "
        "every sample the same size (RandomCrop, Resize, CenterCrop)"
    )


def _to_tensors(batch):
    return {key: paddle.to_tensor(value) for key, value in batch.items()}


def _die_with_parent(parent):
    """Have the kernel kill this process when ``parent`` dies (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker_loop(dataset, tasks, results, parent):
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle
    try:
        while True:
            task = tasks.get()
            if task is None:
                break
            number, keys = task
            try:
                batch = read_batch(dataset, keys)
            except Exception as exc:
                batch = _Failure(exc)
            results.put((number, batch))
    finally:
        results.close()
        results.join_thread()  # everything sent is in the pipe
        # Skip the interpreter's teardown: collecting the Paddle objects inherited
        # from the parent can block on locks that only the parent's threads release.
        os._exit(0)


class _Workers:
    """``count`` forked processes reading batches; results are handed out in task order."""

    def __init__(self, dataset, count, prefetch):
        context = multiprocessing.get_context("fork")
        self.results = context.Queue()
        self.tasks = [context.SimpleQueue() for _ in range(count)]
        self.prefetch = prefetch * count
        gc.freeze()  # the children never collect (and so never touch) what they inherit
        try:
            self.processes = [
                context.Process(target=_worker_loop, args=(dataset, tasks, self.results, os.getpid()), daemon=True)
                for tasks in self.tasks
            ]
            for process in self.processes:
                process.start()
        finally:
            gc.unfreeze()

    def batches(self, batch_keys):
        """Numpy batches for ``batch_keys``, in order; a worker's failure is raised here."""
        pending = iter(batch_keys)
        sent = received = 0
        waiting = {}
        while True:
            while sent - received < self.prefetch:
                keys = next(pending, None)
                if keys is None:
                    break
                self.tasks[sent % len(self.tasks)].put((sent, keys))
                sent += 1
            if received == sent:
                return
            while received not in waiting:
                number, batch = self._next_result()
                waiting[number] = batch
            batch = waiting.pop(received)
            if isinstance(batch, _Failure):
                batch.reraise()
            yield batch
            received += 1

    def _next_result(self):
        while True:
            try:
                return self.results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                for i, process in enumerate(self.processes):
                    if not process.is_alive():
                        raise LoaderWorkerError(
                            f"data loader worker {i} (pid {process.pid}) exited unexpectedly with code "
                            f"{process.exitcode}{' (killed: out of memory?)' if process.exitcode == -9 else ''}; "
                            "try dataloader.num_workers: 0 to see the error in this process"
                        ) from None

    def close(self):
        """Stop the workers: each finishes its batch and exits; results nobody will read are drained."""
        for tasks, process in zip(self.tasks, self.processes):
            if process.is_alive():
                try:
                    tasks.put(None)
                except OSError:
                    pass
        deadline = time.monotonic() + 5.0
        while any(p.is_alive() for p in self.processes) and time.monotonic() < deadline:
            try:  # a worker exits only once what it sent is in the pipe
                self.results.get(timeout=0.05)
            except queue.Empty:
                pass
        for process in self.processes:
            if process.is_alive():
                process.kill()
            process.join()
        self.results.cancel_join_thread()
        self.results.close()


class DataLoader:
    """Batches of ``dataset`` in the order of ``batch_sampler``, read by ``num_workers`` processes (0: this one).

    Iterating raises the exception a sample raised while loading, of its own
    type and with its own message, in every mode. ``prefetch`` batches per
    worker are read ahead.
    """

    def __init__(self, dataset, batch_sampler, num_workers=0, prefetch=2):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.prefetch = prefetch

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        if self.num_workers == 0:
            for keys in self.batch_sampler:
                yield _to_tensors(read_batch(self.dataset, keys))
            return
        workers = _Workers(self.dataset, self.num_workers, self.prefetch)
        try:
            for batch in workers.batches(self.batch_sampler):
                yield _to_tensors(batch)
        finally:
            workers.close()
