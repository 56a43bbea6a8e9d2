"""Console and file logs, progress with ETA, and VisualDL scalars and images."""

import logging
import os
import time

from ..runtime import LOG_FORMAT

logger = logging.getLogger(__name__)


class RunLog:
    """Copies the package's log records to ``<output_dir>/<filename>`` until :meth:`close`.

    Attached to the ``ppuhd`` logger only (whose level it lowers to INFO while
    open, and restores): the process's own logging setup is left alone.
    """

    def __init__(self, output_dir, filename="train.log"):
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, filename)
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self.logger = logging.getLogger("ppuhd")
        self.level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)

    def close(self):
        if self.handler in self.logger.handlers:
            self.logger.removeHandler(self.handler)
            self.logger.setLevel(self.level)
        self.handler.close()


def format_duration(seconds):
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Progress:
    """Counts work done and estimates the time left (ETA).

    ``update(n)`` after each piece of work; ``line()`` gives
    ``"12/100 (12%) 3.1/s elapsed 0:00:04 eta 0:00:28"``, or
    ``"12 done, 3.1/s elapsed 0:00:04"`` when the total is not known (None).
    The rate is an average over the recent pieces, so it follows changes in speed.
    """

    def __init__(self, total, unit="it", smoothing=0.2):
        self.total = total
        self.unit = unit
        self.done = 0
        self.start = self.last = time.perf_counter()
        self.smoothing = smoothing
        self.seconds_per_item = None

    def update(self, n=1):
        now = time.perf_counter()
        per_item = (now - self.last) / max(n, 1)
        if self.seconds_per_item is None:
            self.seconds_per_item = per_item
        else:
            self.seconds_per_item += self.smoothing * (per_item - self.seconds_per_item)
        self.done += n
        self.last = now

    @property
    def rate(self):
        return 1.0 / self.seconds_per_item if self.seconds_per_item else 0.0

    @property
    def eta(self):
        return (self.total - self.done) * (self.seconds_per_item or 0.0)

    def line(self):
        if self.total is None:
            return f"{self.done} done, {self.rate:.2f} {self.unit}/s elapsed {format_duration(self.last - self.start)}"
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.done}/{self.total} ({percent:.0f}%) {self.rate:.2f} {self.unit}/s "
            f"elapsed {format_duration(self.last - self.start)} eta {format_duration(self.eta)}"
        )


class VisualDLWriter:
    """VisualDL scalars and images on the main process; does nothing elsewhere or when off.

    VisualDL is an optional dependency (``pip install visualdl``): imported only
    here, and without it a run asked to log to it warns once and logs everything
    else. ``logdir`` is None unless this writer writes there; view it with
    ``visualdl --logdir <output_dir>/vdl``.
    """

    def __init__(self, logdir, enabled=True):
        self.writer = self.logdir = None
        if not enabled:
            return
        try:
            from visualdl import LogWriter
        except ModuleNotFoundError as err:
            if err.name != "visualdl":  # installed but broken: that needs its own message
                raise
            logger.warning("runtime.visualdl is true but VisualDL is not installed, so this run writes no VisualDL "
                           "logs: pip install visualdl (or pip install 'ppuhd[visualdl]'), or set "
                           "-o runtime.visualdl=false to silence this")
            return
        self.writer = LogWriter(logdir=logdir)
        self.logdir = logdir

    def scalar(self, tag, value, step):
        if self.writer:
            self.writer.add_scalar(tag=tag, value=float(value), step=step)

    def image(self, tag, image_hwc_uint8, step):
        if self.writer:
            self.writer.add_image(tag=tag, img=image_hwc_uint8, step=step)

    def close(self):
        if self.writer:
            self.writer.close()
            self.writer = None
