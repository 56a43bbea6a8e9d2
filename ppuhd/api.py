"""The Python API for scripts and notebooks."""

from .config import load_config
from .weights import load_weights

__all__ = ["build_model", "load_weights", "load_config"]


def build_model(config, weights=None, ema=False):
    """Build the model of a config (a YAML path, a full config dict or a ``model:`` dict).

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
