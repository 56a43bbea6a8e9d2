#!/usr/bin/env python
"""Convert official PyTorch / timm weights into a ppuhd .pdparams file.

    python tools/convert_weights.py -c configs/vit/vit_base_patch16_224.yml \\
        --src vit_base_patch16_224.pth --dst vit_base_patch16_224.pdparams

Reads .pth/.pt (without needing PyTorch: a restricted reader that rebuilds
tensors and refuses anything else), .safetensors and .npz; finds the weights
inside {'model': ...} / {'state_dict': ...} checkpoints (or --key), drops a
'module.' prefix, transposes Linear weights, resizes position embeddings to
the config's input size, and fails on any missing, unexpected or mis-shaped key.
"""

import argparse
import os

import paddle
from _cli import add_config_arguments, exit_on_user_error

from ppuhd.config import load_config
from ppuhd.engine.outputs import ensure_writable_dir, refuse_to_replace
from ppuhd.weights import convert_torch_state_dict, find_state_dict, load_weights, read_checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--src", required=True, help="PyTorch .pth/.pt, .safetensors or .npz file")
    parser.add_argument("--dst", required=True, help="output .pdparams file")
    parser.add_argument("--key", help="entry of the checkpoint that holds the weights (e.g. model_ema)")
    parser.add_argument("--overwrite", action="store_true", help="replace --dst if it exists")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    main()
