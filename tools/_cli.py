"""What the tools share: config arguments, and config errors as one clear line."""

import sys

import _bootstrap  # noqa: F401

from ppuhd.config import load_config
from ppuhd.registry import ConfigError


def add_config_arguments(parser, required=True):
    parser.add_argument("-c", "--config", required=required, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config value, e.g. -o train.epochs=5 (repeatable)")


def load_config_or_exit(args):
    """The config named by the arguments; a config error ends the tool with its message."""
    try:
        return load_config(args.config, args.override)
    except ConfigError as err:
        sys.exit(f"config error: {err}")
