"""Pre-cut large training pairs into sub-images (LLFormer's data preparation), for faster loading.

    ppuhd prepare-patches --input-dir data/UHD-LOL4K/train/low --target-dir data/UHD-LOL4K/train/high \\
        --output data/UHD-LOL4K/train_sub

writes data/UHD-LOL4K/train_sub/{low,high}/<name>_sNNN.png (720x1280 every 720x1280 by
default, the official setting). Train on them with
-o train_dataset.root=... or a PairedImageFolder on the two new folders.
Interrupted runs can be restarted: finished images are skipped.
"""

import logging
import sys

from .. import runtime
from ..data.patches import prepare_patches
from ..engine.logger import Progress
from .common import exit_on_user_error, run_main

logger = logging.getLogger("prepare_patches")


def add_arguments(parser):
    parser.add_argument("--input-dir", required=True, help="low-light images")
    parser.add_argument("--target-dir", required=True, help="reference images, same file names")
    parser.add_argument("--output", required=True, help="folder for the two folders of sub-images")
    parser.add_argument("--size", type=int, nargs=2, default=[720, 1280], metavar=("H", "W"))
    parser.add_argument("--step", type=int, nargs=2, default=[720, 1280], metavar=("H", "W"))
    parser.add_argument("--thresh", type=int, default=0, help="drop a last row/column narrower than this")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")


def run(args):
    runtime.configure_logging()
    progress = None

    def report(total):
        nonlocal progress
        progress = progress or Progress(total, unit="pair")
        progress.update()
        logger.info("cut %s", progress.line())

    with exit_on_user_error():
        try:
            written = prepare_patches(args.input_dir, args.target_dir, args.output, args.size, args.step,
                                      args.thresh, args.workers, on_pair_done=report)
        except (ValueError, FileNotFoundError) as err:  # unpaired or missing folders
            sys.exit(f"error: {err}")
    print(f"wrote {written} sub-image pairs to {args.output}")


def main(argv=None):
    return run_main(sys.modules[__name__], argv)
