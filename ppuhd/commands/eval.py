"""Evaluate weights on the config's validation set; print the metrics and save them as JSON
(and, for enhancement, per-image results as CSV and optionally the enhanced images).

    ppuhd eval -c vit_demo --weights output/vit_demo/checkpoints/best
    ppuhd eval -c CFG --weights model.pdparams --output-dir results/ --save-images
"""

import os
import sys

from .. import runtime
from ..config import load_config
from ..engine.evaluator import evaluate_config
from ..engine.outputs import ensure_writable_dir, refuse_to_replace, remove_paths
from ..engine.reports import write_json
from .common import add_config_arguments, exit_on_user_error, run_main

EVAL_OUTPUTS = ("metrics.json", "per_image.csv", "images")


def claim_results(output_dir, overwrite):
    """Refuse to mix with an earlier evaluation's results, or (``overwrite``) remove them first."""
    earlier = [os.path.join(output_dir, name) for name in EVAL_OUTPUTS]
    if overwrite:
        remove_paths(earlier)
    refuse_to_replace(earlier, "results of an earlier evaluation",
                      "pass --overwrite to replace them, or choose another --output-dir")
    ensure_writable_dir(output_dir)


def add_arguments(parser):
    add_config_arguments(parser)
    parser.add_argument("--weights", required=True, help="checkpoint folder, .pdparams, or a PyTorch/safetensors file")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights of a checkpoint folder")
    parser.add_argument("--output-dir", help="where to write metrics.json, per_image.csv and images/ "
                                             "(default: <runtime.output_dir>/eval)")
    parser.add_argument("--save-images", action="store_true", help="save enhanced images as PNG (enhancement models)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier evaluation there")


def run(args):
    with exit_on_user_error():
        cfg = load_config(args.config, args.override)
        runtime.configure_for(cfg.runtime)
        output_dir = args.output_dir or os.path.join(cfg.runtime.output_dir, "eval")
        claim_results(output_dir, args.overwrite)
        result = evaluate_config(cfg, args.weights, args.ema, output_dir, args.save_images)
    write_json(os.path.join(output_dir, "metrics.json"),
               {"weights": args.weights, "ema": args.ema, "metrics": result.metrics,
                "left_out": result.left_out, "non_finite": result.non_finite})
    for key, value in result.metrics.items():
        print(f"{key}: {value:.4f}")
    if result.left_out:
        print(f"{len(result.left_out)} unpaired or unreadable file(s) left out of these metrics "
              "(listed in metrics.json)")
    print(f"results written to {output_dir}")


def main(argv=None):
    return run_main(sys.modules[__name__], argv)
