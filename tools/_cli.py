"""What the tools share: config arguments, and bad input reported as one clear line."""

import contextlib
import sys

import _bootstrap  # noqa: F401

from ppuhd.data.image_io import ImageReadError
from ppuhd.data.loader import BatchSizeError, LoaderWorkerError
from ppuhd.deploy import ExportFolderError, InputSizeError
from ppuhd.engine.checkpoint import CheckpointError
from ppuhd.engine.outputs import OutputError
from ppuhd.registry import ConfigError
from ppuhd.weights import ConversionError, WeightsError
from ppuhd.weights.readers import CheckpointFormatError, StateDictNotFoundError, UnsafeCheckpointError

# Errors caused by what the user gave (config, weights, images, folders) or by the machine
# (a loader worker killed for memory), not by a bug: one line, no traceback.
USER_ERRORS = (ConfigError, WeightsError, ConversionError, CheckpointFormatError, UnsafeCheckpointError,
               StateDictNotFoundError, ImageReadError, BatchSizeError, CheckpointError, OutputError,
               ExportFolderError, InputSizeError, LoaderWorkerError)


def add_config_arguments(parser):
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config value, e.g. -o train.epochs=5 (repeatable)")


@contextlib.contextmanager
def exit_on_user_error():
    """End the tool with the message of a bad-input error instead of a traceback."""
    try:
        yield
    except USER_ERRORS as err:
        kind = "config error" if isinstance(err, ConfigError) else "error"
        sys.exit(f"{kind}: {err}")
