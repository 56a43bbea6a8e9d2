"""The ``ppuhd`` command's process: set up before Paddle loads, then :func:`ppuhd.cli.main`.

A module of its own, outside the ppuhd package, because importing anything in
ppuhd imports Paddle, and Paddle's C++ core reads its log level once, when it
loads. ``tools/*.py`` in a clone set up their process with it too.
"""

import os
import sys
import warnings


def prepare_process():
    """What every command does to its own process before Paddle is imported."""
    # Paddle's C++ core logs INFO and WARNING lines (executor start-up, pass lists) to stderr;
    # keep them out of the commands' output unless the user asked for them.
    os.environ.setdefault("GLOG_minloglevel", "2")
    # OpenCV's FFmpeg prints its own lines about a damaged video, and OpenCV its backend warnings, to
    # stderr; infer reports such a file in one line of its own. Fatal FFmpeg messages and OpenCV errors stay.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    # Printed at every Paddle import on machines without ccache; irrelevant here.
    warnings.filterwarnings("ignore", message="No ccache found")
    # Printed while tracing models for export; says nothing about the result.
    warnings.filterwarnings("ignore", message="Tensor do not have 'place' interface")


def main(argv=None):
    prepare_process()
    from ppuhd.cli import main as run_command

    return run_command(argv)


if __name__ == "__main__":  # how the benchmark runs each measurement: this file, by path
    sys.exit(main())
