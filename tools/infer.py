#!/usr/bin/env python
"""Run an exported model on images (Paddle Inference; oneDNN on CPU, GPU if available).

Classifiers print the top-k classes; enhancement models write the enhanced images.

    python tools/infer.py --model-dir output/vit_demo/export --input photo.jpg --topk 3
    python tools/infer.py --model-dir output/uhdfour_demo/export --input low_light/ --output enhanced/
    python tools/infer.py --model-dir DIR --input frame_8k.png --tile-size 720 1280 --tile-stride 360 640
"""

import argparse
import logging
import os
import sys

import numpy as np
from _cli import exit_on_user_error

from ppuhd.data.image_io import IMAGE_EXTENSIONS, write_image
from ppuhd.deploy import Predictor, top_k
from ppuhd.engine.logger import Progress, setup_logging
from ppuhd.engine.tiling import tiled_forward, tiling_arguments
from ppuhd.metrics.image_quality import quantize

logger = logging.getLogger("infer")


def list_inputs(path):
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            sys.exit(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
        return files
    if not os.path.isfile(path):
        sys.exit(f"input not found: {path}")
    return [path]


def classify(predictor, files, batch_size, k):
    names = predictor.deploy.get("class_names")
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        with exit_on_user_error():
            batch = np.stack([predictor.preprocess(f) for f in chunk])
        logits = predictor.run(batch)[0]  # the first output: the averaged head for distilled models
        for path, row in zip(chunk, logits):
            ranked = ", ".join(f"{name} {p:.3f}" for name, p in top_k(row, k, names))
            print(f"{path}: {ranked}")


def enhance(predictor, files, output_dir, tiling):
    """One image at a time, full frame or tiled; 8-bit PNGs named after the inputs."""
    progress = Progress(len(files), unit="image")
    for path in files:
        with exit_on_user_error():
            image = predictor.preprocess(path)
        if tiling:
            enhanced = tiled_forward(lambda tiles: predictor.run(tiles)[0], image, **tiling, log_seconds=30.0)
        else:
            enhanced = predictor.run(image[None])[0][0]
        enhanced = enhanced.transpose(1, 2, 0)
        target = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        write_image(target, quantize(enhanced))
        progress.update()
        logger.info("%s -> %s (%s)", path, target, progress.line())


def tiling_options(deploy, args):
    """Tiling from the export (the config's ``tiling``), changed by the command line; None: full frames."""
    if args.full_frame:
        return None
    options = dict(deploy.get("tiling") or {})
    if args.tile_size:
        options["tile_size"] = args.tile_size
    if args.tile_stride:
        options["stride"] = args.tile_stride
    return tiling_arguments(options or None, deploy.get("input_multiple", 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="folder written by tools/export.py")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", default="infer_output", help="enhancement: folder for the enhanced images")
    parser.add_argument("--tile-size", type=int, nargs=2, metavar=("H", "W"),
                        help="enhancement: run tiles of this size (default: the config's tiling, if any)")
    parser.add_argument("--tile-stride", type=int, nargs=2, metavar=("H", "W"), help="enhancement: tile step")
    parser.add_argument("--full-frame", action="store_true", help="enhancement: no tiling, whatever the config says")
    parser.add_argument("--topk", type=int, default=5, help="classification: classes to print per image")
    parser.add_argument("--batch-size", type=int, default=8, help="classification: images per batch")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    args = parser.parse_args(argv)
    setup_logging()
    predictor = Predictor(args.model_dir, args.device, args.threads)
    files = list_inputs(args.input)
    if predictor.task == "enhancement":
        with exit_on_user_error():
            tiling = tiling_options(predictor.deploy, args)
        enhance(predictor, files, args.output, tiling)
    else:
        classify(predictor, files, args.batch_size, args.topk)


if __name__ == "__main__":
    main()
