"""Export a trained model for deployment with Paddle Inference.

    ppuhd export -c vit_demo --weights output/vit_demo/checkpoints/best --output output/vit_demo/export

Writes model.json + model.pdiparams (paddle.jit.save) and deploy.yml (input
size, preprocessing, class names), then checks that the exported model gives
the same outputs as the training-time model.
"""

import os
import sys

from .. import runtime
from ..config import load_config
from ..deploy import export_model, max_export_difference
from ..deploy.layout import EXPORT_FILES
from ..engine.outputs import ensure_writable_dir, refuse_to_replace
from ..engine.runtime import setup_runtime
from .common import add_config_arguments, exit_on_user_error, run_main


def add_arguments(parser):
    add_config_arguments(parser)
    parser.add_argument("--weights", required=True, help="checkpoint folder or weights file")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights of a checkpoint folder")
    parser.add_argument("--output", required=True, help="folder to write the exported model to")
    parser.add_argument("--dynamic-size", action="store_true", help="accept any input height and width")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="fixed input size")
    parser.add_argument("--no-verify", action="store_true", help="skip the dygraph-vs-exported output check")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --output")


def run(args):
    runtime.configure()
    setup_runtime(device="cpu")
    with exit_on_user_error():
        if not args.overwrite:
            refuse_to_replace([os.path.join(args.output, name) for name in EXPORT_FILES], "an earlier export's files",
                              "pass --overwrite to replace them, or choose another --output")
        ensure_writable_dir(args.output, "export folder")
        deploy, model = export_model(load_config(args.config, args.override), args.weights, args.output, args.ema,
                                     args.dynamic_size or None, args.input_size)
    print(f"exported {deploy['model']} to {args.output} (input {deploy['input_size']}"
          f"{', any size' if deploy['dynamic_size'] else ''})")
    if not args.no_verify:
        diff = max_export_difference(model, args.output, deploy["input_size"])
        print(f"max |dygraph - exported| on a random batch: {diff:.2e}")


def main(argv=None):
    return run_main(sys.modules[__name__], argv)
