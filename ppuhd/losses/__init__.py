"""Losses; importing this module registers them."""

from . import classification, distillation, enhancement  # noqa: F401
