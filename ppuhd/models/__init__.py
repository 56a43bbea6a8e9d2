"""Model families; importing this module registers every model."""

from . import classifier, deit, vit  # noqa: F401
