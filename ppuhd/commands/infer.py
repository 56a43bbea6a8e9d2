"""Run an exported model on images (Paddle Inference: oneDNN on CPU, GPU if available; or ONNX Runtime).

Classifiers print the top-k classes; enhancement models write the enhanced images,
as 8-bit PNGs named after the inputs. Inputs are never overwritten, nor are earlier
results unless --overwrite is given.

    ppuhd infer --model-dir output/vit_demo/export --input photo.jpg --topk 3
    ppuhd infer --model-dir output/uhdfour_demo/export --input low_light/ --output enhanced/
    ppuhd infer --model-dir DIR --input frame_8k.png --tile-size 720 1280 --tile-stride 360 640
    ppuhd infer --model-dir DIR --input folder/ --on-error skip   # leave out unreadable files
    ppuhd infer --model-dir ONNX_EXPORT --input low_light/ --output enhanced/ --backend onnxruntime
    ppuhd infer --model-dir DIR --input photo.jpg --device gpu --precision fp16 --tensorrt   # GPU only
"""

import logging
import os
import sys

import numpy as np

from .. import runtime
from ..data.image_io import IMAGE_EXTENSIONS, ImageReadError, write_image
from ..deploy import BACKENDS, BackendError, create_predictor, top_k
from ..deploy.predictor import PRECISIONS, default_backend, gpu_flags_given
from ..engine.logger import Progress
from ..engine.outputs import OutputError, ensure_writable_dir, refuse_to_replace
from ..engine.tiling import tiled_forward, tiling_arguments
from ..metrics.image_quality import quantize
from .common import exit_on_user_error, run_main

logger = logging.getLogger("infer")


def list_inputs(path):
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        if not files:
            raise OutputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
        return files
    if not os.path.isfile(path):
        raise OutputError(f"input not found: {path}")
    return [path]


def output_paths(files, output_dir, overwrite):
    """``{input: output}``, checked before any work: never an input, never two inputs to one file,
    no earlier result replaced unless ``overwrite``."""
    targets = {path: os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
               for path in files}
    inputs = {os.path.realpath(p) for p in files}
    if os.path.realpath(output_dir) in {os.path.dirname(p) for p in inputs}:
        raise OutputError(f"--output {output_dir} is the input folder; choose another folder so the "
                          "inputs are kept as they are")
    by_target = {}
    for path, target in targets.items():
        by_target.setdefault(target, []).append(path)
    clashes = {t: p for t, p in by_target.items() if len(p) > 1}
    if clashes:
        target, sources = next(iter(clashes.items()))
        raise OutputError(f"{len(clashes)} output name(s) would be shared by several inputs, e.g. "
                          f"{', '.join(map(os.path.basename, sources))} would all be written as {target}; "
                          "rename them or run them separately")
    if not overwrite:
        refuse_to_replace(sorted(targets.values()), "results of an earlier run",
                          "pass --overwrite to replace them, or choose another --output")
    ensure_writable_dir(output_dir)
    return targets


def read_inputs(predictor, paths, skip, unreadable):
    """Preprocessed images of ``paths`` as ``[(path, array)]``; unreadable ones recorded (skip) or fatal."""
    read = []
    for path in paths:
        try:
            read.append((path, predictor.preprocess(path)))
        except ImageReadError as err:
            if not skip:
                raise ImageReadError(err.path, f"{err.reason} (--on-error skip leaves such files out)") from err
            logger.warning("skipping %s", err)
            unreadable.append(path)
    return read


def classify(predictor, files, batch_size, k, skip, unreadable):
    names = predictor.deploy.get("class_names")
    for start in range(0, len(files), batch_size):
        images = read_inputs(predictor, files[start : start + batch_size], skip, unreadable)
        if not images:
            continue
        logits = predictor.predict(np.stack([image for _, image in images]))  # distilled: the averaged head
        for (path, _), row in zip(images, logits):
            ranked = ", ".join(f"{name} {p:.3f}" for name, p in top_k(row, k, names))
            print(f"{path}: {ranked}")


def enhance(predictor, targets, tiling, skip, unreadable):
    """One image at a time, full frame or tiled."""
    progress = Progress(len(targets), unit="image")
    for path, target in targets.items():
        for _, image in read_inputs(predictor, [path], skip, unreadable):
            if tiling:
                enhanced = tiled_forward(predictor.predict, image, **tiling, log_seconds=30.0)
            else:
                enhanced = predictor.predict(image[None])[0]
            write_image(target, quantize(enhanced.transpose(1, 2, 0)))
            logger.info("%s -> %s (%s)", path, target, progress.line())
        progress.update()


def tiling_options(deploy, args):
    """Tiling from the export (the config's ``tiling``), changed by the command line; None: full frames."""
    fixed = deploy.get("tile_size")
    if fixed and (args.full_frame or (args.tile_size and list(args.tile_size) != list(fixed))):
        asked = "--full-frame" if args.full_frame else f"--tile-size {args.tile_size[0]} {args.tile_size[1]}"
        raise BackendError(f"{asked}: this export runs tiles of exactly {fixed[0]} {fixed[1]} (H W); export "
                           "again with --input-size H W for other tiles, or with --dynamic-size for any size")
    if args.full_frame:
        return None
    options = dict(deploy.get("tiling") or {})
    if args.tile_size:
        options["tile_size"] = args.tile_size
    if args.tile_stride:
        options["stride"] = args.tile_stride
    return tiling_arguments(options or None, deploy.get("input_multiple", 1))


def add_arguments(parser):
    parser.add_argument("--model-dir", required=True, help="folder written by ppuhd export (tools/export.py)")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", default="infer_output", help="enhancement: folder for the enhanced images")
    parser.add_argument("--overwrite", action="store_true", help="enhancement: replace results already in --output")
    parser.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                        help="an unreadable input stops the run (raise) or is left out and listed at the end (skip)")
    parser.add_argument("--tile-size", type=int, nargs=2, metavar=("H", "W"),
                        help="enhancement: run tiles of this size (default: the config's tiling, if any)")
    parser.add_argument("--tile-stride", type=int, nargs=2, metavar=("H", "W"), help="enhancement: tile step")
    parser.add_argument("--full-frame", action="store_true", help="enhancement: no tiling, whatever the config says")
    parser.add_argument("--topk", type=int, default=5, help="classification: classes to print per image")
    parser.add_argument("--batch-size", type=int, default=8, help="classification: images per batch")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="paddle (Paddle Inference) or onnxruntime (an export made with --format onnx); "
                             "default: the one the export was made for")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--gpu-id", type=int, default=None, help="Paddle Inference on a GPU: the GPU (default 0)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="Paddle Inference on a GPU: compute in fp16 (default fp32)")
    parser.add_argument("--tensorrt", action="store_true",
                        help="Paddle Inference on a GPU: run what TensorRT supports through it, at --precision")


def predictor_options(args, backend):
    """Keyword arguments of ``backend``'s predictor; Paddle Inference's GPU options refused for ONNX Runtime."""
    options = {"device": args.device, "num_threads": args.threads}
    gpu_options = {"gpu_id": args.gpu_id, "tensorrt": args.tensorrt, "precision": args.precision}
    if backend == "paddle":
        return {**options, **gpu_options}
    given = gpu_flags_given(**gpu_options)
    if given:
        raise BackendError(f"{', '.join(given)}: Paddle Inference options; ONNX Runtime takes only --device "
                           "and --threads (or use --backend paddle)")
    return options


def run(args):
    runtime.configure(num_threads=args.threads)
    skip, unreadable = args.on_error == "skip", []
    with exit_on_user_error():
        backend = args.backend or default_backend(args.model_dir)
        predictor = create_predictor(args.model_dir, backend, **predictor_options(args, backend))
        files = list_inputs(args.input)
        if predictor.task == "enhancement":
            tiling = tiling_options(predictor.deploy, args)
            enhance(predictor, output_paths(files, args.output, args.overwrite), tiling, skip, unreadable)
        else:
            classify(predictor, files, args.batch_size, args.topk, skip, unreadable)
    if unreadable:
        logger.warning("%d of %d input(s) could not be read and were left out: %s", len(unreadable), len(files),
                       ", ".join(unreadable))
        sys.exit(1 if len(unreadable) == len(files) else 0)


def main(argv=None):
    return run_main(sys.modules[__name__], argv)
