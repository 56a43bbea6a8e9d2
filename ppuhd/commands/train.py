"""Train a model from a config.

    ppuhd train -c vit_demo                   # a shipped config, by name
    ppuhd train -c my_config.yml -o train.epochs=10 -o dataloader.batch_size=32
    ppuhd train -c CFG --resume auto          # continue the latest intact checkpoint
    ppuhd train -c CFG --overwrite            # delete the run already in the output folder, start again
    python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c CFG
"""

import json
import os
import sys

from .. import runtime
from ..config import load_config
from ..engine import train
from .common import add_config_arguments, exit_on_user_error, run_main


def add_arguments(parser):
    add_config_arguments(parser)
    parser.add_argument("--resume", metavar="PATH|auto",
                        help="checkpoint folder to continue from, or 'auto' for the newest intact one in the "
                             "output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="if the output folder holds an earlier run, delete it and start again")


def run(args):
    with exit_on_user_error():
        cfg = load_config(args.config, args.override)
        runtime.configure_for(cfg.runtime)
        summary = train(cfg, args.resume, args.overwrite)
    if summary is None:  # not the main process
        return
    print("\nTraining finished.")
    if summary["final_metrics"]:
        metrics = {k: round(v, 4) for k, v in summary["final_metrics"].items()
                   if k != "step" and isinstance(v, float)}
        print(f"  final validation metrics: {json.dumps(metrics)}")
    weights = summary["best_weights"]
    if summary["best"]:
        best = summary["best"]
        line = f"  best {best['metric']}: {best['value']:.4f} (step {best['step']})"
        if weights:  # the other weights' score at that step, and which of the two to use
            other, value = ((f"ema_{weights['metric']}", weights["ema"]) if best["metric"] == weights["metric"]
                            else (weights["metric"], weights["raw"]))
            which = "the EMA weights (--ema)" if weights["use_ema"] else "the raw weights (not the EMA)"
            line += f"; {other} {value:.4f} there: {which} scored best"
        print(line)
    print(f"  best checkpoint:   {summary['best_checkpoint']}")
    print(f"  latest checkpoint: {summary['latest_checkpoint']}")
    print(f"  merged config:     {summary['config']}")
    print(f"  log:               {summary['log']}")
    print(f"  metrics:           {summary['metrics']}")
    if summary["previews"]:
        print(f"  previews:          {summary['previews']} (validation images as input | output | target, "
              "one PNG per evaluation)")
    if summary["visualdl"]:
        print(f"  VisualDL:          visualdl --logdir {summary['visualdl']}")
    if summary["best_checkpoint"]:
        use = f"-c {summary['config']} --weights {summary['best_checkpoint']}" + (
            " --ema" if weights and weights["use_ema"] else "")
        export_dir = os.path.join(summary["output_dir"], "export")
        print(f"  evaluate the best: {tool_command(args, 'eval')} {use}")
        print(f"  export the best:   {tool_command(args, 'export')} {use} --output {export_dir}")


def tool_command(args, name):
    """How to run command ``name`` the way this one was run: ``ppuhd NAME``, or ``python tools/NAME.py``
    from a clone."""
    if hasattr(args, "command_module"):  # set by ppuhd.cli
        return f"ppuhd {name}"
    return f"python {os.path.join(os.path.dirname(sys.argv[0]), name + '.py')}"


def main(argv=None):
    return run_main(sys.modules[__name__], argv)
