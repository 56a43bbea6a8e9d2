"""Model families; importing this module registers every model."""

from . import classifier, convnet, deit, regnet, uhdfour, vit  # noqa: F401
