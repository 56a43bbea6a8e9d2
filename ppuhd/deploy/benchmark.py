"""Measuring models: speed, peak memory, multiply-accumulates.

Each measurement runs in its own process (see ``tools/benchmark.py``), so
the peak resident memory it reports belongs to that measurement alone.
Timings exclude warm-up runs and report the median of the timed runs.
"""

import math
import resource
import statistics
import time

import numpy as np
import paddle

from .. import builder
from ..engine.runtime import gpu_available
from ..engine.tiling import first_output, tiled_forward, tiling_arguments
from ..registry import LOSSES, MODELS, TRANSFORMS, ConfigError
from ..weights import load_weights
from .predictor import Predictor

_MAC_OPS = ("pd_op.matmul", "pd_op.conv2d", "pd_op.depthwise_conv2d", "pd_op.conv2d_transpose")


def count_macs(model, input_shape):
    """Multiply-accumulates of the matmuls and convolutions of one forward at ``input_shape``.

    Read from the traced static graph, so attention matmuls count too (unlike
    layer hooks). FFTs and element-wise operations are not counted.
    """
    static = paddle.jit.to_static(model, input_spec=[paddle.static.InputSpec(input_shape, "float32")],
                                  full_graph=True)
    program = static.forward.concrete_program.main_program
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


def peak_memory_gib():
    """Peak memory so far: GPU memory allocated on a GPU, resident memory (RSS) of this process on a CPU."""
    if paddle.device.get_device().startswith("gpu"):
        return paddle.device.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


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
    rng = np.random.default_rng(0)
    batch, (height, width) = case["batch"], case["size"]
    x = rng.random((batch, 3, height, width), dtype=np.float32)
    if case["mode"] == "predictor":
        predictor = Predictor(case["export_dir"])
        run = lambda tiles: predictor.run(tiles)[0]  # noqa: E731
    else:
        model = builder.build(cfg["model"], MODELS, "model")
        if case.get("weights"):
            load_weights(model, case["weights"])
        if case["mode"] == "train":
            return _train_step_case(cfg, model, x, case)
        model.eval()

        def run(tiles):
            with paddle.no_grad():
                return first_output(model(paddle.to_tensor(tiles))).numpy()

    tiling = tiling_arguments(cfg.get("tiling"), case.get("input_multiple", 1)) if case.get("tiled") else None
    if tiling:
        forward = lambda: [tiled_forward(run, image, **tiling) for image in x]  # noqa: E731
    else:
        forward = lambda: run(x)  # noqa: E731
    result = time_runs(forward, case["warmup"], case["runs"])
    return {**result, "peak_memory_gib": peak_memory_gib()}


def _train_step_case(cfg, model, x, case):
    """One optimizer step (batch transform, forward, loss, backward, update) with the config's parts."""
    model.train()
    try:
        criterion = builder.build(cfg["loss"], LOSSES, "loss")
        loss_name = cfg["loss"]["type"]
    except (ConfigError, KeyError):  # a loss needing files absent here (VGG weights, a teacher)
        criterion, loss_name = None, "mean(|output|) (the config's loss could not be built here)"
    mix = builder.build(cfg["batch_transform"], TRANSFORMS, "batch_transform") if cfg.get("batch_transform") else None
    optimizer = paddle.optimizer.AdamW(parameters=model.parameters(), learning_rate=1e-4)
    classes = getattr(model, "num_classes", 0)
    batch = {"image": paddle.to_tensor(x),
             "target": paddle.to_tensor(np.arange(len(x)) % classes) if classes else paddle.to_tensor(x)}
    rng = np.random.default_rng(0)

    def step():
        b = mix(dict(batch), rng) if mix else batch
        outputs = model(b["image"])
        loss = criterion(outputs, b["target"]) if criterion else first_output(outputs).abs().mean()
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()

    return {**time_runs(step, case["warmup"], case["runs"]), "peak_memory_gib": peak_memory_gib(), "loss": loss_name}


def device_name():
    return "gpu" if gpu_available() else "cpu"
