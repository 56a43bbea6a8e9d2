"""DeiT's data-efficient augmentations, with timm's semantics.

DeiT (facebookresearch/deit, ``main.py`` and ``datasets.build_transform``)
builds them with timm 0.3.2: ``create_transform(auto_augment='rand-m9-mstd0.5-inc1',
interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1)`` and
``Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5,
mode='batch', label_smoothing=0.1)``. Those are the defaults here.

- :class:`RandAugment`: per sample, on the uint8 RGB image, with Pillow's ops
  (what timm uses), so each op gives timm's pixels exactly.
- :class:`RandomErasing`: per sample, on the normalised CHW float32 image
  (after ``Normalize`` and ``ToCHW``, as timm runs it on the normalised tensor).
- :class:`Mixup`: per batch (Mixup or CutMix), on the loader's paddle tensors;
  configured under ``batch_transform:`` and called as ``mixup(batch, rng)``.

All randomness comes from the ``rng`` argument (a ``numpy.random.Generator``),
never from global state, so augmentation is reproducible and resumable. The
draws follow timm's order, but timm's ``random``/``np.random`` streams are not
reproduced: the same seed gives the same distribution as timm, not the same
samples.

Where timm 0.3.2 (DeiT's) and 1.0.31 differ:

- CutMix's box (``rand_bbox``): 0.3.2 spans ``cy - cut_h // 2`` to
  ``cy + cut_h // 2``, one pixel short of ``cut_h`` when it is odd; 1.0.31 ends
  at ``cy + (cut_h + 1) // 2``. ``cutmix_minmax`` boxes: 0.3.2 draws the corner
  in ``[0, H - cut_h)``, 1.0.31 in ``[0, H - cut_h]``. DeiT's (0.3.2) is
  followed in both; with ``correct_lam`` the targets match the box either way.
- RandAugment config strings: 0.3.2 parses ``inc`` with ``bool(str)``, so
  ``inc0`` also selects the increasing ops; it has no ``p``/``mmax`` keys and
  no uniform sampling for ``mstd`` > 100. Here ``inc0`` means off and
  ``p``, ``mmax`` and ``mstd`` > 100 are read as 1.0.31 does. The level clamps
  1.0.31 added (Solarize <= 256, SolarizeAdd <= 128, increasing enhance >= 0.1)
  only act above magnitude 10, which 0.3.2 could not reach. For DeiT's string
  the two versions are the same, and their ops give identical pixels (checked
  by ``tests/fixtures/make_augment_fixtures.py``).
- RandomErasing and Mixup's targets: no difference.

Pillow: recent Pillow (13 here) raises on ``ImageOps.posterize`` with 0 bits,
which timm requests at the strongest posterize levels (PosterizeIncreasing at
magnitude 10, ~2% of its draws under DeiT's m9 mstd0.5); the Pillow DeiT used
returned a black image, and so does :func:`_posterize`.
"""

import math
import re
from typing import Callable, NamedTuple, Optional

import numpy as np
import paddle
import paddle.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from ..registry import TRANSFORMS
from .transforms import image_keys

# ------------------------------------------------------------------ RandAugment

LEVEL_DENOM = 10.0  # timm: magnitude m maps to the fraction m / 10 of each op's range
IMAGENET_FILL = (124, 116, 104)  # timm's img_mean: round(255 * IMAGENET_DEFAULT_MEAN)
PIL_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def _affine(image, matrix, fill, resample):
    # Pillow maps each output pixel (x, y) to the input at matrix @ (x, y, 1).
    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=fill)


def _posterize(image, bits):
    if bits >= 8:
        return image
    if bits <= 0:
        # timm asks for 0 bits at the top magnitudes. Pillow of DeiT's time masked every
        # value to 0 (a black image); recent Pillow raises instead, so do it here.
        return Image.new(image.mode, image.size)
    return ImageOps.posterize(image, bits)


def _solarize_add(image, add, threshold=128):
    # Brighten the dark half by ``add`` (saturating), leave the rest.
    lut = [min(255, i + add) if i < threshold else i for i in range(256)]
    return image.point(lut * len(image.getbands()))


def _enhance(kind):
    return lambda image, factor, *_: kind(image).enhance(factor)


def _enhance_level(m, sign, pct):
    return m / LEVEL_DENOM * 1.8 + 0.1  # [0.1, 1.9]: below 1 weakens, above strengthens


def _enhance_increasing_level(m, sign, pct):
    # Away from 1.0 (no change) in a random direction: stronger with m either way.
    return max(0.1, 1.0 + sign * (m / LEVEL_DENOM * 0.9))


def _posterize_level(m, sign, pct):
    return int(m / LEVEL_DENOM * 4)  # bits kept, 0-4: stronger as m falls


def _solarize_level(m, sign, pct):
    return min(256, int(m / LEVEL_DENOM * 256))  # threshold: stronger as m falls


class _Op(NamedTuple):
    level: Optional[Callable]  # (magnitude, sign, translate_pct) -> the op's argument
    apply: Callable  # (PIL image, argument, fill, resample) -> PIL image
    signed: bool = False  # draws a random sign, as timm's _randomly_negate
    geometric: bool = False  # moves pixels, so applies to every image of the sample


OPS = {
    "AutoContrast": _Op(None, lambda im, *_: ImageOps.autocontrast(im)),
    "Equalize": _Op(None, lambda im, *_: ImageOps.equalize(im)),
    "Invert": _Op(None, lambda im, *_: ImageOps.invert(im)),
    "Rotate": _Op(
        lambda m, s, _: s * (m / LEVEL_DENOM * 30.0),
        lambda im, degrees, fill, resample: im.rotate(degrees, resample=resample, fillcolor=fill),
        signed=True, geometric=True,
    ),
    "Posterize": _Op(_posterize_level, lambda im, bits, *_: _posterize(im, bits)),
    "PosterizeIncreasing": _Op(lambda m, s, p: 4 - _posterize_level(m, s, p),
                               lambda im, bits, *_: _posterize(im, bits)),
    "Solarize": _Op(_solarize_level, lambda im, threshold, *_: ImageOps.solarize(im, threshold)),
    "SolarizeIncreasing": _Op(lambda m, s, p: 256 - _solarize_level(m, s, p),
                              lambda im, threshold, *_: ImageOps.solarize(im, threshold)),
    "SolarizeAdd": _Op(lambda m, s, _: min(128, int(m / LEVEL_DENOM * 110)),
                       lambda im, add, *_: _solarize_add(im, add)),
    "Color": _Op(_enhance_level, _enhance(ImageEnhance.Color)),
    "ColorIncreasing": _Op(_enhance_increasing_level, _enhance(ImageEnhance.Color), signed=True),
    "Contrast": _Op(_enhance_level, _enhance(ImageEnhance.Contrast)),
    "ContrastIncreasing": _Op(_enhance_increasing_level, _enhance(ImageEnhance.Contrast), signed=True),
    "Brightness": _Op(_enhance_level, _enhance(ImageEnhance.Brightness)),
    "BrightnessIncreasing": _Op(_enhance_increasing_level, _enhance(ImageEnhance.Brightness), signed=True),
    "Sharpness": _Op(_enhance_level, _enhance(ImageEnhance.Sharpness)),
    "SharpnessIncreasing": _Op(_enhance_increasing_level, _enhance(ImageEnhance.Sharpness), signed=True),
    "ShearX": _Op(
        lambda m, s, _: s * (m / LEVEL_DENOM * 0.3),
        lambda im, k, fill, resample: _affine(im, (1, k, 0, 0, 1, 0), fill, resample),
        signed=True, geometric=True,
    ),
    "ShearY": _Op(
        lambda m, s, _: s * (m / LEVEL_DENOM * 0.3),
        lambda im, k, fill, resample: _affine(im, (1, 0, 0, k, 1, 0), fill, resample),
        signed=True, geometric=True,
    ),
    # Translations are a fraction of the image side (timm's *Rel ops; RandAugment never uses
    # the absolute TranslateX/Y, so create_transform's translate_const plays no part).
    "TranslateXRel": _Op(
        lambda m, s, pct: s * (m / LEVEL_DENOM * pct),
        lambda im, t, fill, resample: _affine(im, (1, 0, t * im.size[0], 0, 1, 0), fill, resample),
        signed=True, geometric=True,
    ),
    "TranslateYRel": _Op(
        lambda m, s, pct: s * (m / LEVEL_DENOM * pct),
        lambda im, t, fill, resample: _affine(im, (1, 0, 0, 0, 1, t * im.size[1]), fill, resample),
        signed=True, geometric=True,
    ),
}

# timm's two RandAugment op sets ('inc0' / 'inc1'), in timm's order.
RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
            "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
            "TranslateYRel")
RAND_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                       "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                       "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
                       "TranslateYRel")


class RandConfig(NamedTuple):
    """A parsed RandAugment string (timm's meanings and defaults)."""

    magnitude: int = 10  # m: mean magnitude, 0-10 (the ops' full range at 10)
    num_layers: int = 2  # n: ops drawn per image, with replacement
    prob: float = 0.5  # p: chance each drawn op is applied
    magnitude_std: float = 0.0  # mstd: Gaussian noise on m per op; inf (mstd > 100): uniform in [0, m]
    magnitude_max: Optional[int] = None  # mmax: upper clip of the magnitude (default 10)
    increasing: bool = False  # inc: use the ops whose severity increases with m

    @property
    def ops(self):
        return RAND_INCREASING_OPS if self.increasing else RAND_OPS


_RAND_KEYS = {"m": ("magnitude", int), "n": ("num_layers", int), "p": ("prob", float),
              "mstd": ("magnitude_std", float), "mmax": ("magnitude_max", int), "inc": ("increasing", int)}


def parse_rand_config(config_str):
    """Parse timm's ``rand-m9-mstd0.5-inc1`` style string into a :class:`RandConfig`.

    Sections after ``rand`` are a key followed by a number, in any order. timm
    silently skips sections without a number; here anything unknown is an error.
    """
    help_text = ("expected 'rand' then dash-separated sections, each a key and a number: "
                 "m<int> (magnitude), n<int> (ops per image), p<float> (op probability), "
                 "mstd<float> (magnitude noise), mmax<int> (magnitude cap), inc<0|1> (increasing ops); "
                 "e.g. 'rand-m9-mstd0.5-inc1'")
    if not isinstance(config_str, str):
        raise ValueError(f"RandAugment config must be a string, got {config_str!r}; {help_text}")
    head, *sections = config_str.split("-")
    if head != "rand":
        raise ValueError(f"RandAugment config {config_str!r} must start with 'rand'; {help_text}")
    values = {}
    for section in sections:
        match = re.fullmatch(r"([a-z]+)(\d.*)", section)  # as timm: the key runs up to the first digit
        key, number = match.groups() if match else (None, None)
        if key not in _RAND_KEYS:
            raise ValueError(f"RandAugment config {config_str!r}: unknown section {section!r}; {help_text}")
        field, kind = _RAND_KEYS[key]
        if field in values:
            raise ValueError(f"RandAugment config {config_str!r}: {key!r} is given twice")
        try:
            values[field] = kind(number)
        except ValueError:
            raise ValueError(
                f"RandAugment config {config_str!r}: {key!r} needs {'an integer' if kind is int else 'a number'}, "
                f"got {number!r}"
            ) from None
    config = RandConfig(**values)
    if config.magnitude < 0 or config.num_layers < 1 or not 0 <= config.prob <= 1 or config.magnitude_std < 0:
        raise ValueError(f"RandAugment config {config_str!r}: need m >= 0, n >= 1, 0 <= p <= 1 and mstd >= 0")
    if config.magnitude_max is not None and config.magnitude_max <= 0:
        raise ValueError(f"RandAugment config {config_str!r}: mmax must be positive")
    if "increasing" in values and config.increasing not in (0, 1):
        raise ValueError(f"RandAugment config {config_str!r}: inc must be 0 or 1")
    if config.magnitude_std > 100:  # timm's convention for uniform sampling
        config = config._replace(magnitude_std=math.inf)
    return config._replace(increasing=bool(config.increasing))


class OpDraw(NamedTuple):
    """One of the ``num_layers`` op slots of an image: which op, and how it was drawn."""

    name: str
    applied: bool  # False: skipped (probability 1 - p); magnitude and sign are then unset
    magnitude: Optional[float] = None  # after noise and clipping
    sign: int = 1  # -1 negates the argument of a signed op


@TRANSFORMS.register()
class RandAugment:
    """timm's RandAugment (Cubuk et al. with timm's tweaks) on a uint8 RGB image.

    Per image, ``n`` ops are drawn uniformly with replacement from the op set;
    each is applied with probability ``p`` at a magnitude drawn from
    ``N(m, mstd)`` clipped to ``[0, mmax or 10]``; signed ops (rotate, shear,
    translate, the increasing enhancements) flip their argument's sign with
    probability 0.5. Geometric ops apply to every image of the sample with the
    same parameters; photometric ones to ``image`` only.

    Args:
        config_str: timm's RandAugment string (see :func:`parse_rand_config`);
            DeiT: ``rand-m9-mstd0.5-inc1``.
        img_mean: fill colour of the area geometric ops uncover, as 0-255
            integers; timm uses the dataset mean (ImageNet's by default).
        interpolation: resampling of the geometric ops: nearest, bilinear or
            bicubic (DeiT: bicubic).
        translate_pct: largest translation, as a fraction of the image side
            (timm's default 0.45, reached at magnitude 10).
    """

    def __init__(self, config_str="rand-m9-mstd0.5-inc1", img_mean=IMAGENET_FILL, interpolation="bicubic",
                 translate_pct=0.45):
        self.config = parse_rand_config(config_str)
        self.ops = self.config.ops
        fill = tuple(int(v) for v in img_mean)
        if len(fill) != 3 or any(v != c or not 0 <= v <= 255 for v, c in zip(fill, img_mean)):
            raise ValueError(f"img_mean must be three integers in 0-255 (an RGB colour), got {img_mean!r}")
        self.fill = fill
        if interpolation not in PIL_INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(PIL_INTERPOLATIONS)}, got {interpolation!r}")
        self.resample = PIL_INTERPOLATIONS[interpolation]
        self.translate_pct = float(translate_pct)

    def draw(self, rng):
        """The ``num_layers`` op draws for one image, in timm's order of draws."""
        config = self.config
        upper = config.magnitude_max or LEVEL_DENOM
        draws = []
        for index in rng.integers(0, len(self.ops), size=config.num_layers):
            name = self.ops[index]
            # timm skips when random() > p, so p = 1 always applies
            if config.prob < 1.0 and rng.random() > config.prob:
                draws.append(OpDraw(name, False))
                continue
            magnitude = float(config.magnitude)
            if config.magnitude_std == math.inf:
                magnitude = rng.uniform(0, magnitude)
            elif config.magnitude_std > 0:
                magnitude = rng.normal(magnitude, config.magnitude_std)
            magnitude = float(min(max(magnitude, 0.0), upper))
            sign = -1 if OPS[name].signed and rng.random() > 0.5 else 1
            draws.append(OpDraw(name, True, magnitude, sign))
        return draws

    def argument(self, name, magnitude, sign=1):
        """The argument op ``name`` gets at ``magnitude`` (timm's level-to-argument function)."""
        level = OPS[name].level
        return None if level is None else level(magnitude, sign, self.translate_pct)

    def apply(self, sample, draws):
        """Apply ``draws`` (from :meth:`draw`) to the sample's images."""
        keys = image_keys(sample)
        for key in keys:
            image = sample[key]
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(
                    f"RandAugment needs uint8 RGB (H, W, 3) images, got {key!r} with {image.dtype} {image.shape}; "
                    "put it before Normalize and ToCHW"
                )
        images = {key: Image.fromarray(sample[key]) for key in keys}
        for draw in draws:
            if not draw.applied:
                continue
            op = OPS[draw.name]
            argument = self.argument(draw.name, draw.magnitude, draw.sign)
            for key in keys if op.geometric else ["image"]:
                images[key] = op.apply(images[key], argument, self.fill, self.resample)
        for key, image in images.items():
            sample[key] = np.array(image)
        return sample

    def __call__(self, sample, rng):
        return self.apply(sample, self.draw(rng))


# --------------------------------------------------------------- RandomErasing

ERASE_MODES = ("const", "rand", "pixel")


@TRANSFORMS.register()
class RandomErasing:
    """timm's RandomErasing (Zhong et al.) on the normalised (C, H, W) float image.

    With probability ``prob``, erase ``count`` boxes (``count`` uniform in
    ``[min_count, max_count]``), each of area ``U(min_area, max_area) * H * W / count``
    and aspect ratio (height / width) log-uniform in ``[min_aspect, max_aspect]``,
    placed uniformly; a box that does not fit is redrawn, up to 10 times, then
    skipped. Only ``image`` is erased.

    Args:
        prob: chance an image is erased (DeiT: 0.25).
        min_area, max_area: box area as a fraction of the image's.
        min_aspect, max_aspect: aspect ratio range; ``max_aspect`` defaults
            to ``1 / min_aspect``.
        mode: fill of the box: 'pixel' N(0, 1) per pixel and channel (DeiT),
            'rand' N(0, 1) per channel, 'const' zeros (the mean, after
            normalisation).
        min_count, max_count: number of boxes; ``max_count`` defaults to
            ``min_count`` (DeiT: 1).
    """

    def __init__(self, prob=0.25, min_area=0.02, max_area=1 / 3, min_aspect=0.3, max_aspect=None, mode="pixel",
                 min_count=1, max_count=None):
        if not 0 < min_aspect:
            raise ValueError(f"RandomErasing needs min_aspect > 0, got {min_aspect}")
        max_aspect = max_aspect or 1 / min_aspect
        if not 0 <= prob <= 1 or not 0 < min_area <= max_area or not min_aspect <= max_aspect:
            raise ValueError("RandomErasing needs 0 <= prob <= 1, 0 < min_area <= max_area and "
                             "0 < min_aspect <= max_aspect")
        self.prob = prob
        self.area = (min_area, max_area)
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))
        self.mode = mode.lower()
        if self.mode not in ERASE_MODES:
            raise ValueError(f"RandomErasing mode must be one of {', '.join(ERASE_MODES)}, got {mode!r}")
        self.count = (min_count, max_count or min_count)
        if not 1 <= self.count[0] <= self.count[1]:
            raise ValueError(f"RandomErasing needs 1 <= min_count <= max_count, got {self.count}")

    def box(self, height, width, count, rng):
        """One box ``(top, left, h, w)`` for an image of ``count`` boxes, or None if none fitted."""
        for _ in range(10):
            target_area = rng.uniform(*self.area) * height * width / count
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if h < height and w < width:  # strict, as timm
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        return None

    def fill(self, channels, h, w, rng):
        if self.mode == "pixel":
            return rng.standard_normal((channels, h, w), dtype=np.float32)
        if self.mode == "rand":
            return rng.standard_normal((channels, 1, 1), dtype=np.float32)
        return np.zeros((channels, 1, 1), np.float32)

    def __call__(self, sample, rng):
        image = sample["image"]
        if image.ndim != 3 or not np.issubdtype(image.dtype, np.floating):
            raise ValueError(f"RandomErasing needs the normalised (C, H, W) float image (after Normalize and "
                             f"ToCHW), got {image.dtype} {image.shape}")
        if rng.random() > self.prob:
            return sample
        channels, height, width = image.shape
        low, high = self.count
        count = low if low == high else int(rng.integers(low, high + 1))
        image = image.copy()
        for _ in range(count):
            box = self.box(height, width, count, rng)
            if box is not None:
                top, left, h, w = box
                image[:, top : top + h, left : left + w] = self.fill(channels, h, w, rng)
        sample["image"] = image
        return sample


# ----------------------------------------------------------------------- Mixup


@TRANSFORMS.register()
class Mixup:
    """timm's Mixup/CutMix in 'batch' mode: one mix for the whole batch.

    With probability ``prob`` the batch is mixed with itself reversed (sample
    ``i`` with ``B - 1 - i``): by CutMix with probability ``switch_prob``
    (when both are enabled), else by Mixup. Mixup blends whole images with
    ``lam ~ Beta(mixup_alpha, mixup_alpha)``; CutMix pastes one box of the
    reversed batch, of side ratio ``sqrt(1 - lam)``, ``lam ~ Beta(cutmix_alpha,
    cutmix_alpha)``, centred uniformly and clipped to the image, then (with
    ``correct_lam``) sets ``lam`` to the kept area. Targets become label-smoothed
    one-hots (``off = s / C``, ``on = 1 - s + off``) mixed by the same ``lam``.

    Called as ``mixup(batch, rng)`` on the loader's batch (``image`` float32
    [B, C, H, W], ``target`` int64 [B]); returns it with ``image`` mixed and
    ``target`` float32 [B, num_classes] rows that sum to 1.

    Args:
        num_classes: number of classes of the targets.
        mixup_alpha, cutmix_alpha: Beta parameters; 0 disables that method.
        cutmix_minmax: (min, max) box side as a fraction of the image's,
            drawn uniformly instead of from ``cutmix_alpha`` (enables CutMix).
        prob: chance a batch is mixed at all.
        switch_prob: chance of CutMix rather than Mixup when both are enabled.
        label_smoothing: smoothing of the one-hot targets.
        correct_lam: recompute CutMix's ``lam`` from the clipped box's area.
    """

    def __init__(self, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=None, prob=1.0,
                 switch_prob=0.5, label_smoothing=0.1, correct_lam=True):
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2 or not 0 <= cutmix_minmax[0] < cutmix_minmax[1] <= 1:
                raise ValueError(f"cutmix_minmax must be (min, max) with 0 <= min < max <= 1, got {cutmix_minmax!r}")
            cutmix_alpha = 1.0  # as timm: the box comes from minmax, alpha only has to enable CutMix
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("Mixup needs mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax")
        self.num_classes = int(num_classes)
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.cutmix_minmax = tuple(cutmix_minmax) if cutmix_minmax is not None else None
        self.prob, self.switch_prob = prob, switch_prob
        self.label_smoothing = label_smoothing
        self.correct_lam = correct_lam

    def _cutmix_box(self, height, width, lam, rng):
        """``(top, bottom, left, right)`` of the pasted box, clipped to the image (timm 0.3.2)."""
        if self.cutmix_minmax is not None:
            low, high = self.cutmix_minmax
            cut_h = int(rng.integers(int(height * low), int(height * high)))
            cut_w = int(rng.integers(int(width * low), int(width * high)))
            top, left = int(rng.integers(0, height - cut_h)), int(rng.integers(0, width - cut_w))
            return top, top + cut_h, left, left + cut_w
        ratio = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        # 0.3.2 extends cut // 2 either side of the centre (1.0.31: (cut + 1) // 2 below/right)
        return (min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height),
                min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width))

    def sample_params(self, height, width, rng):
        """Draw one batch's mix: ``(lam, box)``, ``box`` None for Mixup (or no mix, lam 1).

        ``lam`` is the weight of the original batch: of its pixels for Mixup,
        of its area (after correction) for CutMix.
        """
        if rng.random() >= self.prob:
            return 1.0, None
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        if not use_cutmix or lam == 1.0:  # timm does not draw a box when lam is exactly 1
            return lam, None
        box = self._cutmix_box(height, width, lam, rng)
        if self.correct_lam or self.cutmix_minmax is not None:
            top, bottom, left, right = box
            lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
        return lam, box

    def mix_targets(self, target, lam):
        """Label-smoothed one-hots of ``target`` mixed with the reversed batch's by ``lam``."""
        off = self.label_smoothing / self.num_classes
        on = 1.0 - self.label_smoothing + off
        hot = F.one_hot(target.reshape([-1]).astype("int64"), self.num_classes).astype("float32")
        smoothed = hot * on + (1.0 - hot) * off  # exactly on/off, as timm's scatter
        return smoothed * lam + smoothed.flip(0) * (1.0 - lam)

    def __call__(self, batch, rng):
        image, target = batch["image"], batch["target"]
        size = image.shape[0]
        if size % 2:
            raise ValueError(
                f"Mixup/CutMix pairs each sample with its mirror in the batch (timm's batch mode), so the batch "
                f"size must be even; got {size}. Use an even batch size."
            )
        if target.dtype not in (paddle.int32, paddle.int64):
            raise ValueError(f"Mixup needs integer class indices as targets, got {target.dtype}")
        lam, box = self.sample_params(image.shape[-2], image.shape[-1], rng)
        if box is not None:
            top, bottom, left, right = box
            if bottom > top and right > left:  # paddle refuses empty slice assignment
                image = image.clone()
                image[:, :, top:bottom, left:right] = image.flip(0)[:, :, top:bottom, left:right]
        elif lam != 1.0:
            image = image * lam + image.flip(0) * (1.0 - lam)
        batch["image"] = image
        batch["target"] = self.mix_targets(target, lam)
        return batch
