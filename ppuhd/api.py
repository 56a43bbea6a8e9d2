"""The Python API for scripts and notebooks."""

import fnmatch

from .config import load_config
from .registry import MODELS
from .weights import load_weights

__all__ = ["build_model", "create_model", "list_models", "load_weights", "load_config"]


def build_model(config, weights=None, ema=False):
    """Build the model of a config (a YAML path, a shipped config's name, a full config dict or a ``model:`` dict).

    Returns the ``paddle.nn.Layer`` in eval mode, with ``weights`` loaded
    if given (any format ``load_weights`` reads; ``ema=True`` takes the EMA
    weights of a training checkpoint).
    """
    if isinstance(config, dict) and "type" in config:
        config = {"model": config}
    model = load_config(config).build_model()
    if weights is not None:
        load_weights(model, weights, ema=ema)
    model.eval()
    return model


def list_models(pattern="*"):
    """The registered model names matching the glob ``pattern`` (e.g. ``'deit*'``), sorted."""
    return fnmatch.filter(MODELS.names(), pattern)


def create_model(name, weights=None, **overrides):
    """The registered model ``name`` (see :func:`list_models`) in eval mode, as timm's ``create_model``.

    ``overrides`` are arguments of the model's constructor (e.g. ``num_classes=10``,
    ``img_size=384``), checked against its signature; ``weights``, any file or
    checkpoint folder :func:`load_weights` reads.
    """
    return build_model({**overrides, "type": name}, weights=weights)
