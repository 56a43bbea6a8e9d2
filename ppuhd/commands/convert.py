"""Convert official PyTorch / timm weights into a ppuhd .pdparams file.

    ppuhd convert -c vit_base_patch16_224 --src vit_base_patch16_224.pth --dst vit_base_patch16_224.pdparams

Reads .pth/.pt (without needing PyTorch: a restricted reader that rebuilds
tensors and refuses anything else), .safetensors and .npz; finds the weights
inside {'model': ...} / {'state_dict': ...} checkpoints (or --key), drops a
'module.' prefix, transposes Linear weights, resizes position embeddings to
the config's input size, and fails on any missing, unexpected or mis-shaped key.
"""

import os
import sys

import paddle

from ..config import load_config
from ..engine.outputs import ensure_writable_dir, refuse_to_replace
from ..weights import convert_torch_state_dict, find_state_dict, load_weights, read_checkpoint
from .common import add_config_arguments, exit_on_user_error, run_main


def add_arguments(parser):
    add_config_arguments(parser)
    parser.add_argument("--src", required=True, help="PyTorch .pth/.pt, .safetensors or .npz file")
    parser.add_argument("--dst", required=True, help="output .pdparams file")
    parser.add_argument("--key", help="entry of the checkpoint that holds the weights (e.g. model_ema)")
    parser.add_argument("--overwrite", action="store_true", help="replace --dst if it exists")


def run(args):
    with exit_on_user_error():
        if not args.overwrite:
            refuse_to_replace([args.dst], "the output file", "pass --overwrite to replace it")
        ensure_writable_dir(os.path.dirname(os.path.abspath(args.dst)), "output folder")
        model = load_config(args.config, args.override).build_model()
        state = convert_torch_state_dict(model, find_state_dict(read_checkpoint(args.src), args.key))
    tmp = f"{args.dst}.tmp-{os.getpid()}"
    paddle.save(state, tmp)
    os.replace(tmp, args.dst)  # never leave a half-written file under the final name
    load_weights(model, args.dst)  # proves the file loads strictly into the model
    params = sum(int(v.size) for v in state.values())
    print(f"converted {len(state)} tensors ({params:,} values) from {args.src} to {args.dst}")


def main(argv=None):
    return run_main(sys.modules[__name__], argv)
