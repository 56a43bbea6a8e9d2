"""Evaluation over a loader, combined across processes."""

import logging
import time

import numpy as np
import paddle
import paddle.distributed as dist

from .logger import Progress

logger = logging.getLogger(__name__)


def all_reduce_sums(sums, world_size):
    """Add up a dict of numbers over all processes (float64, so counts stay exact)."""
    if world_size <= 1 or not sums:
        return dict(sums)
    keys = sorted(sums)
    packed = paddle.to_tensor(np.array([sums[k] for k in keys], dtype=np.float64))
    dist.all_reduce(packed)
    return dict(zip(keys, packed.numpy().tolist()))


def evaluate(model, loader, metrics, world_size=1, log_progress=False, log_seconds=10.0):
    """Run ``model`` over ``loader`` and return ``{metric name: value}``.

    Each process evaluates its share; the metrics' additive sums are added
    across processes before the final values are computed.
    """
    for metric in metrics:
        metric.reset()
    was_training = model.training
    model.eval()
    progress = Progress(len(loader), unit="batch")
    last_log = time.perf_counter()
    with paddle.no_grad():
        for batch in loader:
            outputs = model(batch["image"])
            for metric in metrics:
                metric.update(outputs, batch["target"])
            progress.update()
            if log_progress and time.perf_counter() - last_log > log_seconds:
                logger.info("eval %s", progress.line())
                last_log = time.perf_counter()
    if was_training:
        model.train()
    results = {}
    for metric in metrics:
        results.update(metric.compute(all_reduce_sums(metric.sums(), world_size)))
    return results
