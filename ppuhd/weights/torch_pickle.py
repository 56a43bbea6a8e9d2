"""Read ``torch.save`` checkpoints into numpy without PyTorch.

Both serialization formats are handled:

* zip (torch >= 1.6): ``<name>/data.pkl`` is a pickle whose tensors refer to
  storages through persistent ids ``('storage', <StorageClass>, key,
  location, numel)``; the bytes of storage ``key`` are the zip record
  ``<name>/data/<key>``, in the byte order named by ``<name>/byteorder``
  (little when absent).
* legacy (``_use_new_zipfile_serialization=False``): five pickles in a row --
  magic number, protocol version, sys_info, the object (persistent ids carry
  a sixth ``view_metadata`` element), the list of storage keys -- followed by
  each listed storage as an int64 element count and its raw bytes, both
  always little-endian whatever the writer's byte order.

Pickles are executable, so they are read with the restricted unpickler of
:mod:`ppuhd.weights.safe_pickle`, given the handful of torch names a weights
file needs (tensor and parameter rebuilding, storage types, dtypes,
``argparse.Namespace``), each a local stand-in; every other name raises
:class:`~ppuhd.weights.safe_pickle.UnsafeCheckpointError` before anything runs.

Tensors cannot be built while unpickling, because the legacy format stores
the data after the pickle; the unpickler therefore returns placeholders that
:func:`_resolve` swaps for arrays once every storage has been read.
"""

from __future__ import annotations  # 'str | None' annotations on Python 3.9

import io
import math
import os
import struct
import types
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from .safe_pickle import CheckpointFormatError, RestrictedUnpickler, int_tuple, read_exact, unpickle

__all__ = ["bfloat16_to_float32", "read_torch_legacy", "read_torch_zip"]


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 values, given as native uint16 bit patterns, exactly.

    bfloat16 is the upper half of an IEEE float32, so shifting the 16 bits into
    the top of a 32-bit word gives the same number as a float32.
    """
    return (bits.astype(np.uint32) << 16).view(np.float32)


# --------------------------------------------------------------------------
# Stand-ins for the allowed globals
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _StorageType:
    """What a ``torch.<X>Storage`` global stands for: the element type."""

    name: str
    dtype: np.dtype  # element type on disk; bfloat16 is kept as its uint16 bits
    bfloat16: bool = False


_STORAGE_TYPES = {
    t.name: t
    for t in (
        _StorageType("DoubleStorage", np.dtype(np.float64)),
        _StorageType("FloatStorage", np.dtype(np.float32)),
        _StorageType("HalfStorage", np.dtype(np.float16)),
        _StorageType("BFloat16Storage", np.dtype(np.uint16), bfloat16=True),
        _StorageType("LongStorage", np.dtype(np.int64)),
        _StorageType("IntStorage", np.dtype(np.int32)),
        _StorageType("ShortStorage", np.dtype(np.int16)),
        _StorageType("CharStorage", np.dtype(np.int8)),
        _StorageType("ByteStorage", np.dtype(np.uint8)),
        _StorageType("BoolStorage", np.dtype(np.bool_)),
    )
}
# torch.save(tensor.untyped_storage()) names this class; its elements are bytes.
_UNTYPED_STORAGE = _StorageType("UntypedStorage", np.dtype(np.uint8))


@dataclass(frozen=True)
class _StorageRef:
    """A storage (or, in old legacy files, a slice of one) named by a pickle."""

    key: str
    type: _StorageType
    start: int  # in elements, into the stored storage ``key``
    length: int  # in elements


@dataclass(frozen=True)
class _PendingTensor:
    """A tensor whose storage bytes may not have been read yet."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> _PendingTensor:
    """Stand-in for ``torch._utils._rebuild_tensor`` and ``_rebuild_tensor_v2``.

    The trailing arguments of v2 (requires_grad, backward hooks, metadata)
    mean nothing for plain arrays.  The bounds are checked here because
    ``as_strided`` would otherwise happily read outside the storage.
    """
    if not isinstance(storage, _StorageRef):
        raise ValueError(f"tensor built from {type(storage).__name__}, not a storage")
    shape = int_tuple(size, "tensor size")
    strides = int_tuple(stride, "tensor stride")
    if len(shape) != len(strides):
        raise ValueError(f"tensor size {shape} and stride {strides} differ in length")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise ValueError(f"bad tensor storage offset {storage_offset!r}")
    if min(shape + strides, default=0) < 0:
        raise ValueError(f"negative tensor size or stride: {shape}, {strides}")
    if math.prod(shape) > 0:
        last = storage_offset + sum((n - 1) * s for n, s in zip(shape, strides))
        if last >= storage.length:
            raise ValueError(
                f"tensor of size {shape}, stride {strides}, offset {storage_offset} "
                f"reaches element {last} of a {storage.length}-element storage"
            )
    return _PendingTensor(storage, storage_offset, shape, strides)


def _rebuild_parameter(data, _requires_grad, _backward_hooks, _state=None):
    """Stand-in for ``_rebuild_parameter`` (and ``_with_state``): keep the data."""
    if not isinstance(data, _PendingTensor):
        raise ValueError(f"parameter built from {type(data).__name__}, not a tensor")
    return data


def _torch_size(dims) -> tuple[int, ...]:
    return int_tuple(tuple(dims), "torch.Size")


# Names callable through REDUCE, by "module.name" (besides numpy's and the builtins').
_FUNCTIONS = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.Size": _torch_size,
}
# Classes instantiated through NEWOBJ.  Training scripts store their
# argparse.Namespace; a SimpleNamespace keeps the attributes and nothing else.
_CLASSES = {"argparse.Namespace": types.SimpleNamespace}
# Names that are only ever data.
_VALUES: dict[str, object] = {
    "torch.storage.UntypedStorage": _UNTYPED_STORAGE,
    **{f"torch.{name}": t for name, t in _STORAGE_TYPES.items()},
    # Dtypes pickle under their canonical name; as values they become strings.
    **{
        f"torch.{name}": f"torch.{name}"
        for name in (
            "float64", "float32", "float16", "bfloat16", "int64",
            "int32", "int16", "int8", "uint8", "bool",
        )
    },
}


class _TorchUnpickler(RestrictedUnpickler):
    """The restricted unpickler with torch's names; records the storages tensors refer to."""

    def __init__(self, file: BinaryIO, path: str | os.PathLike):
        super().__init__(file, path, _FUNCTIONS, _CLASSES, _VALUES)
        # key -> (type, element count) of every storage the pickle refers to
        self.storages: dict[str, tuple[_StorageType, int]] = {}

    def persistent_load(self, pid) -> _StorageRef:
        if not isinstance(pid, tuple) or len(pid) not in (5, 6):
            raise ValueError(f"unexpected persistent id {pid!r}")
        kind, storage_type, key, _location, numel, *view = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise ValueError(f"unexpected persistent id {pid!r}")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise ValueError(f"unexpected persistent id {pid!r}")
        if self.storages.setdefault(key, (storage_type, numel)) != (storage_type, numel):
            raise ValueError(f"storage {key!r} is described in two different ways")
        if not view or view[0] is None:
            return _StorageRef(key, storage_type, 0, numel)
        # Legacy files from PyTorch < 1.0 could refer to a slice of a storage:
        # (view key, offset, size), in elements.
        _view_key, start, length = view[0]
        if not all(isinstance(v, int) and v >= 0 for v in (start, length)):
            raise ValueError(f"unexpected storage view {view[0]!r}")
        if start + length > numel:
            raise ValueError(f"storage view {view[0]!r} exceeds its {numel} elements")
        return _StorageRef(key, storage_type, start, length)


# --------------------------------------------------------------------------
# From placeholders to arrays
# --------------------------------------------------------------------------


def _materialize(tensor: _PendingTensor, roots: dict[str, np.ndarray]) -> np.ndarray:
    """Copy one tensor out of its storage into a C-contiguous native array."""
    ref = tensor.storage
    root = roots[ref.key]
    native = root.dtype.newbyteorder("=")
    if math.prod(tensor.shape) == 0:
        array = np.zeros(tensor.shape, dtype=native)
    else:
        view = np.lib.stride_tricks.as_strided(
            root[ref.start + tensor.offset :],
            shape=tensor.shape,
            strides=[s * root.dtype.itemsize for s in tensor.strides],
            writeable=False,
        )
        # A copy, so that tensors sharing a storage do not share memory.
        array = np.array(view, dtype=native, order="C")
    return bfloat16_to_float32(array) if ref.type.bfloat16 else array


def _resolve(obj: object, roots: dict[str, np.ndarray], path) -> object:
    """Replace every placeholder in ``obj`` by its array.

    Containers are updated in place (tuples rebuilt), keeping the sharing and
    any cycles the pickle set up.  A storage pickled on its own becomes a 1-D
    array of its elements.  Sets are left alone: they cannot hold arrays.
    """
    done: dict[int, object] = {}

    def walk(value):
        if id(value) in done:
            return done[id(value)]
        if isinstance(value, _StorageRef):
            result = _materialize(_PendingTensor(value, 0, (value.length,), (1,)), roots)
        elif isinstance(value, _PendingTensor):
            result = _materialize(value, roots)
        elif isinstance(value, dict):
            done[id(value)] = value
            for key, item in list(value.items()):
                value[key] = walk(item)
            return value
        elif isinstance(value, list):
            done[id(value)] = value
            value[:] = [walk(item) for item in value]
            return value
        elif isinstance(value, types.SimpleNamespace):
            done[id(value)] = value
            vars(value).update({k: walk(v) for k, v in vars(value).items()})
            return value
        elif isinstance(value, tuple):
            result = tuple(walk(item) for item in value)
        else:
            return value
        done[id(value)] = result
        return result

    try:
        return walk(obj)
    except RecursionError as exc:
        raise CheckpointFormatError(path, "objects nested too deeply") from exc


def _storage_array(
    raw: bytes, storage_type: _StorageType, numel: int, byteorder: str, path, key: str
) -> np.ndarray:
    if len(raw) != numel * storage_type.dtype.itemsize:
        raise CheckpointFormatError(
            path, f"storage {key!r} has {len(raw)} bytes, expected {numel} elements"
        )
    return np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder(byteorder))


# --------------------------------------------------------------------------
# The two file formats
# --------------------------------------------------------------------------


def read_torch_zip(path: str | os.PathLike) -> object:
    """Read a zip-format ``torch.save`` file (the default since torch 1.6)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            prefixes = [
                n[: -len("data.pkl")]
                for n in names
                if n.endswith("/data.pkl") and n.count("/") == 1
            ]
            if len(prefixes) != 1:
                raise CheckpointFormatError(
                    path, "zip archive without a single '<name>/data.pkl': not a torch.save file"
                )
            prefix = prefixes[0]
            if f"{prefix}constants.pkl" in names:
                raise CheckpointFormatError(
                    path,
                    "this is a TorchScript archive (torch.jit.save); load it with "
                    "PyTorch and save its state_dict() instead",
                )
            unpickler = _TorchUnpickler(io.BytesIO(archive.read(f"{prefix}data.pkl")), path)
            obj = unpickle(unpickler, path, "data.pkl")

            byteorder = "<"
            if f"{prefix}byteorder" in names:
                mark = archive.read(f"{prefix}byteorder")
                if mark not in (b"little", b"big"):
                    raise CheckpointFormatError(path, f"unknown byte order {mark!r}")
                byteorder = "<" if mark == b"little" else ">"

            roots = {}
            for key, (storage_type, numel) in unpickler.storages.items():
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise CheckpointFormatError(path, f"storage record {record!r} is missing")
                roots[key] = _storage_array(
                    archive.read(record), storage_type, numel, byteorder, path, key
                )
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise CheckpointFormatError(path, f"truncated or corrupt zip archive ({exc})") from exc
    return _resolve(obj, roots, path)


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def read_torch_legacy(path: str | os.PathLike) -> object:
    """Read a legacy ``torch.save(..., _use_new_zipfile_serialization=False)`` file."""
    with open(path, "rb") as f:

        def next_pickle(what: str) -> tuple[object, _TorchUnpickler]:
            unpickler = _TorchUnpickler(f, path)
            return unpickle(unpickler, path, what), unpickler

        magic, _ = next_pickle("header")
        if magic != _LEGACY_MAGIC:
            raise CheckpointFormatError(
                path, "a pickle, but not a PyTorch checkpoint (no torch.save magic number)"
            )
        version, _ = next_pickle("header")
        if version != _LEGACY_PROTOCOL:
            raise CheckpointFormatError(path, f"unknown legacy torch protocol {version!r}")
        next_pickle("header")  # sys_info: sizes and byte order of the writer, not needed
        obj, unpickler = next_pickle("object pickle")
        keys, _ = next_pickle("storage key list")
        if (
            not isinstance(keys, list)
            or not all(isinstance(key, str) for key in keys)
            or set(keys) != set(unpickler.storages)
        ):
            raise CheckpointFormatError(path, "storage key list does not match the pickle")

        roots = {}
        for key in keys:
            storage_type, numel = unpickler.storages[key]
            (count,) = struct.unpack("<q", read_exact(f, 8, path, f"storage {key!r}"))
            if count != numel:
                raise CheckpointFormatError(
                    path, f"storage {key!r} has {count} elements, expected {numel}"
                )
            raw = read_exact(f, numel * storage_type.dtype.itemsize, path, f"storage {key!r}")
            roots[key] = _storage_array(raw, storage_type, numel, "<", path, key)
    return _resolve(obj, roots, path)
