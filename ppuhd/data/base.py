"""What every dataset shares: per-sample seeding and the bad-file policy."""

import logging
from typing import NamedTuple

import numpy as np
import paddle

from .image_io import ImageReadError
from .transforms import Compose

logger = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("raise", "skip")


class SampleKey(NamedTuple):
    """``(index, epoch, seed, copy, substitute)``: what the samplers hand to a dataset.

    The augmentation of a sample depends only on its key, so it does not
    change with the number of workers or processes, or after a resume.
    ``copy`` tells apart the repeats of one image in an epoch (repeated
    augmentation), so each copy is augmented differently. ``substitute``
    says what ``on_error: skip`` does with an unreadable sample: take the
    next readable one (training) or leave it out (evaluation).
    """

    index: int
    epoch: int = 0
    seed: int = 0
    copy: int = 0
    substitute: bool = True


class LeftOutSample(NamedTuple):
    """What a dataset returns for an unreadable sample it leaves out (evaluation)."""

    index: int


class BaseDataset(paddle.io.Dataset):
    """A list of samples plus transforms.

    Subclasses implement ``__len__``, ``load(index, rng)`` (returning a sample
    dict with ``image`` and ``target``; ``rng`` is the sample's generator, for
    datasets that synthesise) and ``describe(index)`` (the file(s) of a
    sample, for messages).

    Args:
        transforms: list of transforms (built from the config).
        on_error: 'raise' stops at the first unreadable image, naming it;
            'skip' logs a warning and, in training, uses the next sample
            instead (counted in each sample's ``skipped`` entry, which the
            trainer sums and reports); in evaluation the sample is left out
            (a :class:`LeftOutSample`), counted and named in the results.

    ``excluded`` lists ``(file, reason)`` for files a dataset left out when
    it was built (e.g. an input without a target, with ``on_error: skip``);
    evaluation reports them beside the unreadable ones.
    """

    def __init__(self, transforms=None, on_error="raise"):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.transforms = Compose(transforms)
        self.on_error = on_error
        self.excluded = []

    def load(self, index, rng):
        raise NotImplementedError

    def describe(self, index):
        raise NotImplementedError

    def __getitem__(self, key):
        index, epoch, seed, copy, substitute = SampleKey(*key) if isinstance(key, tuple) else SampleKey(key)
        rng = np.random.default_rng([seed, epoch, index, copy])
        skipped = 0
        for attempt in range(len(self)):
            current = (index + attempt) % len(self)
            try:
                sample = self.load(current, rng)
                break
            except ImageReadError as err:
                if self.on_error == "raise":
                    raise ImageReadError(
                        err.path,
                        f"{err.reason} (sample {current}: {self.describe(current)}; "
                        "set on_error: skip in the dataset config to skip bad files)",
                    ) from err
                if not substitute:
                    logger.warning("leaving out unreadable sample %d: %s", current, err)
                    return LeftOutSample(current)
                logger.warning("skipping unreadable sample %d: %s", current, err)
                skipped += 1
        else:
            raise ImageReadError(self.describe(index), "no readable sample in the whole dataset")
        sample = self.transforms(sample, rng)
        sample["index"] = np.int64(current)
        sample["skipped"] = np.int64(skipped)
        return sample
