"""Model families; importing this module registers every model."""

from . import classifier, vit  # noqa: F401
