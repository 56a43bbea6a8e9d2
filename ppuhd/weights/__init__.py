"""Reading, converting and loading model weights."""

from .convert import ConversionError, adapt_state_dict, convert_torch_state_dict
from .loading import EMA_FILE, MODEL_FILE, WeightsError, check_state_dict, load_weights, resolve_weights_path
from .readers import find_state_dict, read_checkpoint

__all__ = [
    "ConversionError", "WeightsError", "adapt_state_dict", "convert_torch_state_dict", "check_state_dict",
    "load_weights", "resolve_weights_path", "find_state_dict", "read_checkpoint", "MODEL_FILE", "EMA_FILE",
]
