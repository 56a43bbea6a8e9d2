"""Demo data drawn on first use, so the demos need no download.

``DemoShapes``: six classes of shapes (circle, square, triangle, star, cross,
ring) in random colours, sizes, positions and rotations, over textured
backgrounds (gradients, stripes, checks, smooth noise), with sensor noise and
blur. Small enough to train a tiny ViT on a CPU in a couple of minutes, and
varied enough that doing so is not trivial (chance is 1/6).

``DemoLowLight``: normal-light "scenes" (sky and ground gradients, shaded
objects, textures, thin strokes) darkened into low-light pairs by
``SyntheticLowLight``, for the enhancement demos.

``DemoLowLightPhotos``: the real photographs shipped in ``photos/`` (see its
SOURCES.md), darkened once by the same ``darken``, as fixed pairs ``low/`` and
``high/``: the enhancer demos' validation set, and images to try
``tools/infer.py`` on.

The images are written once, deterministically, to a cache folder
(``~/.cache/ppuhd`` unless ``root`` is given) as ordinary PNG files, so they
can be looked at and reused.
"""

import logging
import math
import os
import shutil
import tempfile
import time
import zlib

import cv2
import numpy as np

from ..errors import UserError
from ..metrics.image_quality import quantize
from ..registry import DATASETS
from .classification import ImageFolder
from .image_io import read_image, write_image
from .paired import PairedImageFolder, SyntheticLowLight, darken

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "ppuhd")
logger = logging.getLogger(__name__)
_GENERATOR_VERSION = 1  # bump when the drawing changes, so caches regenerate
PHOTOS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "photos")
_PHOTOS_VERSION = 1  # bump when the photographs or their darkening change, so caches regenerate


class DemoDataError(UserError, ValueError):
    """Demo data that cannot be used: the shipped photographs missing, or a cached set damaged."""


def _random_color(rng):
    return rng.integers(0, 256, size=3).astype(np.float32)


def _background(size, rng):
    """A textured background: gradient, stripes, checks or smooth noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = rng.integers(4)
    if kind == 0:
        angle = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(angle) + yy * math.sin(angle) + 1) / 2
    elif kind == 1:
        angle, freq = rng.uniform(0, math.pi), rng.uniform(3, 8)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)))
    elif kind == 2:
        cells = rng.integers(2, 6)
        t = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2).astype(np.float32)
    else:
        coarse = rng.random((4, 4)).astype(np.float32)
        t = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    # Muted texture: the two colours differ by at most ~40% of the range, so
    # the shape (drawn in a contrasting colour) stays the salient object.
    base = _random_color(rng)
    other = np.clip(base + rng.uniform(-100, 100, size=3), 0, 255)
    t = np.clip(t, 0, 1)[..., None]
    return (1 - t) * base + t * other


def _star_points(center, radius, rotation, points=5):
    angles = rotation + np.arange(2 * points) * math.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, radius, radius * 0.45)
    return np.stack([center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles)], axis=1)


def _regular_polygon(center, radius, rotation, sides):
    angles = rotation + np.arange(sides) * 2 * math.pi / sides
    return np.stack([center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], axis=1)


def _shape_mask(label, size, rng):
    """A float mask in [0, 1] of one shape of class ``label``, drawn at 4x and reduced."""
    scale = 4
    big = size * scale
    mask = np.zeros((big, big), np.uint8)
    radius = rng.uniform(0.25, 0.42) * big
    center = rng.uniform(radius * 0.8, big - radius * 0.8, size=2)
    rotation = rng.uniform(0, 2 * math.pi)
    name = SHAPE_CLASSES[label]
    if name == "circle":
        cv2.circle(mask, tuple(int(c) for c in center), int(radius), 255, -1)
    elif name == "ring":
        cv2.circle(mask, tuple(int(c) for c in center), int(radius), 255, int(radius * rng.uniform(0.25, 0.45)))
    elif name in ("square", "triangle", "star"):
        if name == "star":
            pts = _star_points(center, radius, rotation)
        else:
            pts = _regular_polygon(center, radius, rotation, 4 if name == "square" else 3)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    else:  # cross: two perpendicular bars
        half_w = radius * rng.uniform(0.22, 0.32)
        for angle in (rotation, rotation + math.pi / 2):
            d = np.array([math.cos(angle), math.sin(angle)])
            n = np.array([-d[1], d[0]])
            pts = [center + d * radius + n * half_w, center + d * radius - n * half_w,
                   center - d * radius - n * half_w, center - d * radius + n * half_w]
            cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] / 255.0


def draw_shape_image(label, size, rng):
    """One RGB uint8 image of class ``label``."""
    image = _background(size, rng)
    # a colour far from the background's mean, so the shape stands out
    background_mean = image.mean(axis=(0, 1))
    candidates = rng.integers(0, 256, size=(8, 3)).astype(np.float32)
    color = candidates[np.argmax(np.abs(candidates - background_mean).sum(axis=1))]
    mask = _shape_mask(label, size, rng)
    image = image * (1 - mask) + color * mask
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.3, 1.0))
    image = image + rng.normal(0, rng.uniform(2, 12), size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def generate_shapes(folder, image_size, per_class, seed):
    """Write ``folder/<class>/NNNN.png`` for every class."""
    for label, name in enumerate(SHAPE_CLASSES):
        rng = np.random.default_rng([seed, label])
        for i in range(per_class):
            write_image(os.path.join(folder, name, f"{i:04d}.png"), draw_shape_image(label, image_size, rng))


def _folder_size(folder):
    """(number of files, total bytes) under ``folder``."""
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files]
    return len(sizes), sum(sizes)


def ensure_generated(final_dir, fill, what):
    """Create ``final_dir`` with ``fill(tmp_dir)`` unless it exists, saying so (``what``: what is drawn).

    Written to a temporary folder and renamed into place, so an interrupted
    run or several processes starting together never leave half a dataset.
    """
    if os.path.isdir(final_dir):
        return final_dir
    parent = os.path.dirname(final_dir)
    os.makedirs(parent, exist_ok=True)
    logger.info("first use of the demo data: drawing %s into %s (once; later runs reuse it)", what, final_dir)
    start = time.perf_counter()
    tmp_dir = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    try:
        fill(tmp_dir)
        files, size = _folder_size(tmp_dir)
        os.rename(tmp_dir, final_dir)
        logger.info("wrote %d PNG files, %.1f MB, in %.0f s to %s", files, size / 1e6, time.perf_counter() - start,
                    final_dir)
    except OSError:
        if not os.path.isdir(final_dir):  # not another process winning the race
            raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir


@DATASETS.register()
class DemoShapes(ImageFolder):
    """The demo classification set (generated on first use).

    Args:
        split: 'train' or 'val'.
        root: cache folder; default ``~/.cache/ppuhd``.
        image_size: side of the square images.
        train_per_class, val_per_class: images per class in each split.
        transforms, on_error: as for ImageFolder.
    """

    def __init__(self, split="train", root=None, image_size=32, train_per_class=1000, val_per_class=100,
                 transforms=None, on_error="raise"):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        name = f"demo_shapes_v{_GENERATOR_VERSION}_{image_size}px_{train_per_class}_{val_per_class}"
        folder = os.path.join(root or DEFAULT_CACHE, name)
        counts = {"train": train_per_class, "val": val_per_class}

        def fill(tmp_dir):
            for seed, part in enumerate(("train", "val")):
                generate_shapes(os.path.join(tmp_dir, part), image_size, counts[part], seed)

        ensure_generated(folder, fill, f"{len(SHAPE_CLASSES)} classes of shapes x ({train_per_class} training + "
                                       f"{val_per_class} validation) images of {image_size}x{image_size}")
        super().__init__(os.path.join(folder, split), transforms, on_error)


def draw_scene(size, rng):
    """One normal-light RGB uint8 scene: gradients, shaded objects, textures and strokes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    horizon = rng.uniform(0.3, 0.7)
    sky = (1 - yy[..., None] / horizon) * _random_color(rng) + (yy[..., None] / horizon) * _random_color(rng)
    ground = _random_color(rng) * (0.6 + 0.4 * (yy[..., None] - horizon) / (1 - horizon))
    image = np.where(yy[..., None] < horizon, sky, ground)
    for _ in range(rng.integers(4, 9)):
        mask = np.zeros((size, size), np.uint8)
        center = tuple(int(c) for c in rng.uniform(0, size, 2))
        radius = int(rng.uniform(0.05, 0.25) * size)
        if rng.random() < 0.5:
            cv2.circle(mask, center, radius, 255, -1)
        else:
            pts = _regular_polygon(np.array(center, np.float64), radius, rng.uniform(0, math.pi), int(rng.integers(3, 7)))
            cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
        shade = 0.6 + 0.4 * np.clip(1 - np.hypot(xx - center[0] / size, yy - center[1] / size) / 0.3, 0, 1)
        color = _random_color(rng)[None, None] * shade[..., None]
        if rng.random() < 0.4:  # a low-contrast texture on the object
            freq, angle = rng.uniform(10, 30), rng.uniform(0, math.pi)
            color = color * (0.85 + 0.15 * np.sin(freq * (xx * math.cos(angle) + yy * math.sin(angle))))[..., None]
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (3, 3), 0.8)[..., None]
        image = image * (1 - alpha) + color * alpha
    for _ in range(rng.integers(2, 6)):  # thin strokes: fine detail an enhancer must keep
        p1, p2 = (tuple(int(c) for c in rng.uniform(0, size, 2)) for _ in range(2))
        cv2.line(image, p1, p2, _random_color(rng).tolist(), int(rng.integers(1, 3)), cv2.LINE_AA)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@DATASETS.register()
class DemoLowLight(SyntheticLowLight):
    """The demo enhancement set: generated scenes, darkened on the fly (generated on first use).

    Args:
        split: 'train' or 'val'.
        root: cache folder; default ``~/.cache/ppuhd``.
        image_size: side of the square scenes.
        train_images, val_images: scenes in each split.
        transforms, on_error: as for other datasets (darkening: SyntheticLowLight's defaults).
    """

    def __init__(self, split="train", root=None, image_size=256, train_images=48, val_images=8, transforms=None,
                 on_error="raise"):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        name = f"demo_scenes_v{_GENERATOR_VERSION}_{image_size}px_{train_images}_{val_images}"
        folder = os.path.join(root or DEFAULT_CACHE, name)
        counts = {"train": train_images, "val": val_images}

        def fill(tmp_dir):
            for seed, part in enumerate(("train", "val")):
                rng = np.random.default_rng([seed, 100])
                for i in range(counts[part]):
                    write_image(os.path.join(tmp_dir, part, f"{i:04d}.png"), draw_scene(image_size, rng))

        ensure_generated(folder, fill, f"{train_images} training + {val_images} validation scenes of "
                                       f"{image_size}x{image_size} (darkened on the fly when read)")
        super().__init__(os.path.join(folder, split), transforms=transforms, on_error=on_error)


def demo_photos(folder=PHOTOS_DIR):
    """The paths of the photographs shipped with ppuhd (sorted), which must be there."""
    names = sorted(n for n in os.listdir(folder) if n.endswith(".png")) if os.path.isdir(folder) else []
    if not names:
        raise DemoDataError(f"the demo photographs are missing: no PNG files in {folder}; they ship with ppuhd "
                            "as package data, so reinstall it (pip install .) or restore that folder from the clone")
    return [os.path.join(folder, name) for name in names]


def write_low_light_photos(folder, photos):
    """Write each photograph to ``folder/high/`` and a darkened copy of it to ``folder/low/`` (same names).

    Each photograph's darkening is drawn from a generator seeded by its file
    name only, so it is the same on every machine and whatever other
    photographs there are.
    """
    for path in photos:
        name = os.path.basename(path)
        target = read_image(path, "float32")
        low = darken(target, np.random.default_rng([_PHOTOS_VERSION, zlib.crc32(name.encode())]))
        write_image(os.path.join(folder, "low", name), quantize(low))
        write_image(os.path.join(folder, "high", name), quantize(target))


@DATASETS.register()
class DemoLowLightPhotos(PairedImageFolder):
    """Real photographs shipped with ppuhd, darkened by ``darken`` once (written on first use).

    The pairs live in ``<root>/demo_lowlight_photos_v1/{low,high}/``, so the
    same low-light images the demos validate on can be enhanced with
    ``tools/infer.py``.

    Args:
        root: cache folder; default ``~/.cache/ppuhd``.
        transforms, on_error: as for PairedImageFolder.
    """

    def __init__(self, root=None, transforms=None, on_error="raise"):
        photos = demo_photos()
        folder = os.path.join(root or DEFAULT_CACHE, f"demo_lowlight_photos_v{_PHOTOS_VERSION}")
        ensure_generated(folder, lambda tmp_dir: write_low_light_photos(tmp_dir, photos),
                         f"low-light versions (low/) of the {len(photos)} photographs shipped with ppuhd, and the "
                         "photographs as their references (high/)")
        expected = sorted(os.path.basename(p) for p in photos)
        for part in ("low", "high"):
            found = sorted(os.listdir(os.path.join(folder, part))) if os.path.isdir(os.path.join(folder, part)) else []
            if found != expected:
                raise DemoDataError(f"{os.path.join(folder, part)} should hold {', '.join(expected)} but holds "
                                    f"{', '.join(found) or 'nothing'}; delete {folder} and the next run writes it again")
        super().__init__(os.path.join(folder, "low"), os.path.join(folder, "high"), transforms, on_error)
