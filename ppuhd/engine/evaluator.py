"""Evaluation over a loader, combined across processes."""

import dataclasses
import logging
import math
import os
import time

import numpy as np
import paddle
import paddle.distributed as dist

from ..config import as_run_config
from ..contract import select_output
from ..data.loader import LEFT_OUT, DataLoader
from ..data.sampler import EvalBatchSampler
from ..weights import load_weights
from .logger import Progress
from .reports import ImageSaver, gather, write_per_image_csv
from .runtime import setup_runtime
from .tasks import build_task

logger = logging.getLogger(__name__)


def all_reduce_sums(sums, world_size):
    """Add up a dict of numbers over all processes (float64, so counts stay exact)."""
    if world_size <= 1 or not sums:
        return dict(sums)
    keys = sorted(sums)
    packed = paddle.to_tensor(np.array([sums[k] for k in keys], dtype=np.float64))
    dist.all_reduce(packed)
    return dict(zip(keys, packed.numpy().tolist()))


@dataclasses.dataclass
class Evaluation:
    """What one evaluation found."""

    metrics: dict  # {metric name: value}
    scored: list  # dataset indices of the samples scored, in evaluation order, process after process
    left_out: list  # files left out: unpaired when the dataset was built, unreadable (dataset.describe)
    left_out_indices: list  # the dataset indices of the unreadable ones
    non_finite: list  # samples scored NaN or infinite by a per-image metric (dataset.describe)

    def warn_left_out(self, where="evaluation"):
        if self.left_out:
            shown = "; ".join(self.left_out[:10])
            if len(self.left_out) > 10:
                shown += f"; ... ({len(self.left_out)} in all)"
            logger.warning("%s: %d unpaired or unreadable file(s) left out of the metrics: %s", where,
                           len(self.left_out), shown)


def evaluate(predict, loader, metrics, world_size=1, log_progress=False, log_seconds=10.0, on_batch=(),
             primary_output=0):
    """Score ``predict`` (images -> outputs, e.g. a task's ``predict``) over ``loader``; return an :class:`Evaluation`.

    ``loader`` is a :class:`~ppuhd.data.loader.DataLoader`. Each process
    evaluates its share; the metrics' additive sums are added across
    processes before the final values are computed. Each callable in
    ``on_batch`` is called with ``(batch, outputs, prediction)``, the
    prediction being output ``primary_output`` (saving images, previews).
    Samples a dataset with ``on_error: skip`` could not read are left out of
    every metric (never replaced by another sample) and listed.
    """
    for metric in metrics:
        metric.reset()
    progress = Progress(len(loader), unit="batch")
    last_log = time.perf_counter()
    left_out, scored = [], []
    with paddle.no_grad():
        for batch in loader:
            left_out += [int(i) for i in batch[LEFT_OUT].numpy()]
            if "image" not in batch:  # every sample of the batch was left out
                progress.update()
                continue
            scored += [int(i) for i in batch["index"].numpy()]
            outputs = predict(batch["image"])
            for metric in metrics:
                metric.update(batch["image"] if metric.source == "input" else outputs, batch["target"])
            prediction = select_output(outputs, primary_output)
            for callback in on_batch:
                callback(batch, outputs, prediction)
            progress.update()
            if log_progress and time.perf_counter() - last_log > log_seconds:
                logger.info("eval %s", progress.line())
                last_log = time.perf_counter()
    results = {}
    for metric in metrics:
        results.update(metric.compute(all_reduce_sums(metric.sums(), world_size)))
    non_finite = set()
    for metric in metrics:
        for index, record in zip(scored, metric.per_image() or ()):
            if not all(math.isfinite(v) for v in record.values()):
                non_finite.add(index)
    left_out = sorted(gather(left_out, world_size))
    non_finite = sorted(gather(sorted(non_finite), world_size))
    dataset = loader.dataset
    names = [f"{path} ({reason})" for path, reason in dataset.excluded] + [dataset.describe(i) for i in left_out]
    return Evaluation(results, gather(scored, world_size), names, left_out, [dataset.describe(i) for i in non_finite])


def evaluate_config(cfg, weights, ema=False, report_dir=None, save_images=False):
    """Evaluate ``weights`` on the config's ``val_dataset`` with its ``metrics``.

    Returns an :class:`Evaluation`; works under ``paddle.distributed.launch``
    too (each process takes a share of the images). With ``report_dir``,
    metrics that score each image (PSNR, SSIM, ...) are written per image to
    ``report_dir/per_image.csv`` (left-out images as rows without values),
    and with ``save_images`` the outputs to ``report_dir/images/``.
    """
    cfg = as_run_config(cfg)
    cfg.require("val_dataset", "metrics", purpose="evaluation")
    runtime = setup_runtime(cfg.runtime.device)
    task = build_task(load_weights(cfg.build_model(), weights, ema=ema), tiling=cfg.get("tiling"))
    dataset = cfg.build_dataset("val")
    loader_options = cfg.dataloader
    sampler = EvalBatchSampler(
        len(dataset), loader_options.val_batch_size or loader_options.batch_size, runtime.rank, runtime.world_size
    )
    metrics = cfg.build_metrics()
    logger.info("evaluating %s on %d images", weights, len(dataset))
    loader = DataLoader(dataset, sampler, loader_options.num_workers)
    callbacks = [ImageSaver(os.path.join(report_dir, "images"), dataset)] if save_images and report_dir else []
    result = evaluate(task.predict, loader, metrics, runtime.world_size, log_progress=True, on_batch=callbacks,
                      primary_output=task.info.primary_output)
    result.warn_left_out()
    per_image = [m.per_image() for m in metrics if m.per_image() is not None]
    if report_dir and per_image:
        records = gather([{k: v for part in parts for k, v in part.items()} for parts in zip(*per_image)],
                         runtime.world_size)
        if runtime.is_main:
            write_per_image_csv(os.path.join(report_dir, "per_image.csv"), dataset, result.scored, records,
                                result.metrics, result.left_out_indices)
    return result
