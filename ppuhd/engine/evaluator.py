"""Evaluation over a loader, combined across processes."""

import logging
import os
import time

import numpy as np
import paddle
import paddle.distributed as dist

from .. import builder
from ..config import DataLoaderOptions, RuntimeOptions, options_from_dict
from ..data.sampler import EvalBatchSampler, build_loader
from ..registry import DATASETS, METRICS, MODELS
from ..weights import load_weights
from .logger import Progress
from .reports import ImageSaver, IndexRecorder, gather, write_per_image_csv
from .runtime import setup_runtime
from .tiling import evaluation_model

logger = logging.getLogger(__name__)


def all_reduce_sums(sums, world_size):
    """Add up a dict of numbers over all processes (float64, so counts stay exact)."""
    if world_size <= 1 or not sums:
        return dict(sums)
    keys = sorted(sums)
    packed = paddle.to_tensor(np.array([sums[k] for k in keys], dtype=np.float64))
    dist.all_reduce(packed)
    return dict(zip(keys, packed.numpy().tolist()))


def evaluate(model, loader, metrics, world_size=1, log_progress=False, log_seconds=10.0, on_batch=()):
    """Run ``model`` over ``loader`` and return ``{metric name: value}``.

    Each process evaluates its share; the metrics' additive sums are added
    across processes before the final values are computed. Each callable in
    ``on_batch`` is called with ``(batch, outputs)`` (saving images, previews).
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
                metric.update(batch["image"] if metric.source == "input" else outputs, batch["target"])
            for callback in on_batch:
                callback(batch, outputs)
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


def evaluate_config(cfg, weights, ema=False, report_dir=None, save_images=False):
    """Evaluate ``weights`` on the config's ``val_dataset`` with its ``metrics``.

    Returns ``{metric: value}``; works under ``paddle.distributed.launch`` too
    (each process takes a share of the images). With ``report_dir``, metrics
    that score each image (PSNR, SSIM, ...) are written per image to
    ``report_dir/per_image.csv``, and with ``save_images`` the outputs to
    ``report_dir/images/``.
    """
    if not cfg.get("val_dataset") or not cfg.get("metrics"):
        raise ValueError("evaluation needs 'val_dataset' and 'metrics' in the config")
    runtime_options = options_from_dict(RuntimeOptions, cfg.get("runtime"), "runtime")
    loader_options = options_from_dict(DataLoaderOptions, cfg.get("dataloader"), "dataloader")
    runtime = setup_runtime(runtime_options.device, runtime_options.num_threads)
    model = load_weights(builder.build(cfg["model"], MODELS, "model"), weights, ema=ema)
    dataset = builder.build(cfg["val_dataset"], DATASETS, "val_dataset")
    sampler = EvalBatchSampler(
        len(dataset), loader_options.val_batch_size or loader_options.batch_size, runtime.rank, runtime.world_size
    )
    metrics = [builder.build(m, METRICS, f"metrics.{i}") for i, m in enumerate(cfg["metrics"])]
    logger.info("evaluating %s on %d images", weights, len(dataset))
    loader = build_loader(dataset, sampler, loader_options.num_workers)
    order = IndexRecorder()
    callbacks = [order]
    if save_images and report_dir:
        callbacks.append(ImageSaver(os.path.join(report_dir, "images"), dataset))
    results = evaluate(evaluation_model(model, cfg), loader, metrics, runtime.world_size, log_progress=True,
                       on_batch=callbacks)
    per_image = [m.per_image() for m in metrics if m.per_image() is not None]
    if report_dir and per_image:
        indices = gather(order.indices, runtime.world_size)
        records = gather([{k: v for part in parts for k, v in part.items()} for parts in zip(*per_image)],
                         runtime.world_size)
        if runtime.is_main:
            write_per_image_csv(os.path.join(report_dir, "per_image.csv"), dataset, indices, records, results)
    return results
