"""ppuhd: faithful PaddlePaddle reproductions of ViT, DeiT, UHDFour and LLFormer."""

from . import cpu

# Before Paddle's first matrix product: on AMD processors MKL's generic path is ~3x slower (see ppuhd/cpu.py).
cpu.prefer_fast_mkl_path()

try:
    import paddle  # noqa: F401
except ImportError as err:  # Paddle is deliberately not a package requirement (CPU or CUDA build)
    raise ImportError(
        "ppuhd needs PaddlePaddle 3, which is installed on its own: 'pip install paddlepaddle==3.3.1' "
        "for the CPU, or Paddle's CUDA build, e.g. 'python -m pip install paddlepaddle-gpu==3.3.1 -i "
        "https://www.paddlepaddle.org.cn/packages/stable/cu126/' (see README, GPU)"
    ) from err

# Importing the component packages registers every model, loss, dataset, ... by name.
from . import data, losses, metrics, models, runtime  # noqa: F401, E402
from .api import build_model, create_model, list_models, load_config, load_weights
from .engine import lr_schedulers, optimizers  # noqa: F401
from .registry import ConfigError

__version__ = "0.1.0"
__all__ = ["build_model", "create_model", "list_models", "load_config", "load_weights", "runtime", "ConfigError",
           "__version__"]
