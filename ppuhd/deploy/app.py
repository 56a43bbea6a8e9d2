"""What the web app (``ppuhd app``) does with models and images, without the web page.

The page (ppuhd/commands/app.py) only wires these functions to Gradio
components: a catalogue of loaded models, checks on an uploaded file, tiled
enhancement with a progress callback, top-k classification, and demo images
drawn or darkened here, so the page needs no download.
"""

import importlib.util
import os
import tempfile
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..config import load_config
from ..data.demo import SHAPE_CLASSES, draw_scene, draw_shape_image
from ..data.image_io import ImageReadError, read_image, write_image
from ..data.paired import darken
from ..engine.tiling import tiled_forward, tiling_arguments
from ..errors import UserError
from ..metrics.image_quality import quantize
from .export import export_model
from .predictor import ExportedModel, create_predictor, top_k

DEFAULT_MAX_PIXELS = 7680 * 4320  # an 8K UHD frame
DISPLAY_SIDE = 2048  # the page shows images at most this long; downloads are full size
READABLE = "PNG, JPEG, TIFF, BMP, WebP, PPM or PGM"


class UploadError(UserError, ValueError):
    """An uploaded file the app cannot take: not an image, or more pixels than the app's limit."""


class ModelChoiceError(UserError, ValueError):
    """A model name the app does not know, or a model of the other task."""


def megapixels(pixels):
    return f"{pixels / 1e6:.1f} megapixels" if pixels >= 100_000 else f"{pixels} pixels"


def check_upload(path, max_pixels=DEFAULT_MAX_PIXELS):
    """``(width, height)`` of the image file ``path``, from its header, before anything is decoded.

    Raises UploadError when it is not an image or has more than ``max_pixels``.
    """
    name = os.path.basename(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:  # Pillow's own limit, far above any sensible max_pixels
        raise UploadError(f"{name} has more pixels than this app accepts ({megapixels(max_pixels)})") from None
    except (OSError, ValueError, SyntaxError):  # what Pillow raises for files it cannot identify
        raise UploadError(f"{name} is not an image this app can read ({READABLE})") from None
    if width * height > max_pixels:
        raise UploadError(f"{name} is {width}x{height} ({megapixels(width * height)}), more than this app's limit "
                          f"of {megapixels(max_pixels)}; shrink it, or start the app with a larger --max-pixels")
    return width, height


def _preprocess(predictor, path):
    """The exported preprocessing of ``path``, its errors naming the file as the user knows it."""
    try:
        return predictor.preprocess(path)
    except ImageReadError as err:
        raise UploadError(f"{os.path.basename(path)}: {err.reason}") from None
    except UserError as err:  # e.g. a fixed-size model given another size: the message starts with the path
        raise UploadError(str(err).replace(path, os.path.basename(path))) from None


def for_display(rgb, max_side=DISPLAY_SIDE):
    """``rgb`` shrunk (area averaging) so its longer side is at most ``max_side``; the page's copy."""
    height, width = rgb.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return rgb
    size = (max(round(width * scale), 1), max(round(height * scale), 1))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


@dataclass
class ServedModel:
    """A loaded export, under the name the page and the API pick it by."""

    name: str
    source: str  # the export folder, or "CONFIG + WEIGHTS"
    predictor: ExportedModel

    @property
    def task(self):
        return self.predictor.task

    @property
    def tiling(self):
        """:func:`tiled_forward` keywords from the export's ``tiling`` (None: full frames)."""
        deploy = self.predictor.deploy
        return tiling_arguments(deploy.get("tiling"), deploy.get("input_multiple", 1))

    def describe(self):
        deploy = self.predictor.deploy
        height, width = deploy.get("input_size") or ("?", "?")
        size = "any input size" if deploy.get("dynamic_size") else f"{width}x{height} (WxH) inputs"
        text = f"{deploy.get('model', 'model')}, {self.task}, {size}"
        if self.task == "enhancement":
            tiling = self.tiling
            text += (f"; tiles of {tiling['tile_size'][1]}x{tiling['tile_size'][0]} (WxH)" if tiling
                     else "; full frames, untiled")
        names = deploy.get("class_names")
        if names:
            text += f"; {len(names)} classes"
        return f"{text}; from {self.source}"


class ModelCatalog:
    """The models the app can run, each loaded once, by name.

    Args:
        work_dir: folder for exports made from a config and weights.
        device, num_threads: as for :func:`~ppuhd.deploy.create_predictor`
            (an export runs on the runtime it was made for: Paddle Inference, or ONNX Runtime).
    """

    def __init__(self, work_dir, device="auto", num_threads=None):
        self.work_dir = work_dir
        self.device, self.num_threads = device, num_threads
        self.models = {}  # name -> ServedModel, in loading order
        self._lock = threading.Lock()  # the page may load models while others run

    def add_export(self, model_dir, source=None):
        """Load the export folder ``model_dir`` (once: a folder loaded before is returned as it was)."""
        source = source or os.path.realpath(model_dir)
        with self._lock:
            for model in self.models.values():
                if model.source == source:
                    return model
            predictor = create_predictor(model_dir, device=self.device, num_threads=self.num_threads)
            model = ServedModel(f"{predictor.deploy.get('model', 'model')}: {source}", source, predictor)
            self.models[model.name] = model
            return model

    def add_config(self, config, weights):
        """Export ``config``'s model with ``weights`` into the work folder, then load it as an export."""
        source = f"{config} + {weights}"
        for model in list(self.models.values()):
            if model.source == source:
                return model
        os.makedirs(self.work_dir, exist_ok=True)
        folder = tempfile.mkdtemp(prefix="export-", dir=self.work_dir)
        export_model(load_config(config), weights, folder)
        return self.add_export(folder, source)

    def names(self, task):
        return [name for name, model in self.models.items() if model.task == task]

    def get(self, name, task):
        """The model called ``name``, which must be a model of ``task``."""
        model = self.models.get(name)
        if model is None:
            known = ", ".join(self.names(task)) or "none loaded yet (load one in the Models tab)"
            wrong = f"no model called {name!r} is loaded" if name else f"choose a {task} model first"
            raise ModelChoiceError(f"{wrong}; {task} models: {known}")
        if model.task != task:
            article = "an" if task[0] in "aeiou" else "a"
            raise ModelChoiceError(f"{name} is a {model.task} model, not {article} {task} model")
        return model


@dataclass
class Enhanced:
    before: np.ndarray  # H x W x 3 uint8: the upload as read
    after: np.ndarray  # H x W x 3 uint8: the enhanced image
    png_path: str  # the enhanced image at full resolution
    seconds: float


def enhance_upload(model, path, result_dir, max_pixels=DEFAULT_MAX_PIXELS, on_progress=None):
    """Enhance the image file ``path`` with ``model``, tiled as its export says, as ``ppuhd infer`` does.

    ``on_progress(done, total)`` is called after each tile (once for a full frame).
    The result is written as ``<name>_enhanced.png`` in a new folder under ``result_dir``.
    """
    check_upload(path, max_pixels)
    image = _preprocess(model.predictor, path)
    start = time.perf_counter()
    tiling = model.tiling
    if tiling:
        enhanced = tiled_forward(model.predictor.predict, image, **tiling, on_progress=on_progress)
    else:
        enhanced = model.predictor.predict(image[None])[0]
        if on_progress is not None:
            on_progress(1, 1)
    seconds = time.perf_counter() - start
    after = quantize(enhanced.transpose(1, 2, 0))
    stem = os.path.splitext(os.path.basename(path))[0]
    os.makedirs(result_dir, exist_ok=True)
    png_path = os.path.join(tempfile.mkdtemp(prefix="result-", dir=result_dir), f"{stem}_enhanced.png")
    write_image(png_path, after)
    return Enhanced(read_image(path, "uint8"), after, png_path, seconds)


def classify_upload(model, path, max_pixels=DEFAULT_MAX_PIXELS, k=5):
    """``[(class name, probability), ...]``: the ``k`` most probable classes of the image file ``path``."""
    check_upload(path, max_pixels)
    logits = model.predictor.predict(_preprocess(model.predictor, path)[None])[0]
    names = model.predictor.deploy.get("class_names")
    return [(name if names else f"class {name}", p) for name, p in top_k(logits, k, names)]


def _skimage_photos():
    """Folder of the photographs scikit-image ships inside its package (None without scikit-image).

    Read straight from the package, never through ``skimage.data``, whose other images are downloaded.
    """
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(spec.submodule_search_locations[0], "data")
    return folder if os.path.isdir(folder) else None


SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png")


def write_demo_images(folder, scene_size=384, shape_size=32, seed=0):
    """Demo images written into ``folder``: ``{"enhancement": [paths], "classification": [paths]}``.

    Enhancement: generated scenes (as in the DemoLowLight set) and, with scikit-image installed,
    its bundled photographs, darkened by SyntheticLowLight's degradation. Classification:
    shapes of the demo classifier's classes and, with scikit-image, the photographs as they are.
    """
    rng = np.random.default_rng(seed)
    dark = dict(exposure=(0.05, 0.12))  # the darker half of SyntheticLowLight's range: clearly low-light
    demos = {"enhancement": [], "classification": []}

    def add(task, name, rgb):
        path = os.path.join(folder, task, name)
        write_image(path, rgb)
        demos[task].append(path)

    for i in range(2):
        add("enhancement", f"scene_{i + 1}_low_light.png",
            quantize(darken(draw_scene(scene_size, rng).astype(np.float32) / 255, rng, **dark)))
    for label in ("circle", "star", "ring"):
        add("classification", f"{label}.png", draw_shape_image(SHAPE_CLASSES.index(label), shape_size, rng))
    photos = _skimage_photos()
    for name in SKIMAGE_PHOTOS if photos else ():
        photo = read_image(os.path.join(photos, name), "float32")
        stem = os.path.splitext(name)[0]
        add("enhancement", f"{stem}_low_light.png", quantize(darken(photo, rng, **dark)))
        add("classification", f"{stem}.png", quantize(photo))
    return demos
