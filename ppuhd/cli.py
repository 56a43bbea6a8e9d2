"""``ppuhd <command> ...``: the commands of :mod:`ppuhd.commands`, with the flags of ``tools/<tool>.py``.

The installed ``ppuhd`` script runs :func:`main` through ``ppuhd_command``, which
sets up the process first.
"""

import argparse
import importlib

from . import __version__
from .commands import COMMANDS
from .commands.common import parser_options


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ppuhd", allow_abbrev=False,
        description="Train, evaluate, export, deploy and measure the models of ppuhd. "
                    "'ppuhd COMMAND --help' describes a command. A config (-c) is a YAML file or the name "
                    "of a shipped config, e.g. -c deit_small_patch16_224.")
    parser.add_argument("--version", action="version", version=f"ppuhd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"{__package__}.commands.{module_name}")
        command = subparsers.add_parser(name, help=module.__doc__.split("\n", 1)[0], **parser_options(module.__doc__))
        module.add_arguments(command)
        command.set_defaults(command_module=module)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.command_module.run(args)
