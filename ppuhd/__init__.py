"""ppuhd: faithful PaddlePaddle reproductions of ViT, DeiT, UHDFour and LLFormer."""

from .api import build_model, load_config, load_weights
from .registry import ConfigError

__version__ = "0.1.0"
__all__ = ["build_model", "load_config", "load_weights", "ConfigError", "__version__"]
