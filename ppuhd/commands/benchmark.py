"""Measure a model's speed and peak memory: eager (dygraph), exported (Paddle Inference) or training.

    ppuhd benchmark -c deit_small_patch16_224 --batch-sizes 1,8 --mode both
    ppuhd benchmark -c uhdfour_uhdll --size 2160x3840 --mode both
    ppuhd benchmark -c llformer_uhdlol4k_test --size 2160x3840 --tiled
    ppuhd benchmark -c deit_small_patch16_224 --mode train --batch-sizes 32
    ppuhd benchmark -c CFG --torch-python /path/to/venv/bin/python   # also time timm's model

Classifiers report images per second and latency per batch; enhancers, seconds per
image at ``--size`` (full frame, or ``--tiled`` with the config's tiling). Each
measurement runs in its own process, so its peak memory (resident memory on a CPU,
allocated device memory on a GPU) is its own. Warm-up runs are excluded; times are
medians. Results are printed as a table and written as JSON (``--json``). With
``--torch-python``, the timm model of the same name is timed in that interpreter
(which needs torch and timm) with the same batch and threads, and the ratio printed;
``--rounds N`` interleaves N rounds of all measurements and keeps each one's best.
"""

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile

import paddle
import ppuhd_command

from .. import cpu, runtime
from ..config import load_config
from ..contract import model_info
from ..deploy import export_model
from ..deploy.benchmark import MATMUL_SIZE, count_macs, device_name, machine_fraction, run_case
from ..engine.outputs import ensure_writable_dir, refuse_to_replace
from ..engine.reports import write_json
from ..engine.runtime import setup_runtime
from .common import add_config_arguments, exit_on_user_error, run_main

logger = logging.getLogger(__name__)

# Run by the --torch-python interpreter, by path: it needs torch and timm, not ppuhd.
TIMM_BENCHMARK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy",
                              "timm_benchmark.py")


# --mode: the measurements each runs
MODES = {"dygraph": ["dygraph"], "predictor": ["predictor"], "onnxruntime": ["onnxruntime"],
         "both": ["dygraph", "predictor"], "deploy": ["predictor", "onnxruntime"], "train": ["train"]}


def parse_size(text):
    height, _, width = text.lower().partition("x")
    return [int(height), int(width)]


def describe_model(cfg):
    """Task, parameter count, reference input size and size multiple of the config's model."""
    model = cfg.build_model()
    info = model_info(model)
    params = sum(math.prod(p.shape) for p in model.parameters() if not p.stop_gradient)
    size = cfg.export.input_size or (list(info.input_size) if info.input_size else [224, 224])
    return model, {"task": info.task, "params": params, "size": size, "input_multiple": info.input_multiple}


RESULT_PREFIX = "benchmark result: "


def run_in_subprocess(command):
    """Run a measurement process; its log lines (a tiled frame's progress) are shown as they come,
    its result is the line starting with ``RESULT_PREFIX``."""
    result = None
    with tempfile.TemporaryFile("w+") as errors:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True) as process:
            for line in process.stdout:
                if line.startswith(RESULT_PREFIX):
                    result = json.loads(line[len(RESULT_PREFIX):])
                else:
                    print("    " + line.rstrip(), flush=True)
        if process.returncode != 0 or result is None:
            errors.seek(0)
            raise RuntimeError(f"measurement failed: {' '.join(command)}\n{errors.read()[-3000:]}")
    return result


def measure(args, case):
    """One measurement in a process of its own: this command with the same config, told to run only ``case``."""
    overrides = [argument for override in args.override for argument in ("-o", override)]
    return run_in_subprocess([sys.executable, ppuhd_command.__file__, "benchmark", "-c", args.config, *overrides,
                              "--case", json.dumps(case)])


def measure_timm(args, name, batch, size, train):
    command = [args.torch_python, TIMM_BENCHMARK, "--model", name, "--batch", str(batch),
               "--size", str(size[0]), str(size[1]), "--threads", str(runtime.available_cores()), "--warmup",
               str(args.warmup), "--runs", str(args.runs)] + (["--train"] if train else [])
    return run_in_subprocess(command)


def run_one_case(cfg, case):
    """Worker: one measurement, its result printed as JSON after ``RESULT_PREFIX``.

    Its log (what it measures; a tiled frame's progress with an ETA) goes to
    the coordinator, which shows it as it comes.
    """
    runtime.configure_for(cfg.runtime)
    setup_runtime()
    if case["mode"] != "matmul":
        logger.info("measuring %s, batch %d, %dx%d%s; warm-up runs: %d, timed runs: %d", case["mode"], case["batch"],
                    *case["size"], " in tiles" if case.get("tiled") else "", case["warmup"], case["runs"])
    print(RESULT_PREFIX + json.dumps(run_case(cfg, case)), flush=True)


def add_arguments(parser):
    add_config_arguments(parser)
    parser.add_argument("--weights", help="weights to load (speed does not depend on them; random by default)")
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes (classifiers, and training steps of any model)")
    parser.add_argument("--size", type=parse_size, help="input HxW (default: the model's reference size)")
    parser.add_argument("--mode", default="both", choices=list(MODES),
                        help="dygraph (eager), predictor (Paddle Inference), onnxruntime (an ONNX export), "
                             "both (dygraph and predictor), deploy (predictor and onnxruntime), train")
    parser.add_argument("--tiled", action="store_true", help="enhancers: run the config's tiling")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat all measurements this many times, interleaved (timm, then each mode), and "
                        "report each one's fastest round: on a shared machine a slow spell then cannot favour one side")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--torch-python", help="a Python with torch and timm: also time timm's model of the same name")
    parser.add_argument("--case", type=json.loads, help=argparse.SUPPRESS)  # a worker's one measurement (JSON)


def run(args):
    if args.case:
        return run_one_case(load_config(args.config, args.override), args.case)
    with exit_on_user_error():
        if args.json:  # checked now, not after an hour of measuring
            if not args.overwrite:
                refuse_to_replace([args.json], "the results file", "pass --overwrite to replace it")
            ensure_writable_dir(os.path.dirname(os.path.abspath(args.json)))
        cfg = load_config(args.config, args.override)
        runtime.configure()
        setup_runtime()
        model, info = describe_model(cfg)
    size = args.size or info["size"]
    info["gmacs"] = count_macs(model, [1, 3, *size]) / 1e9
    enhancer = info["task"] == "enhancement"
    # Enhancers infer one image at a time (tiles batch on their own); training steps take a batch.
    batches = [1] if enhancer and args.mode != "train" else [int(b) for b in args.batch_sizes.split(",")]
    modes = MODES[args.mode]
    results = {"config": args.config, "model": cfg["model"]["type"], "device": device_name(),
               "threads": runtime.available_cores(), "paddle": paddle.__version__, "machine": cpu.machine(), **info,
               "size": size, "cases": []}
    results["machine"]["matmul_gflops"] = limit = measure(args, {"mode": "matmul"})["gflops"]
    with tempfile.TemporaryDirectory() as export_dir:
        export_dirs = {mode: os.path.join(export_dir, mode) for mode in modes if mode in ("predictor", "onnxruntime")}
        if export_dirs:
            weights = args.weights or os.path.join(export_dir, "random.pdparams")
            if not args.weights:
                paddle.save(model.state_dict(), weights)
        if "predictor" in export_dirs:
            export_model(cfg, weights, export_dirs["predictor"], dynamic_size=enhancer, input_size=size)
        if "onnxruntime" in export_dirs:  # fixed size: the config's tiles when tiled
            export_model(cfg, weights, export_dirs["onnxruntime"], input_size=None if args.tiled else size,
                         export_format="onnx")
        for batch in batches:
            best = {}  # per mode (and timm): the fastest round
            for _ in range(args.rounds):
                if args.torch_python and not enhancer:
                    keep_faster(best, "timm", measure_timm(args, cfg["model"]["type"], batch, size, args.mode == "train"))
                for mode in modes:
                    case = {"mode": mode, "batch": batch, "size": size, "export_dir": export_dirs.get(mode),
                            "tiled": args.tiled,
                            "warmup": args.warmup, "runs": args.runs, "weights": args.weights,
                            "input_multiple": info["input_multiple"]}
                    keep_faster(best, mode, measure(args, case))
            timm = best.pop("timm", None)
            for mode in modes:
                result = {"mode": mode, "batch": batch, "rounds": args.rounds, **best[mode]}
                if not args.tiled:  # a tiled run computes overlaps too: its work is not the frame's count
                    result["machine_fraction"] = machine_fraction(info["gmacs"], batch, result["median_s"], limit,
                                                                  training=mode == "train")
                if timm:
                    result.update(timm_median_s=timm["median_s"], timm_peak_memory_gib=timm["peak_memory_gib"],
                                  speed_ratio=timm["median_s"] / result["median_s"])
                results["cases"].append(result)
                print_case(result, enhancer)
    if args.json:
        write_json(args.json, results)
    print(f"{results['model']}: {info['params'] / 1e6:.2f}M parameters, {info['gmacs']:.2f} GMACs at "
          f"{size[0]}x{size[1]}, {results['device']}, {results['threads']} threads")
    print(f"machine: {cpu.describe_machine(results['machine'])}; its float32 limit here: {limit:.0f} GFLOP/s "
          f"(Paddle's {MATMUL_SIZE}x{MATMUL_SIZE} matmul)")


def keep_faster(best, key, result):
    if key not in best or result["median_s"] < best[key]["median_s"]:
        best[key] = result


def print_case(result, enhancer):
    seconds = result["median_s"]
    if result["mode"] == "train":
        speed = f"{seconds:.2f} s/step ({result['batch'] / seconds:.1f} img/s)"
    elif enhancer:
        speed = f"{seconds:.2f} s/image"
    else:
        speed = f"{result['batch'] / seconds:.1f} img/s ({seconds * 1e3:.0f} ms/batch)"
    line = f"{result['mode']:9s} batch {result['batch']:3d}: {speed}, peak memory {result['peak_memory_gib']:.2f} GiB"
    if "machine_fraction" in result:
        line += f", {result['machine_fraction']:.0%} of the machine's limit"
    if "speed_ratio" in result:
        line += f"; timm {result['timm_median_s'] * 1e3:.0f} ms, ratio {result['speed_ratio']:.2f}x"
    print(line, flush=True)



def main(argv=None):
    return run_main(sys.modules[__name__], argv)
