"""Reading images from disk into RGB numpy arrays, with errors that name the file."""

import io
import logging
import os

import cv2
import numpy as np
from PIL import Image

from ..errors import UserError

logger = logging.getLogger(__name__)
_noted = set()


def _note_once(kind, path, message):
    """Log a conversion once per process and kind, not once per image."""
    if kind not in _noted:
        _noted.add(kind)
        logger.info("%s (first seen: %s); further such images are converted silently", message, path)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class InputReadError(UserError, OSError):
    """An input file (of the kind the subclass names) that is missing, unreadable or undecodable.

    ``InputReadError(path, reason)``; with one argument, that is the whole
    message (how pickling, and Paddle's loader workers, rebuild it).
    """

    kind = "file"

    def __init__(self, path, reason=None):
        super().__init__(f"cannot read {self.kind} {path}: {reason}" if reason is not None else path)
        self.path = path if reason is not None else None
        self.reason = reason if reason is not None else path


class ImageReadError(InputReadError):
    """An image file that is missing, unreadable or not an image."""

    kind = "image"


def read_image(path, dtype="uint8"):
    """Read ``path`` as an RGB array [H, W, 3].

    ``dtype='uint8'``: 8-bit values (16-bit files are scaled down).
    ``dtype='float32'``: values in [0, 1], keeping 16-bit precision.
    Grayscale is repeated to three channels and an alpha channel is dropped,
    with a note in the log the first time each happens.
    """
    try:
        with open(path, "rb") as f:
            data = np.frombuffer(f.read(), dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except OSError as err:
        raise ImageReadError(path, err.strerror or str(err)) from err
    if data.size == 0:
        raise ImageReadError(path, "the file is empty")
    cmyk = _decode_cmyk_jpeg(data)
    if cmyk is not None:
        _note_once("cmyk", path, "CMYK JPEG converted to RGB as PIL does")
        return convert_depth(cmyk, path, dtype)
    # IMREAD_UNCHANGED keeps 16-bit depth and the alpha channel for us to handle.
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(path, "not a decodable image (corrupt or unsupported format)")
    return to_rgb(image, path, dtype)


def _decode_cmyk_jpeg(data):
    """A CMYK JPEG as PIL's ``convert('RGB')`` makes it (torchvision's loader and the official
    code read images so), or None for any other file. OpenCV's own CMYK conversion divides
    by 256 where PIL divides by 255, one 8-bit level off, two after a bicubic resize."""
    if data[:2].tobytes() != b"\xff\xd8":
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            return np.asarray(image.convert("RGB")) if image.mode == "CMYK" else None
    except (OSError, ValueError):  # not decodable by PIL: OpenCV reports it
        return None


def to_rgb(image, path="<array>", dtype="uint8"):
    """An OpenCV-decoded array (BGR/BGRA/gray, 8/16-bit or float) as RGB of ``dtype``."""
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        _note_once("gray", path, "grayscale image repeated to three channels")
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        _note_once("alpha", path, "image with an alpha channel: the alpha channel is dropped")
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    elif image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    else:
        raise ImageReadError(path, f"unsupported image layout {image.shape}")
    return convert_depth(image, path, dtype)


def convert_depth(image, path, dtype):
    if image.dtype == np.uint8:
        scale = 255.0
    elif image.dtype == np.uint16:
        scale = 65535.0
        _note_once(f"16bit-{dtype}", path, "16-bit image scaled to 8 bits (0-255)" if dtype == "uint8"
                   else "16-bit image read as floats in [0, 1], keeping its 16-bit precision")
    elif image.dtype in (np.float32, np.float64):
        scale = 1.0
    else:
        raise ImageReadError(path, f"unsupported pixel type {image.dtype}")
    if dtype == "float32":
        return image.astype(np.float32) / np.float32(scale)
    if dtype == "uint8":
        if image.dtype == np.uint8:
            return image
        return np.clip(np.rint(image.astype(np.float64) * (255.0 / scale)), 0, 255).astype(np.uint8)
    raise ValueError(f"dtype must be 'uint8' or 'float32', got {dtype!r}")


def write_image(path, rgb):
    """Write an RGB uint8 (or uint16) array; the folder is created if needed.

    Written to a temporary name and renamed, so an interrupted run never
    leaves a truncated image under the final name.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    ext = os.path.splitext(path)[1] or ".png"
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode an image for {path}")
    tmp = temporary_name(path)
    encoded.tofile(tmp)
    os.replace(tmp, path)


def temporary_name(path):
    """Where ``path`` is written before being renamed to it: beside it, with its extension last
    (OpenCV picks the format from the extension)."""
    return f"{path}.tmp-{os.getpid()}{os.path.splitext(path)[1] or '.png'}"
