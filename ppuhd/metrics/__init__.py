"""Metrics; importing this module registers them."""

from . import classification, image_quality, lpips  # noqa: F401
from .base import Metric

__all__ = ["Metric"]
