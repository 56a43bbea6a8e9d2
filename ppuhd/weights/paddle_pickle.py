"""Read ``paddle.save`` files (``.pdparams``, ``.pdopt``, ``.pdstates``) without running code.

``paddle.load`` unpickles without restriction, so a crafted ``.pdparams``
runs whatever it names.  Here the file goes through the restricted unpickler
of :mod:`ppuhd.weights.safe_pickle` with only what ``paddle.save`` writes:

* numpy arrays and scalars, and plain Python data (dicts, lists, tuples,
  strings, numbers) -- a Layer's or optimizer's state dict is saved as
  numpy arrays (``_build_saved_state_dict``);
* a Tensor inside any other object, which Paddle pickles as
  ``tuple((name, array))``, read back as its array;
* a ``DenseTensor``, pickled as ``eval('data', {'data': array})``, read back
  as its array -- the stand-in checks exactly that shape of call and never
  evaluates anything.

Everything comes back as numpy, as ``paddle.load(path, return_numpy=True)``
returns it: Paddle's name table (``StructuredToParameterName@@``) is dropped
and parameters that protocol-2/3 files split into 1 GiB slices
(``UnpackBigParamInfor@@``) are joined again.
"""

from __future__ import annotations  # 'str | None' annotations on Python 3.9

import math
import os

import numpy as np

from .safe_pickle import CheckpointFormatError, RefusedCall, RestrictedUnpickler, int_tuple, unpickle

__all__ = ["read_paddle_file"]

_NAME_TABLE = "StructuredToParameterName@@"
_SLICED_PARAMS = "UnpackBigParamInfor@@"
_PICKLE_PROTO = b"\x80"  # PROTO opcode, first byte of every protocol >= 2 pickle


def _saved_tensor(pair):
    """Stand-in for ``builtins.tuple`` as ``paddle.save`` uses it: a Tensor as ``(name, array)``."""
    if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
            and isinstance(pair[1], np.ndarray)):
        raise RefusedCall("calls builtins.tuple on something other than a saved tensor's (name, array)")
    return pair[1]


def _saved_dense_tensor(expression, namespace):
    """Stand-in for ``builtins.eval`` as ``paddle.save`` uses it: ``eval('data', {'data': array})``."""
    if not (expression == "data" and isinstance(namespace, dict) and list(namespace) == ["data"]
            and isinstance(namespace["data"], np.ndarray)):
        raise RefusedCall(f"calls builtins.eval on {str(expression)[:60]!r}, not on a saved DenseTensor")
    return namespace["data"]


_FUNCTIONS = {"builtins.tuple": _saved_tensor, "builtins.eval": _saved_dense_tensor}


def _join_sliced_parameters(state, path):
    """Undo ``paddle.save``'s split of parameters above 1 GiB (protocols 2 and 3)."""
    info = state.pop(_SLICED_PARAMS)
    if not isinstance(info, dict):
        raise CheckpointFormatError(path, f"{_SLICED_PARAMS} is not a mapping")
    for key, entry in info.items():
        try:
            shape = int_tuple(tuple(entry["OriginShape"]), "OriginShape")
            parts = [state.pop(name) for name in entry["slices"]]
            if not all(isinstance(p, np.ndarray) and p.ndim == 1 for p in parts):
                raise ValueError("a slice is not a flat array")
            joined = np.concatenate(parts)
            if joined.size != math.prod(shape):
                raise ValueError(f"{joined.size} elements for shape {shape}")
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointFormatError(path, f"bad split parameter {key!r} ({exc})") from exc
        state[key] = joined.reshape(shape)
    return state


def read_paddle_file(path: str | os.PathLike) -> object:
    """The object a ``paddle.save`` file holds, every tensor as a numpy array.

    Raises :class:`CheckpointFormatError` for files that are not
    ``paddle.save`` pickles or are damaged, and ``UnsafeCheckpointError``
    for pickles that ask for anything else (code, classes, attributes).
    """
    try:
        f = open(path, "rb")
    except OSError as err:
        raise CheckpointFormatError(path, f"cannot open the file ({err.strerror or err})") from None
    with f:
        if f.read(1) != _PICKLE_PROTO:
            raise CheckpointFormatError(path, "not a paddle.save file (no pickle header)")
        f.seek(0)
        obj = unpickle(RestrictedUnpickler(f, path, _FUNCTIONS, encoding="latin1"), path, "paddle.save pickle")
    if isinstance(obj, dict):
        obj.pop(_NAME_TABLE, None)
        if _SLICED_PARAMS in obj:
            obj = _join_sliced_parameters(obj, path)
    return obj
