"""Paired image datasets for enhancement: a low-light input and its target.

Pairs are matched by file name (the stem: ``0001.jpg`` in the input folder
pairs with ``0001.jpg`` or ``0001.png`` in the target folder); no list file is
needed. An input without a target (or the reverse), an unreadable image, or a
pair whose sizes differ stops with the file named, or, with
``on_error: skip``, is left out and counted.

Images are read as float32 RGB in [0, 1], keeping 16-bit precision;
grayscale and RGBA are converted to RGB with a note in the log.
"""

import logging
import os

import numpy as np

from ..registry import DATASETS
from .base import BaseDataset
from .image_io import IMAGE_EXTENSIONS, ImageReadError, read_image

logger = logging.getLogger(__name__)


def _images_by_stem(folder):
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    found = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
            if stem in found:
                raise ValueError(f"{folder} has two images named {stem!r}: {found[stem]} and {name}")
            found[stem] = name
    return found


def match_pairs(input_dir, target_dir, on_error="raise"):
    """``([(input path, target path)], [(unpaired path, 'no target' or 'no input')])``, matched by
    file stem, sorted by name; the second list is empty unless ``on_error`` is 'skip'."""
    inputs, targets = _images_by_stem(input_dir), _images_by_stem(target_dir)
    unpaired = [(os.path.join(input_dir, inputs[s]), "no target") if s in inputs
                else (os.path.join(target_dir, targets[s]), "no input")
                for s in sorted(set(inputs) ^ set(targets))]
    if unpaired:
        described = [f"{path} has {reason}" for path, reason in unpaired]
        if on_error == "raise":
            more = f" (and {len(described) - 5} more)" if len(described) > 5 else ""
            raise ValueError(f"unpaired images: {'; '.join(described[:5])}{more}; "
                             "set on_error: skip in the dataset config to leave them out")
        logger.warning("leaving out %d unpaired image(s), e.g. %s", len(described), described[0])
    pairs = [(os.path.join(input_dir, inputs[s]), os.path.join(target_dir, targets[s]))
             for s in sorted(set(inputs) & set(targets))]
    if not pairs:
        raise ValueError(f"no image pairs in {input_dir} and {target_dir}")
    return pairs, unpaired


@DATASETS.register()
class PairedImageFolder(BaseDataset):
    """Any two folders of paired images.

    Args:
        input_dir: low-light (degraded) images.
        target_dir: reference images with the same file names.
        transforms: list of transforms, applied identically to both images.
        on_error: 'raise' or 'skip' for unpaired, unreadable or mismatched images.
    """

    def __init__(self, input_dir, target_dir, transforms=None, on_error="raise"):
        super().__init__(transforms, on_error)
        self.pairs, self.excluded = match_pairs(input_dir, target_dir, on_error)

    def __len__(self):
        return len(self.pairs)

    def describe(self, index):
        return "{} / {}".format(*self.pairs[index])

    def name(self, index):
        """The file name of a sample, for saved outputs and per-image results."""
        return os.path.basename(self.pairs[index][0])

    def load(self, index, rng=None):
        input_path, target_path = self.pairs[index]
        image, target = read_image(input_path, "float32"), read_image(target_path, "float32")
        if image.shape != target.shape:
            raise ImageReadError(input_path, f"size {image.shape[1]}x{image.shape[0]} differs from its target "
                                             f"{target_path} ({target.shape[1]}x{target.shape[0]})")
        return {"image": image, "target": target}


def _split_dirs(root, split, layout, dataset):
    if split not in layout:
        raise ValueError(f"{dataset} split must be one of {', '.join(layout)}, got {split!r}")
    part, input_name, target_name = layout[split]
    return os.path.join(root, part, input_name), os.path.join(root, part, target_name)


@DATASETS.register()
class UHDLL(PairedImageFolder):
    """UHD-LL (Li et al., ICLR 2023): 2,000 training and 150 test pairs of 4K JPGs.

    Layout: ``root/{training_set,testing_set}/{input,gt}/``. The official
    loader needs a ``data_list.txt`` the release does not ship; here the
    folders are enough.
    """

    LAYOUT = {"train": ("training_set", "input", "gt"), "test": ("testing_set", "input", "gt")}

    def __init__(self, root, split="train", transforms=None, on_error="raise"):
        super().__init__(*_split_dirs(root, split, self.LAYOUT, "UHD-LL"), transforms, on_error)


@DATASETS.register()
class UHDLOL(PairedImageFolder):
    """UHD-LOL4K / UHD-LOL8K (Wang et al., AAAI 2023): ``root/{train,test}/{low,high}/`` PNGs."""

    LAYOUT = {"train": ("train", "low", "high"), "test": ("test", "low", "high")}

    def __init__(self, root, split="train", transforms=None, on_error="raise"):
        super().__init__(*_split_dirs(root, split, self.LAYOUT, "UHD-LOL"), transforms, on_error)


@DATASETS.register()
class LOL(PairedImageFolder):
    """LOL (Wei et al., 2018): 485 training and 15 test pairs, ``our485/`` and ``eval15/`` with ``{low,high}``."""

    LAYOUT = {"train": ("our485", "low", "high"), "test": ("eval15", "low", "high")}

    def __init__(self, root, split="train", transforms=None, on_error="raise"):
        super().__init__(*_split_dirs(root, split, self.LAYOUT, "LOL"), transforms, on_error)


def darken(image, rng, exposure=(0.05, 0.25), gamma=(1.5, 2.5), shot_noise=(0.002, 0.01), read_noise=(0.001, 0.005)):
    """A plausible low-light version of a normal-light RGB image in [0, 1].

    Linearise with a random gamma, scale the exposure down, add
    signal-dependent noise (Poisson-Gaussian: shot noise with variance
    proportional to the signal, plus read noise), and re-apply the gamma.
    """
    g = rng.uniform(*gamma)
    linear = np.power(np.clip(image, 0, 1), g) * rng.uniform(*exposure)
    shot, read = rng.uniform(*shot_noise), rng.uniform(*read_noise)
    noisy = linear + rng.standard_normal(image.shape).astype(np.float32) * np.sqrt(shot * linear + read**2)
    return np.power(np.clip(noisy, 0, 1), 1.0 / g).astype(np.float32)


@DATASETS.register()
class SyntheticLowLight(BaseDataset):
    """Low-light pairs made from any folder of normal-light images (see ``darken``).

    For users without paired data, and for the demos. Each image's darkening
    is drawn from the sample's random generator: new every epoch in
    training, and always the same in evaluation (which reads every image with
    the same key), so a validation set is fixed from run to run.

    Args:
        root: folder of normal-light images (the targets).
        exposure, gamma, shot_noise, read_noise: ranges of the degradation.
        transforms, on_error: as for other datasets; transforms run on the
            pair after darkening.
    """

    def __init__(self, root, exposure=(0.05, 0.25), gamma=(1.5, 2.5), shot_noise=(0.002, 0.01),
                 read_noise=(0.001, 0.005), transforms=None, on_error="raise"):
        super().__init__(transforms, on_error)
        self.paths = [os.path.join(root, name) for name in sorted(_images_by_stem(root).values())]
        if not self.paths:
            raise ValueError(f"no images in {root}")
        self.ranges = dict(exposure=exposure, gamma=gamma, shot_noise=shot_noise, read_noise=read_noise)

    def __len__(self):
        return len(self.paths)

    def describe(self, index):
        return self.paths[index]

    def name(self, index):
        return os.path.basename(self.paths[index])

    def load(self, index, rng):
        target = read_image(self.paths[index], "float32")
        return {"image": darken(target, rng, **self.ranges), "target": target}
