"""Model families; importing this module registers every model."""

from . import classifier, convnet, deit, llformer, regnet, uhdfour, vit  # noqa: F401
