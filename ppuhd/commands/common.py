"""What the commands share: their parsers, config arguments, and bad input reported as one clear line."""

import argparse
import contextlib
import sys

from ..errors import UserError
from ..registry import ConfigError


def parser_options(doc):
    """ArgumentParser keywords of every command: its docstring as help, and no abbreviated flags.

    With abbreviations, ``--output`` would silently mean ``--output-dir``.
    """
    return {"description": doc, "formatter_class": argparse.RawDescriptionHelpFormatter, "allow_abbrev": False}


def run_main(command, argv=None):
    """Parse ``argv`` (default: the command line) with ``command``'s arguments and run it."""
    parser = argparse.ArgumentParser(**parser_options(command.__doc__))
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


def add_config_arguments(parser):
    parser.add_argument("-c", "--config", required=True,
                        help="YAML config file, or the name of a shipped config (e.g. deit_small_patch16_224)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config value, e.g. -o train.epochs=5 (repeatable)")


@contextlib.contextmanager
def exit_on_user_error():
    """End the command with the message of a bad-input error instead of a traceback."""
    try:
        yield
    except UserError as err:
        kind = "config error" if isinstance(err, ConfigError) else "error"
        sys.exit(f"{kind}: {err}")
