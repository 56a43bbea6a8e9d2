"""Datasets, transforms, samplers and loaders; importing this registers them."""

from . import augment, classification, demo, paired, transforms  # noqa: F401
from .base import BaseDataset, SampleKey
from .image_io import ImageReadError, read_image, write_image

__all__ = ["BaseDataset", "SampleKey", "ImageReadError", "read_image", "write_image"]
