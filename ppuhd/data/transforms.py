"""Per-sample transforms, registered for configs.

A transform is called as ``transform(sample, rng)``: ``sample`` is a dict
holding ``image`` (H, W, C numpy array) and ``target`` (a class index, or an
image for enhancement pairs); ``rng`` is a ``numpy.random.Generator`` seeded
per sample, epoch and run, so augmentation is reproducible whatever the number
of loader workers, and a resumed run sees the same augmentation.

Geometric transforms apply identically to every image of the sample (the
input and, for enhancement pairs, the target); photometric ones to the input.
"""

import math

import cv2
import numpy as np
from PIL import Image

from ..registry import TRANSFORMS, ConfigError

# Resampling backends: 'pil' is what torchvision (and so timm and DeiT) does on PIL
# images, and low-pass filters when shrinking; 'cv2' (OpenCV) samples the source
# without filtering, as TensorFlow's resize without antialias does.
BACKENDS = ("pil", "cv2")
INTERPOLATIONS = {
    "cv2": {
        "nearest": cv2.INTER_NEAREST,
        "bilinear": cv2.INTER_LINEAR,
        "bicubic": cv2.INTER_CUBIC,
        "area": cv2.INTER_AREA,
        "lanczos": cv2.INTER_LANCZOS4,
    },
    "pil": {
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "area": Image.Resampling.BOX,  # PIL's box filter: the average over each output pixel's area
        "lanczos": Image.Resampling.LANCZOS,
    },
}
IMAGE_KEYS = ("image", "target")


class Resampler:
    """Resizes (H, W[, C]) arrays with one backend and interpolation, chosen by name."""

    def __init__(self, interpolation, backend):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if interpolation not in INTERPOLATIONS[backend]:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS[backend])}, "
                             f"got {interpolation!r}")
        self.backend = backend
        self.mode = INTERPOLATIONS[backend][interpolation]

    def __call__(self, image, size_hw):
        resize = _pil_resize if self.backend == "pil" else _cv2_resize
        return resize(image, tuple(size_hw), self.mode)


def _cv2_resize(image, size_hw, interpolation):
    height, width = size_hw
    out = cv2.resize(image, (width, height), interpolation=interpolation)
    return out.reshape(height, width, -1) if image.ndim == 3 else out


def _pil_resize(image, size_hw, resample):
    """PIL's resampling: 8-bit RGB and gray as PIL images (exactly torchvision's result);
    other depths and channel counts channel by channel in PIL's 32-bit float mode,
    unclipped (bicubic may overshoot [0, 1] as it does in float), rounded back for integers."""
    height, width = size_hw
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] == 3):
        return np.array(Image.fromarray(image).resize((width, height), resample))  # writable, as cv2 returns
    if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise TypeError(f"the pil backend resizes uint8, uint16 and float images, got {image.dtype}; "
                        "use backend: cv2 or convert the image first")
    planes = image.reshape(image.shape[0], image.shape[1], -1).astype(np.float32)
    out = np.stack([np.asarray(Image.fromarray(planes[..., c]).resize((width, height), resample))
                    for c in range(planes.shape[2])], axis=-1)
    if np.issubdtype(image.dtype, np.integer):
        limit = np.iinfo(image.dtype).max
        out = np.clip(np.rint(out), 0, limit)
    out = out.astype(image.dtype, copy=False)
    return out if image.ndim == 3 else out[..., 0]


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def image_keys(sample):
    """Keys of ``sample`` holding images (arrays with two or more dimensions)."""
    return [k for k in IMAGE_KEYS if isinstance(sample.get(k), np.ndarray) and sample[k].ndim >= 2]


def map_images(sample, fn):
    """Apply ``fn`` to every image of ``sample``; returns the sample."""
    for key in image_keys(sample):
        sample[key] = fn(sample[key])
    return sample


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms or [])
        for position, transform in enumerate(self.transforms):
            if not callable(transform):
                raise ConfigError(
                    f"transforms.{position} is {transform!r}, not a transform: write each as a mapping with a "
                    "type, e.g. {type: RandomCrop, size: 128}"
                )

    def __call__(self, sample, rng=None):
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


@TRANSFORMS.register()
class RandomResizedCrop:
    """Crop a random area and aspect ratio, then resize.

    The box is drawn as timm's ``RandomResizedCropAndInterpolation.get_params``
    (torchvision's algorithm: 10 tries, then a centred crop within the ratio
    range), with ``rng.uniform`` and ``rng.integers`` where timm calls
    ``random.uniform`` and ``random.randint``.

    Args:
        size: output side (int) or (H, W).
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height).
        interpolation: nearest, bilinear, bicubic, area or lanczos.
        backend: 'pil' (torchvision's and timm's resampling) or 'cv2' (OpenCV).
    """

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bicubic", backend="pil"):
        self.size = _pair(size)
        self.scale = tuple(scale)
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.ratio = tuple(ratio)
        self.resample = Resampler(interpolation, backend)

    def crop_box(self, height, width, rng):
        """(top, left, h, w) of the crop in a ``height`` x ``width`` image."""
        area = height * width
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*self.log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        # Fallback: the largest centred crop within the ratio range.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, sample, rng):
        height, width = sample["image"].shape[:2]
        top, left, h, w = self.crop_box(height, width, rng)
        # Crop, then resize the crop alone (as torchvision's resized_crop): the
        # filter sees no pixel outside the box.
        return map_images(sample, lambda im: self.resample(im[top : top + h, left : left + w], self.size))


@TRANSFORMS.register()
class RandomHorizontalFlip:
    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, sample, rng):
        if rng.random() < self.prob:
            map_images(sample, lambda im: np.ascontiguousarray(im[:, ::-1]))
        return sample


@TRANSFORMS.register()
class Resize:
    """Resize to exactly (H, W); ``backend`` 'pil' (torchvision's resampling) or 'cv2'."""

    def __init__(self, size, interpolation="bicubic", backend="pil"):
        self.size = _pair(size)
        self.resample = Resampler(interpolation, backend)

    def __call__(self, sample, rng=None):
        return map_images(sample, lambda im: self.resample(im, self.size))


@TRANSFORMS.register()
class ResizeShort:
    """Resize so the shorter side is ``size`` (or ``int(size / crop_ratio)``).

    With ``crop_ratio`` this is the first half of the usual evaluation
    transform: ``ResizeShort(224, crop_ratio=0.875)`` resizes the short side
    to 256, and ``CenterCrop(224)`` follows. The long side is rounded down, as
    torchvision's ``Resize(int)``; ``backend`` 'pil' (torchvision's resampling) or 'cv2'.
    """

    def __init__(self, size, crop_ratio=None, interpolation="bicubic", backend="pil"):
        self.short = int(size / crop_ratio) if crop_ratio else int(size)
        self.resample = Resampler(interpolation, backend)

    def __call__(self, sample, rng=None):
        height, width = sample["image"].shape[:2]
        if height <= width:
            size = (self.short, int(self.short * width / height))
        else:
            size = (int(self.short * height / width), self.short)
        return map_images(sample, lambda im: self.resample(im, size))


@TRANSFORMS.register()
class CenterCrop:
    def __init__(self, size):
        self.size = _pair(size)

    def __call__(self, sample, rng=None):
        height, width = sample["image"].shape[:2]
        h, w = self.size
        if h > height or w > width:
            raise ValueError(f"CenterCrop {self.size} is larger than the image ({height}, {width})")
        # torchvision's rounding of the offsets
        top, left = int(round((height - h) / 2.0)), int(round((width - w) / 2.0))
        return map_images(sample, lambda im: im[top : top + h, left : left + w])


@TRANSFORMS.register()
class Normalize:
    """``(image * scale - mean) / std`` on the input, as float32.

    The defaults are ImageNet's statistics for images scaled to [0, 1].
    """

    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1 / 255):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.scale = np.float32(scale)

    def __call__(self, sample, rng=None):
        sample["image"] = (sample["image"].astype(np.float32) * self.scale - self.mean) / self.std
        return sample


@TRANSFORMS.register()
class ToCHW:
    """HWC arrays to contiguous CHW, the layout Paddle models take."""

    def __call__(self, sample, rng=None):
        return map_images(sample, lambda im: np.ascontiguousarray(im.transpose(2, 0, 1)))


@TRANSFORMS.register()
class RandomCrop:
    """A random (H, W) crop at the same place in every image of the sample (paired training)."""

    def __init__(self, size):
        self.size = _pair(size)

    def __call__(self, sample, rng):
        height, width = sample["image"].shape[:2]
        h, w = self.size
        if h > height or w > width:
            raise ValueError(f"RandomCrop {self.size} is larger than the image ({height}, {width})")
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        return map_images(sample, lambda im: im[top : top + h, left : left + w])


@TRANSFORMS.register()
class RandomFlipRotate:
    """One of the 8 flips/rotations by 90 degrees of the square, uniformly (paired training).

    The same mode for every image of the sample. UHDFour draws a horizontal
    flip and a rotation by 0-3 quarter turns, LLFormer one of 8 modes: both
    are this uniform choice over the eight.

    Args:
        keep_shape: use only the 4 modes that keep H x W (no quarter turns),
            for non-square crops that must batch together.
        identity_twice: draw as LLFormer's dataset does, ``random.randint(0,
            8)``: 9 outcomes of which two leave the image as it is, so the
            identity has probability 2/9 and each other mode 1/9.
    """

    def __init__(self, keep_shape=False, identity_twice=False):
        self.keep_shape = keep_shape
        self.identity_twice = identity_twice

    def __call__(self, sample, rng):
        draw = int(rng.integers(9 if self.identity_twice else 8))
        flip, turns = divmod(draw % 8, 4)
        if self.keep_shape:
            turns = 2 * (turns % 2)  # 0 or a half turn

        def apply(im):
            im = np.rot90(im, turns, axes=(0, 1))
            return np.ascontiguousarray(im[:, ::-1] if flip else im)

        return map_images(sample, apply)


@TRANSFORMS.register()
class CropToMultiple:
    """Keep the top-left region whose sides are multiples of ``multiple``.

    UHDFour's official test crops its inputs this way (to a multiple of 8).
    The models here pad instead, so no pixel is lost; use this only to
    reproduce official numbers exactly.
    """

    def __init__(self, multiple=8):
        self.multiple = multiple

    def __call__(self, sample, rng=None):
        height, width = sample["image"].shape[:2]
        h, w = height - height % self.multiple, width - width % self.multiple
        return map_images(sample, lambda im: im[:h, :w])
