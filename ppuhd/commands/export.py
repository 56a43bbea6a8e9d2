"""Export a trained model for deployment with Paddle Inference, or ONNX Runtime.

    ppuhd export -c vit_demo --weights output/vit_demo/checkpoints/best --output output/vit_demo/export
    ppuhd export -c llformer_demo --weights ... --output export_onnx --format onnx   # 160x160 tiles

Writes model.json + model.pdiparams (paddle.jit.save), with --format onnx also
model.onnx (paddle2onnx; pip install 'ppuhd[onnx]'), and deploy.yml (format,
input or tile size, preprocessing, class names, tiling), then checks that the
exported model gives the same outputs as the training-time model. Enhancers
are exported for fixed tiles (the config's tiling.tile_size, or --input-size)
unless --dynamic-size (Paddle format only) frees H and W.
"""

import os
import sys

from .. import runtime
from ..config import load_config
from ..config.schema import EXPORT_FORMATS
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
    parser.add_argument("--format", choices=EXPORT_FORMATS, default=None,
                        help="paddle (Paddle Inference) or onnx (also model.onnx, for ONNX Runtime); "
                             "default: the config's export.format, else paddle")
    parser.add_argument("--dynamic-size", action="store_true",
                        help="accept any input height and width (Paddle format only)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                        help="fixed input size; for an enhancer the tile size (default: the config's tiling.tile_size)")
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
                                     args.dynamic_size or None, args.input_size, args.format)
    height, width = deploy["input_size"]
    size = ("any size" if deploy["dynamic_size"] else f"tiles of {width}x{height} (WxH)" if deploy["tile_size"]
            else f"input {width}x{height} (WxH)")
    print(f"exported {deploy['model']} to {args.output} as {deploy['format']} ({size})")
    if not args.no_verify:
        backends = ["onnxruntime", "paddle"] if deploy["format"] == "onnx" else ["paddle"]
        for backend in backends:
            diff = max_export_difference(model, args.output, deploy["input_size"], backend)
            print(f"max |dygraph - exported| on a random batch, {backend}: {diff:.2e}")


def main(argv=None):
    return run_main(sys.modules[__name__], argv)
