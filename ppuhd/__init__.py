"""ppuhd: faithful PaddlePaddle reproductions of ViT, DeiT, UHDFour and LLFormer."""

# Importing the component packages registers every model, loss, dataset, ... by name.
from . import data, losses, metrics, models  # noqa: F401
from .api import build_model, load_config, load_weights
from .engine import lr_schedulers, optimizers  # noqa: F401
from .registry import ConfigError

__version__ = "0.1.0"
__all__ = ["build_model", "load_config", "load_weights", "ConfigError", "__version__"]
