#!/usr/bin/env python
"""Classify images with an exported model (Paddle Inference; oneDNN on CPU, GPU if available).

    python tools/infer.py --model-dir output/vit_demo/export --input photo.jpg
    python tools/infer.py --model-dir DIR --input a_folder/ --topk 3
"""

import argparse
import os
import sys

import numpy as np
from _cli import exit_on_user_error

from ppuhd.data.image_io import IMAGE_EXTENSIONS
from ppuhd.deploy import Predictor, top_k


def list_inputs(path):
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            sys.exit(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
        return files
    if not os.path.isfile(path):
        sys.exit(f"input not found: {path}")
    return [path]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="folder written by tools/export.py")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    args = parser.parse_args(argv)
    predictor = Predictor(args.model_dir, args.device, args.threads)
    names = predictor.deploy.get("class_names")
    files = list_inputs(args.input)
    for start in range(0, len(files), args.batch_size):
        chunk = files[start : start + args.batch_size]
        with exit_on_user_error():
            batch = np.stack([predictor.preprocess(f) for f in chunk])
        logits = predictor.run(batch)[0]  # the first output: the averaged head for distilled models
        for path, row in zip(chunk, logits):
            ranked = ", ".join(f"{name} {p:.3f}" for name, p in top_k(row, args.topk, names))
            print(f"{path}: {ranked}")


if __name__ == "__main__":
    main()
