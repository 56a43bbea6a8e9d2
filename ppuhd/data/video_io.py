"""Reading and writing videos one frame at a time with OpenCV's bundled FFmpeg, with errors that name the file.

Only one frame is held at a time, so a long 4K clip needs no more memory than one 4K image.
"""

import logging
import os

import cv2

from ..errors import UserError
from .image_io import InputReadError, temporary_name

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")

# codec name -> (container the video is written in, FourCC); both are written by opencv-python-headless's FFmpeg
VIDEO_CODECS = {
    "mp4v": (".mp4", "mp4v"),  # MPEG-4 Part 2: plays almost everywhere, lossy
    "ffv1": (".mkv", "FFV1"),  # FFmpeg's lossless codec: frames come back exactly as written
}


class VideoReadError(InputReadError):
    """A video file that is missing, unreadable, not a video, or whose frames stop decoding part way."""

    kind = "video"


class VideoWriteError(UserError, OSError):
    """A video that OpenCV's FFmpeg cannot encode (an OpenCV build without FFmpeg, or without the codec)."""


def is_video(path):
    return path.lower().endswith(VIDEO_EXTENSIONS)


class VideoReader:
    """The frames of a video file, decoded one at a time as RGB uint8 arrays [H, W, 3].

    ``fps``, ``width``, ``height`` and ``frame_count`` come from the file's header
    (``frame_count``: None when it gives none; FFmpeg's estimate, duration times
    frame rate, when the container stores no count, so a variable-rate clip may
    hold fewer). Iterating raises :class:`VideoReadError` if decoding stops before
    the end of the duration the header gives (a truncated or damaged file), after
    yielding the frames that did decode. Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, path):
        self.path = path
        if not os.path.isfile(path):
            raise VideoReadError(path, "no such file")
        if os.path.getsize(path) == 0:
            raise VideoReadError(path, "the file is empty")
        # FFmpeg only: OpenCV's other backends would read some non-videos (an image, a file-name pattern)
        self.capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        if not self.capture.isOpened():
            raise VideoReadError(path, "not a decodable video (corrupt, truncated or unsupported format)")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None
        if self.fps <= 0:
            self.close()
            raise VideoReadError(path, "its header gives no frame rate")

    def __iter__(self):
        decoded, last_start = 0, 0.0
        while True:
            ok, frame = self.capture.read()
            if not ok:
                break
            decoded += 1
            last_start = self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if decoded == 0:
            raise VideoReadError(self.path, "no frame could be decoded")
        # Judged by time, not by counting frames: where a container stores no frame count, FFmpeg's is the
        # duration times the frame rate, more than a variable-rate clip holds. Half a frame allows for its rounding.
        reached, duration = last_start + 1 / self.fps, (self.frame_count or 0) / self.fps
        if reached < duration - 0.5 / self.fps:
            raise VideoReadError(self.path, f"decoding stopped after frame {decoded}, {reached:.2f} s into the "
                                            f"{duration:.2f} s its header gives (truncated or damaged file)")

    def close(self):
        self.capture.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class VideoWriter:
    """Writes RGB uint8 frames [H, W, 3] to a video file with one of :data:`VIDEO_CODECS`.

    The size is the first frame's. FFmpeg's writer needs an even width and height,
    so an odd one loses its last column or row (with a warning). The video is
    written under a temporary name and renamed when the ``with`` block ends
    without an error (nothing is written if no frame was); after an error or
    an interruption it is deleted, so a partial video is never left under the
    final name. ``path`` ends with the codec's container extension.
    """

    def __init__(self, path, fps, codec="mp4v"):
        if codec not in VIDEO_CODECS:
            raise ValueError(f"codec must be one of {', '.join(VIDEO_CODECS)}, got {codec!r}")
        if os.path.splitext(path)[1].lower() != VIDEO_CODECS[codec][0]:
            raise ValueError(f"{codec} videos are written as {VIDEO_CODECS[codec][0]} files, not {path}")
        self.path, self.fps, self.codec = path, fps, codec
        self.tmp = temporary_name(path)
        self.writer = self.size = None

    def write(self, rgb):
        height, width = rgb.shape[:2]
        if self.writer is None:
            self._open(width, height)
        if (width, height) != self.frame_size:
            raise ValueError(f"a {width}x{height} frame for {self.path}, whose first frame was "
                             f"{self.frame_size[0]}x{self.frame_size[1]}")
        even = rgb[: self.size[1], : self.size[0]]
        self.writer.write(cv2.cvtColor(even, cv2.COLOR_RGB2BGR))

    def _open(self, width, height):
        self.frame_size = (width, height)
        self.size = (width - width % 2, height - height % 2)
        if self.size != self.frame_size:
            logger.warning("%s: frames are %dx%d, and FFmpeg writes even sizes only, so the video is %dx%d "
                           "(the last column or row left out)", self.path, width, height, *self.size)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.codec][1])
        self.writer = cv2.VideoWriter(self.tmp, cv2.CAP_FFMPEG, fourcc, self.fps, self.size)
        if not self.writer.isOpened():
            raise VideoWriteError(f"cannot write the video {self.path}: OpenCV's FFmpeg could not start the "
                                  f"{self.codec} encoder (is opencv-python-headless installed, with its FFmpeg?)")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if self.writer is not None:
            self.writer.release()
        if exc_type is None and self.writer is not None:
            os.replace(self.tmp, self.path)
        elif os.path.lexists(self.tmp):
            os.remove(self.tmp)
