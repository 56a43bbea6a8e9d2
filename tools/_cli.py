"""What the tools share: config arguments, and bad input reported as one clear line."""

import contextlib
import sys

import _bootstrap  # noqa: F401

from ppuhd.errors import UserError
from ppuhd.registry import ConfigError


def add_config_arguments(parser):
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config value, e.g. -o train.epochs=5 (repeatable)")


@contextlib.contextmanager
def exit_on_user_error():
    """End the tool with the message of a bad-input error instead of a traceback."""
    try:
        yield
    except UserError as err:
        kind = "config error" if isinstance(err, ConfigError) else "error"
        sys.exit(f"{kind}: {err}")
