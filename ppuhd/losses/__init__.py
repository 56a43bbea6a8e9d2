"""Losses; importing this module registers them."""

from . import classification  # noqa: F401
