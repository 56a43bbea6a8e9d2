"""Read other frameworks' weights files into plain numpy arrays.

:func:`read_checkpoint` loads a file as it was saved (typically a dict, maybe
nested, with numpy arrays where the tensors were); :func:`find_state_dict`
then picks out the flat ``name -> array`` weights mapping.

Supported: PyTorch ``torch.save`` files in both formats (read without
PyTorch, see :mod:`ppuhd.weights.torch_pickle`), ``.safetensors``, ``.npz``
and Paddle's ``paddle.save`` files (see :mod:`ppuhd.weights.paddle_pickle`).
No file is ever unpickled without restriction: none can run code.  bfloat16 tensors come back as float32 (exactly);
all other dtypes keep their numpy equivalent.
"""

from __future__ import annotations  # 'str | None' annotations on Python 3.9

import json
import math
import os
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import UserError

from .paddle_pickle import read_paddle_file
from .safe_pickle import CheckpointFormatError, UnsafeCheckpointError, read_exact
from .torch_pickle import bfloat16_to_float32, read_torch_legacy, read_torch_zip

__all__ = [
    "CheckpointFormatError",
    "StateDictNotFoundError",
    "UnsafeCheckpointError",
    "find_state_dict",
    "read_checkpoint",
]


class StateDictNotFoundError(UserError, ValueError):
    """A checkpoint that was read fine but holds no recognisable weights."""

PADDLE_SUFFIXES = (".pdparams", ".pdopt", ".pdstates")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"  # PROTO opcode, first byte of every protocol >= 2 pickle


def read_checkpoint(path: str | os.PathLike) -> object:
    """Load a weights file, with every tensor as a numpy array.

    Paddle files (``.pdparams``, ``.pdopt``, ``.pdstates``), ``.safetensors``
    and ``.npz`` are recognised by their extension; anything else by content (zip or legacy ``torch.save``, or a
    safetensors file under another name).  Raises
    :class:`CheckpointFormatError` for unknown or damaged files and
    :class:`UnsafeCheckpointError` for pickles that reference anything
    besides tensors and plain data.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PADDLE_SUFFIXES:
        return read_paddle_file(path)
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix == ".npz":
        return _read_npz(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(_ZIP_MAGIC):
        return read_torch_zip(path)
    if head.startswith(_PICKLE_PROTO):
        return read_torch_legacy(path)
    if head[8:9] == b"{":  # 8-byte header length, then the JSON header
        return _read_safetensors(path)
    raise CheckpointFormatError(path, "unrecognised file content")


# --------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # bit patterns, widened to float32 below
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# The safetensors specification caps the JSON header at 100 MB.
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Parse a safetensors file: u64 LE header size, JSON header, data buffer."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", read_exact(f, 8, path, "the header size"))
        if header_len > min(size - 8, _SAFETENSORS_MAX_HEADER):
            raise CheckpointFormatError(path, f"bad safetensors header size {header_len}")
        try:
            header = json.loads(read_exact(f, header_len, path, "the header"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointFormatError(path, f"bad safetensors header ({exc})") from exc
        if not isinstance(header, dict):
            raise CheckpointFormatError(path, "safetensors header is not a JSON object")
        header.pop("__metadata__", None)

        data_start = 8 + header_len
        data_len = size - data_start
        arrays = {}
        for name, info in header.items():
            dtype, shape, (begin, end) = _safetensors_entry(path, name, info, data_len)
            f.seek(data_start + begin)
            raw = read_exact(f, end - begin, path, f"tensor {name!r}")
            array = np.frombuffer(raw, dtype=dtype).reshape(shape)
            array = array.astype(dtype.newbyteorder("="), copy=False)
            arrays[name] = bfloat16_to_float32(array) if info["dtype"] == "BF16" else array
    return arrays


def _safetensors_entry(path: Path, name: str, info: object, data_len: int):
    """Validate one header entry; return (dtype, shape, (begin, end))."""
    if not isinstance(info, dict):
        raise CheckpointFormatError(path, f"bad safetensors entry for {name!r}")
    dtype_name = info.get("dtype")
    if dtype_name not in _SAFETENSORS_DTYPES:
        raise CheckpointFormatError(
            path,
            f"tensor {name!r} has unsupported safetensors dtype {dtype_name!r} "
            f"(supported: {', '.join(_SAFETENSORS_DTYPES)})",
        )
    dtype = _SAFETENSORS_DTYPES[dtype_name]
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if (
        not isinstance(shape, list)
        or not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(n, int) and n >= 0 for n in shape + offsets)
    ):
        raise CheckpointFormatError(path, f"bad shape or offsets for tensor {name!r}")
    begin, end = offsets
    if not begin <= end <= data_len or end - begin != math.prod(shape) * dtype.itemsize:
        raise CheckpointFormatError(path, f"tensor {name!r}: offsets do not match its shape")
    return dtype, tuple(shape), (begin, end)


# --------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise CheckpointFormatError(path, f"unreadable .npz file ({exc})") from exc


# --------------------------------------------------------------------------
# Picking the weights out of a checkpoint
# --------------------------------------------------------------------------

# Where training scripts usually keep the weights, in the order tried.
_CONTAINER_KEYS = ("model", "state_dict", "model_state_dict", "params", "net")
_DATA_PARALLEL_PREFIX = "module."


def find_state_dict(obj: object, key: str | None = None) -> dict[str, np.ndarray]:
    """Return the flat ``name -> array`` weights of a loaded checkpoint.

    With ``key``, the weights are ``obj[key]``.  Otherwise ``obj`` itself if
    it already maps names to arrays, else the first of ``'model'``,
    ``'state_dict'``, ``'model_state_dict'``, ``'params'``, ``'net'`` present.
    A ``module.`` prefix on every name (``nn.DataParallel``) is removed.
    """
    if not isinstance(obj, Mapping):
        raise StateDictNotFoundError(f"expected a checkpoint mapping, got {type(obj).__name__}")
    if key is not None:
        if key not in obj:
            raise StateDictNotFoundError(f"checkpoint has no key {key!r}; its keys are {list(obj)}")
        weights = obj[key]
    elif obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        weights = obj
    else:
        found = next((k for k in _CONTAINER_KEYS if k in obj), None)
        if found is None:
            raise StateDictNotFoundError(
                f"cannot find the weights: the checkpoint has none of the keys "
                f"{list(_CONTAINER_KEYS)} and is not itself a name -> array mapping; "
                f"its keys are {list(obj)} (pass key=... to choose one)"
            )
        key, weights = found, obj[found]

    where = f"checkpoint[{key!r}]" if key is not None else "checkpoint"
    if not isinstance(weights, Mapping) or not weights:
        raise StateDictNotFoundError(f"{where} is not a non-empty name -> array mapping")
    for name, value in weights.items():
        if not isinstance(name, str):
            raise StateDictNotFoundError(f"{where} has a non-string key {name!r}")
        if not isinstance(value, np.ndarray):
            raise StateDictNotFoundError(
                f"{where}[{name!r}] is a {type(value).__name__}, not an array; "
                "is this the right container?"
            )
    if all(name.startswith(_DATA_PARALLEL_PREFIX) for name in weights):
        return {name[len(_DATA_PARALLEL_PREFIX) :]: v for name, v in weights.items()}
    return dict(weights)
