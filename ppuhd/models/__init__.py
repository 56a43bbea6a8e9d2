"""Model families; importing this module registers every model."""

from . import classifier, deit, uhdfour, vit  # noqa: F401
