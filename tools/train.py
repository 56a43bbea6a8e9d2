#!/usr/bin/env python
"""Train a model from a config.

    python tools/train.py -c configs/demo/vit_demo.yml
    python tools/train.py -c CFG -o train.epochs=10 -o dataloader.batch_size=32
    python tools/train.py -c CFG --resume auto          # continue the latest checkpoint
    python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c CFG
"""

import argparse
import json
import sys

import _bootstrap  # noqa: F401

from ppuhd.config import load_config
from ppuhd.engine import train
from ppuhd.registry import ConfigError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config value, e.g. -o train.epochs=5 (repeatable)")
    parser.add_argument("--resume", metavar="PATH|auto",
                        help="checkpoint folder to continue from, or 'auto' for the latest in the output folder")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.override)
    except ConfigError as err:
        sys.exit(f"config error: {err}")
    summary = train(cfg, args.resume)
    if summary is None:  # not the main process
        return
    print("\nTraining finished.")
    if summary["final_metrics"]:
        metrics = {k: round(v, 4) for k, v in summary["final_metrics"].items() if k != "step"}
        print(f"  final validation metrics: {json.dumps(metrics)}")
    if summary["best"]:
        best = summary["best"]
        print(f"  best {best['metric']}: {best['value']:.4f} (step {best['step']})")
    print(f"  best checkpoint:   {summary['best_checkpoint']}")
    print(f"  latest checkpoint: {summary['latest_checkpoint']}")
    print(f"  merged config:     {summary['config']}")
    print(f"  log:               {summary['log']}")
    print(f"  metrics:           {summary['metrics']}")
    print(f"  VisualDL:          visualdl --logdir {summary['visualdl']}")


if __name__ == "__main__":
    main()
