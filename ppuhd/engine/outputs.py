"""Where results go: folders checked before any work, and earlier results never replaced unless asked.

Every tool calls these before the first image is computed or the first step
taken, so an unwritable folder or an earlier run in the way is reported in one
line at start-up, not after an hour of work.
"""

import os
import shutil
import tempfile

from ..errors import UserError


class OutputError(UserError, ValueError):
    """A place for results that cannot be used: not writable, or holding results that would be replaced."""


def ensure_writable_dir(folder, what="output folder"):
    """Create ``folder`` if needed and check that a file can be written in it."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the {what} {folder}: {err.strerror or err}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise OutputError(f"cannot write to the {what} {folder}: {err.strerror or err}") from None
    return folder


def refuse_to_replace(paths, what, hint="pass --overwrite to replace them"):
    """Raise OutputError if any of ``paths`` exists (list the first few)."""
    existing = [p for p in paths if os.path.lexists(p)]
    if existing:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise OutputError(f"refusing to replace {what} ({shown}); {hint}")


def remove_paths(paths):
    """Delete each of ``paths`` that exists (a folder with its contents; a link, not what it points to)."""
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


# What a training run writes into its output folder (see Trainer).
RUN_OUTPUTS = ("checkpoints", "metrics.json", "previews", "vdl", "train.log", "config.yml")


def claim_run_dir(output_dir, resume=None, overwrite=False, is_main=True):
    """Make ``output_dir`` ready for a training run.

    A folder holding an earlier run (checkpoints or metrics) is continued only
    with ``resume``; with ``overwrite`` that run's files are removed first
    (only those, see :data:`RUN_OUTPUTS`); otherwise nothing is touched and
    the error says what to do.
    """
    earlier = [os.path.join(output_dir, name) for name in ("checkpoints", "metrics.json")]
    holds_run = os.path.isfile(earlier[1]) or (os.path.isdir(earlier[0]) and os.listdir(earlier[0]))
    if holds_run and not resume:
        if not overwrite:
            raise OutputError(
                f"{output_dir} already holds a training run; pass --resume auto to continue it, "
                f"--overwrite to delete it and start again, or choose another folder "
                f"(-o runtime.output_dir=...)"
            )
        if is_main:
            remove_paths([os.path.join(output_dir, name) for name in RUN_OUTPUTS])
    if is_main:
        ensure_writable_dir(output_dir, "training output folder")
