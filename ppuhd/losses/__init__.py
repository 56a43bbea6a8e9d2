"""Losses; importing this module registers them."""

from . import classification, distillation  # noqa: F401
