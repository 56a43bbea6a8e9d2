"""Convert a PyTorch state dict into a Paddle model's, by the model's own layers.

The Paddle ports keep PyTorch's parameter names, so each Paddle key has one
PyTorch key, found from the layer that owns it:

* ``nn.Linear`` weights are transposed (Paddle stores [in, out]);
* ``InstanceNorm`` affine parameters are ``scale``/``bias`` in Paddle and
  ``weight``/``bias`` in PyTorch;
* BatchNorm running statistics are ``_mean``/``_variance`` in Paddle and
  ``running_mean``/``running_var`` in PyTorch (``num_batches_tracked`` is dropped);
* everything else (convolutions, LayerNorm, tokens) is copied as is.

A model may list PyTorch keys it deliberately drops in ``torch_ignored_keys``
(regular expressions), e.g. modules the original builds but never uses.
Every other difference is an error: nothing is skipped silently.
"""

import re

import numpy as np
import paddle.nn as nn

from ..errors import UserError

_INSTANCE_NORMS = (nn.InstanceNorm1D, nn.InstanceNorm2D, nn.InstanceNorm3D)
_BATCH_NORMS = (nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D, nn.SyncBatchNorm)
_PADDLE_TO_TORCH_SUFFIX = {
    _INSTANCE_NORMS: {"scale": "weight"},
    _BATCH_NORMS: {"_mean": "running_mean", "_variance": "running_var"},
}


class ConversionError(UserError, ValueError):
    """The source weights do not fit the model."""


def key_filter(patterns):
    """A predicate: does a key match any of the regular expressions ``patterns``?"""
    compiled = [re.compile(p) for p in patterns]
    return lambda key: any(p.search(key) for p in compiled)


def adapt_state_dict(model, state):
    """Let the model adjust loaded weights to its configuration first.

    A model with an ``adapt_state_dict(state)`` method (ViT: resize the
    position embedding to its input size) returns an adjusted copy.
    """
    adapt = getattr(model, "adapt_state_dict", None)
    return adapt(state) if adapt else state


def torch_key_plan(model):
    """``{paddle_key: (torch_key, transpose)}`` for every entry of ``model.state_dict()``."""
    owners = {}
    for prefix, layer in model.named_sublayers(include_self=True):
        for name in list(layer._parameters) + list(layer._buffers):
            owners[f"{prefix}.{name}" if prefix else name] = (layer, name)
    plan = {}
    for key in model.state_dict():
        layer, name = owners[key]
        torch_name = name
        for layer_types, renames in _PADDLE_TO_TORCH_SUFFIX.items():
            if isinstance(layer, layer_types):
                torch_name = renames.get(name, name)
        prefix = key[: len(key) - len(name)]
        plan[key] = (prefix + torch_name, isinstance(layer, nn.Linear) and name == "weight")
    return plan


def convert_torch_state_dict(model, torch_state, exclude=()):
    """Map ``torch_state`` (name -> numpy array) onto ``model``'s keys, strictly.

    Model keys matching a regular expression in ``exclude`` are not required;
    the source keys they would come from are dropped.
    """
    ignored = key_filter(getattr(model, "torch_ignored_keys", ()))
    excluded = key_filter(exclude)
    torch_state = adapt_state_dict(model, torch_state)
    expected = model.state_dict()
    converted, problems = {}, []
    used = set()
    for key, (torch_key, transpose) in torch_key_plan(model).items():
        if excluded(key):
            used.add(torch_key)
            continue
        if torch_key not in torch_state:
            problems.append(f"missing in the source: {torch_key} (for {key})")
            continue
        value = np.asarray(torch_state[torch_key])
        used.add(torch_key)
        if transpose:
            value = value.T
        want = list(expected[key].shape)
        if list(value.shape) != want:
            problems.append(f"shape of {torch_key}: source {list(value.shape)}, model {want}")
            continue
        converted[key] = np.ascontiguousarray(value.astype(np.float32) if value.dtype.kind == "f" else value)
    for torch_key in torch_state:
        if torch_key in used or torch_key.endswith("num_batches_tracked"):
            continue
        if not ignored(torch_key):
            problems.append(f"unexpected in the source: {torch_key}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ConversionError(f"the source weights do not fit {type(model).__name__}:\n  {shown}{more}")
    return converted
