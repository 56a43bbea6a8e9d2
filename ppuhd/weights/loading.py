"""Load weights into a model, strictly: all keys, right shapes, or an error."""

import os

import numpy as np

from ..errors import UserError

from .convert import adapt_state_dict, convert_torch_state_dict, key_filter
from .readers import PADDLE_SUFFIXES, find_state_dict, read_checkpoint

MODEL_FILE = "model.pdparams"
EMA_FILE = "ema.pdparams"


class WeightsError(UserError, ValueError):
    """Weights that do not fit the model, or a file that holds none."""


def resolve_weights_path(path, ema=False):
    """A checkpoint folder stands for its model.pdparams (or ema.pdparams)."""
    if os.path.isdir(path):
        path = os.path.join(path, EMA_FILE if ema else MODEL_FILE)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    return path


def check_state_dict(model, state, source="the weights", exclude=()):
    """Raise WeightsError naming every missing, unexpected and mis-shaped key.

    Keys matching a regular expression in ``exclude`` are not required.
    """
    excluded = key_filter(exclude)
    expected = {k: v for k, v in model.state_dict().items() if not excluded(k)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {list(np.shape(state[k]))}, model {list(expected[k].shape)}"
        for k in expected
        if k in state and list(np.shape(state[k])) != list(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        lines = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")
                lines.append(f"  {title}: {shown}")
        raise WeightsError(f"{source} do not fit {type(model).__name__}:\n" + "\n".join(lines))


def load_weights(model, path, ema=False, key=None, exclude=()):
    """Load ``path`` into ``model`` in place and return the model.

    ``path`` is a ``.pdparams`` file, a checkpoint folder written by training
    (``ema=True`` takes its EMA weights), or a PyTorch / safetensors / npz
    file, converted on the fly (``key`` picks the entry of a checkpoint that
    holds the weights, e.g. 'model_ema'). Position embeddings are resized to
    the model's input size. Keys matching a regular expression in
    ``exclude`` are neither loaded nor required (e.g. ``['^head\\.']`` to
    fine-tune on other classes). Fails, changing nothing, unless every other
    key of the model is given with the right shape and no extra key is present.
    """
    path = resolve_weights_path(path, ema)
    state = find_state_dict(read_checkpoint(path), key)
    if path.lower().endswith(PADDLE_SUFFIXES):
        state = adapt_state_dict(model, state)
    else:
        state = convert_torch_state_dict(model, state, exclude)
    excluded = key_filter(exclude)
    state = {k: v for k, v in state.items() if not excluded(k)}
    check_state_dict(model, state, source=path, exclude=exclude)
    model.set_state_dict(state)
    return model
