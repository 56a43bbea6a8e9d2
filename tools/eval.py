#!/usr/bin/env python
"""Evaluate weights on the config's validation set; print the metrics and save them as JSON
(and, for enhancement, per-image results as CSV and optionally the enhanced images).

    python tools/eval.py -c configs/demo/vit_demo.yml --weights output/vit_demo/checkpoints/best
    python tools/eval.py -c CFG --weights model.pdparams --output-dir results/ --save-images
"""

import argparse
import json
import os

from _cli import add_config_arguments, exit_on_user_error

from ppuhd.config import RuntimeOptions, load_config, options_from_dict
from ppuhd.engine.evaluator import evaluate_config
from ppuhd.engine.logger import setup_logging


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--weights", required=True, help="checkpoint folder, .pdparams, or a PyTorch/safetensors file")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights of a checkpoint folder")
    parser.add_argument("--output-dir", help="where to write metrics.json, per_image.csv and images/ "
                                             "(default: <runtime.output_dir>/eval)")
    parser.add_argument("--save-images", action="store_true", help="save enhanced images as PNG (enhancement models)")
    args = parser.parse_args(argv)
    setup_logging()
    with exit_on_user_error():
        cfg = load_config(args.config, args.override)
        output_dir = args.output_dir or os.path.join(
            options_from_dict(RuntimeOptions, cfg.get("runtime"), "runtime").output_dir, "eval")
        results = evaluate_config(cfg, args.weights, args.ema, output_dir, args.save_images)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump({"weights": args.weights, "ema": args.ema, "metrics": results}, f, indent=2)
    for key, value in results.items():
        print(f"{key}: {value:.4f}")
    print(f"results written to {output_dir}")


if __name__ == "__main__":
    main()
