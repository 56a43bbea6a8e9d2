"""Measuring models: speed, peak memory, multiply-accumulates.

Each measurement runs in its own process (see ``ppuhd benchmark``), so
the peak resident memory it reports belongs to that measurement alone.
Timings exclude warm-up runs and report the median of the timed runs.
"""

import math
import resource
import statistics
import time

import numpy as np
import paddle

from ..config import as_run_config
from ..contract import select_output
from ..engine.amp import MixedPrecision
from ..engine.runtime import gpu_available
from ..engine.tasks import build_task
from ..engine.tiling import tiled_forward, tiling_arguments
from ..losses.base import Loss
from ..registry import ConfigError
from ..runtime import run_static_programs_in_order
from ..weights import load_weights
from .predictor import create_predictor

_MAC_OPS = ("pd_op.matmul", "pd_op.conv2d", "pd_op.depthwise_conv2d", "pd_op.conv2d_transpose")


def count_macs(model, input_shape):
    """Multiply-accumulates of the matmuls and convolutions of one forward at ``input_shape``.

    Read from the traced static graph, so attention matmuls count too (unlike
    layer hooks). FFTs and element-wise operations are not counted. Traced in
    evaluation mode (inference's graph).
    """
    was_training = model.training
    model.eval()
    try:
        static = paddle.jit.to_static(model, input_spec=[paddle.static.InputSpec(input_shape, "float32")],
                                      full_graph=True)
        program = static.forward.concrete_program.main_program
    finally:
        if was_training:
            model.train()
    total = 0
    for op in program.global_block().ops:
        name = op.name()
        if name not in _MAC_OPS:
            continue
        out = op.result(0).shape
        if name == "pd_op.matmul":
            a = op.operand_source(0).shape
            total += math.prod(out) * (a[-2] if op.attrs().get("transpose_x") else a[-1])
        elif name == "pd_op.conv2d_transpose":
            weight, source = op.operand_source(1).shape, op.operand_source(0).shape
            total += math.prod(source) * math.prod(weight[1:])
        else:
            total += math.prod(out) * math.prod(op.operand_source(1).shape[1:])
    return total


MATMUL_SIZE = 4096  # the square float32 product that measures the machine's limit


def matmul_gflops(size=MATMUL_SIZE, runs=5):
    """The machine's float32 limit as a benchmark states it: GFLOP/s of Paddle's eager square matmul.

    The best of ``runs`` products (after a warm-up one), on the threads the
    process was configured with.
    """
    rng = np.random.default_rng(0)
    a, b = (paddle.to_tensor(rng.random((size, size), dtype=np.float32)) for _ in range(2))
    float(paddle.matmul(a, b)[0, 0])
    best = math.inf
    for _ in range(runs):
        start = time.perf_counter()
        float(paddle.matmul(a, b)[0, 0])
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def machine_fraction(gmacs, batch, seconds, limit_gflops, training=False):
    """The share of the machine's float32 limit a measurement reached.

    Counts 2 FLOPs per multiply-accumulate of the forward pass (the matmuls
    and convolutions :func:`count_macs` counts), and 3 forwards' worth for a
    training step (forward, and the backward's two products per forward one).
    """
    flops = 2 * gmacs * 1e9 * batch * (3 if training else 1)
    return flops / seconds / (limit_gflops * 1e9)


def peak_memory_gib():
    """Peak memory so far: GPU memory allocated on a GPU, resident memory (RSS) of this process on a CPU.

    On Linux from ``VmHWM`` in /proc/self/status: ``ru_maxrss`` carries over
    fork and exec, so a worker started by a process holding 1.2 GiB reported
    at least 1.2 GiB whatever it used itself.
    """
    if paddle.device.get_device().startswith("gpu"):
        return paddle.device.cuda.max_memory_allocated() / 2**30
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # other systems (Linux reports KiB)


def time_runs(fn, warmup, runs):
    """Seconds per call of ``fn``: the median of ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        if paddle.device.get_device().startswith("gpu"):
            paddle.device.synchronize()
        seconds.append(time.perf_counter() - start)
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "runs": runs}


def run_case(cfg, case):
    """One measurement described by ``case`` (mode, batch, size, export_dir, tiled, warmup, runs)."""
    if case["mode"] == "matmul":
        return {"gflops": matmul_gflops()}
    cfg = as_run_config(cfg)
    rng = np.random.default_rng(0)
    batch, (height, width) = case["batch"], case["size"]
    x = rng.random((batch, 3, height, width), dtype=np.float32)
    tiling = cfg.get("tiling") if case.get("tiled") else None
    if case["mode"] in ("predictor", "onnxruntime"):
        predictor = create_predictor(case["export_dir"], "paddle" if case["mode"] == "predictor" else "onnxruntime")
        arguments = tiling_arguments(tiling, case.get("input_multiple", 1))
        if arguments:
            forward = lambda: [tiled_forward(predictor.predict, image, **arguments) for image in x]  # noqa: E731
        else:
            forward = lambda: predictor.predict(x)  # noqa: E731
    else:
        model = cfg.build_model()
        if case.get("weights"):
            load_weights(model, case["weights"])
        if case["mode"] == "train":
            return _train_step_case(cfg, model, x, case)
        task = build_task(model, tiling=tiling)
        images = paddle.to_tensor(x)
        forward = lambda: select_output(task.predict(images), task.info.primary_output).numpy()  # noqa: E731
    result = time_runs(forward, case["warmup"], case["runs"])
    return {**result, "peak_memory_gib": peak_memory_gib()}


class _MeanAbsoluteOutput(Loss):
    """Stands in for a config's loss that cannot be built here (VGG or teacher weights absent)."""

    def forward(self, outputs, target):
        return select_output(outputs).abs().mean()


def _train_step_case(cfg, model, x, case):
    """One optimizer step of the training task (batch transform, forward, loss, backward, update)."""
    try:
        criterion, loss_name = cfg.build_loss(), cfg["loss"]["type"]
    except ConfigError:  # a loss needing files absent here (VGG weights, a teacher)
        criterion, loss_name = _MeanAbsoluteOutput(), "mean(|output|) (the config's loss could not be built here)"
    if cfg.train.to_static:
        run_static_programs_in_order()  # as the trainer does
    task = build_task(model, criterion, cfg.build_batch_transform(), to_static=cfg.train.to_static)
    optimizer = paddle.optimizer.AdamW(parameters=model.parameters(), learning_rate=1e-4)
    amp = MixedPrecision(cfg.train.amp, gpu_available())
    classes = task.info.num_classes
    batch = {"image": paddle.to_tensor(x), "index": paddle.arange(len(x)),
             "target": paddle.to_tensor(np.arange(len(x)) % classes) if classes else paddle.to_tensor(x)}
    step = lambda: task.train_step(model, optimizer, amp, [batch], seed=0)  # noqa: E731
    return {**time_runs(step, case["warmup"], case["runs"]), "peak_memory_gib": peak_memory_gib(), "loss": loss_name}


def device_name():
    return "gpu" if gpu_available() else "cpu"
