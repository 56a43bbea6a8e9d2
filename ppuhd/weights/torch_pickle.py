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

Pickles are executable, so they are read with a restricted unpickler that,
like ``torch.load(weights_only=True)``, only resolves the handful of globals a
weights file needs.  Each of those is replaced by a local stand-in that builds
plain values (numpy arrays, tuples, strings), so nothing from torch, numpy's
pickle helpers or argparse is ever called; numpy arrays and dtypes receive
their pickled state only once it has been checked.  Every other global raises
:class:`UnsafeCheckpointError` before anything runs.

Tensors cannot be built while unpickling, because the legacy format stores
the data after the pickle; the unpickler therefore returns placeholders that
:func:`_resolve` swaps for arrays once every storage has been read.
"""

import io
import math
import os
import pickle
import struct
import types
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

__all__ = [
    "CheckpointFormatError",
    "UnsafeCheckpointError",
    "bfloat16_to_float32",
    "read_exact",
    "read_torch_legacy",
    "read_torch_zip",
]

_FORMATS = (
    "PyTorch .pt/.pth/.bin/.ckpt/.tar (torch.save, zip or legacy format), "
    ".safetensors, .npz, .pdparams"
)


# Both errors keep (path, problem) as their args, so they survive pickling
# (e.g. out of a DataLoader worker), and compose the message in __str__.


class CheckpointFormatError(ValueError):
    """The file is not a weights file this package can read, or is damaged."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(os.fspath(path), problem)

    def __str__(self) -> str:
        path, problem = self.args
        return f"{path}: {problem}. Readable formats: {_FORMATS}"


class UnsafeCheckpointError(ValueError):
    """The pickle asks for something a weights file has no reason to contain."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(os.fspath(path), problem)

    def __str__(self) -> str:
        path, problem = self.args
        return (
            f"{path}: refusing to load: the pickle {problem}, which a weights file "
            "should not need (only tensors, numbers, strings and containers are "
            "allowed, as with torch.load(weights_only=True)). If you trust the "
            "file, re-save its state_dict() with PyTorch or convert it to "
            ".safetensors"
        )


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 values, given as native uint16 bit patterns, exactly.

    bfloat16 is the upper half of an IEEE float32, so shifting the 16 bits into
    the top of a 32-bit word gives the same number as a float32.
    """
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_exact(f: BinaryIO, size: int, path: str | os.PathLike, what: str) -> bytearray:
    """Read exactly ``size`` bytes into a (writable) buffer or fail clearly."""
    buf = bytearray(size)
    if f.readinto(buf) != size:
        raise CheckpointFormatError(path, f"file is truncated inside {what}")
    return buf


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


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, int) for v in value):
        raise ValueError(f"tensor {what} is not a tuple of integers: {value!r}")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> _PendingTensor:
    """Stand-in for ``torch._utils._rebuild_tensor`` and ``_rebuild_tensor_v2``.

    The trailing arguments of v2 (requires_grad, backward hooks, metadata)
    mean nothing for plain arrays.  The bounds are checked here because
    ``as_strided`` would otherwise happily read outside the storage.
    """
    if not isinstance(storage, _StorageRef):
        raise ValueError(f"tensor built from {type(storage).__name__}, not a storage")
    shape = _int_tuple(size, "size")
    strides = _int_tuple(stride, "stride")
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
    return _int_tuple(tuple(dims), "size")


def _codecs_encode(text, encoding) -> bytes:
    """Protocol-2 pickles store ``bytes`` as ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError(f"unexpected _codecs.encode arguments ({encoding!r})")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """Protocol-2 pickles store ``b''`` as a call to ``bytes()`` with no argument."""
    return b""


# Numeric numpy types only: object (and structured) dtypes would let pickled
# data stand in for pointers.
_NUMPY_KINDS = "biufc"


def _check_numpy_dtype(dtype) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMPY_KINDS:
        raise ValueError(f"numpy data of type {dtype!r} is not numeric")
    return dtype


def _numpy_dtype(spec, _align=False, _copy=True) -> np.dtype:
    """Stand-in for ``numpy.dtype(spec, align, copy)``.

    Always a fresh copy (``copy=True``), because a following BUILD sets the
    byte order in place and must never touch numpy's shared builtin dtypes.
    """
    if not isinstance(spec, str):
        raise ValueError(f"numpy dtype from {type(spec).__name__}, not a type code")
    return _check_numpy_dtype(np.dtype(spec, copy=True))


def _numpy_scalar(dtype, data) -> np.generic:
    """Stand-in for ``numpy.core.multiarray.scalar(dtype, raw_bytes)``."""
    dtype = _check_numpy_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise ValueError(f"numpy {dtype} scalar needs {dtype.itemsize} bytes")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_reconstruct(subtype, _shape, _typecode) -> np.ndarray:
    """Stand-in for ``numpy.core.multiarray._reconstruct``.

    Returns an empty array that the following BUILD fills in.
    """
    if subtype is not np.ndarray:
        raise ValueError(f"numpy array of class {subtype!r}")
    return np.empty(0, dtype=np.uint8)


def _set_numpy_dtype_state(dtype: np.dtype, state) -> None:
    # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
    # [, metadata]; only the byte order may differ from the fresh dtype.
    if (
        not isinstance(state, tuple)
        or len(state) not in (8, 9)
        or state[1] not in ("<", ">", "|", "=")
        or state[2:5] != (None, None, None)
        or state[5] not in (-1, dtype.itemsize)
        or state[6] not in (-1, dtype.alignment)
        or state[7] != dtype.flags
        or state[8:] not in ((), (None,))
    ):
        raise ValueError(f"unexpected numpy dtype state {state!r}")
    dtype.__setstate__(state)


def _set_numpy_array_state(array: np.ndarray, state) -> None:
    # (version, shape, dtype, is_fortran, raw bytes), checked before numpy
    # sees it so the data length always matches the shape.
    if not isinstance(state, tuple) or len(state) != 5:
        raise ValueError("unexpected numpy array state")
    _, shape, dtype, is_fortran, data = state
    shape = _int_tuple(shape, "shape")
    dtype = _check_numpy_dtype(dtype)
    if not isinstance(is_fortran, bool) or not isinstance(data, bytes):
        raise ValueError("unexpected numpy array state")
    if min(shape, default=0) < 0 or len(data) != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"numpy array of shape {shape} has {len(data)} bytes of data")
    array.__setstate__(state)


# Globals callable through REDUCE, by "module.name".
_FUNCTIONS = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.Size": _torch_size,
    "collections.OrderedDict": OrderedDict,
    "_codecs.encode": _codecs_encode,
    "builtins.bytes": _empty_bytes,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.slice": slice,
    "builtins.complex": complex,
    "numpy.dtype": _numpy_dtype,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "numpy.core.multiarray._reconstruct": _numpy_reconstruct,
    "numpy._core.multiarray._reconstruct": _numpy_reconstruct,
}
# Classes instantiated through NEWOBJ.  Training scripts store their
# argparse.Namespace; a SimpleNamespace keeps the attributes and nothing else.
_CLASSES = {"argparse.Namespace": types.SimpleNamespace}
# Globals that are only ever data.
_VALUES: dict[str, object] = {
    "numpy.ndarray": np.ndarray,  # only as _reconstruct's first argument
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
_ALLOWED = {**_FUNCTIONS, **_CLASSES, **_VALUES}


class _RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED` and records storages.

    It builds on the pure-Python unpickler because that one lets each opcode
    be replaced: besides ``find_class`` (which guards GLOBAL, STACK_GLOBAL and
    EXT*), the opcodes that call or mutate objects -- REDUCE, NEWOBJ(_EX),
    BUILD, INST, OBJ -- are checked too, so not even an allowed stand-in can
    be called or modified in an unintended way.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, path: str | os.PathLike):
        super().__init__(file, encoding="utf-8")
        self._path = path
        # key -> (type, element count) of every storage the pickle refers to
        self.storages: dict[str, tuple[_StorageType, int]] = {}

    def find_class(self, module: str, name: str):
        if module == "__builtin__":  # protocol-2 pickles use Python 2's name
            module = "builtins"
        qualified = f"{module}.{name}"
        if qualified not in _ALLOWED:
            raise UnsafeCheckpointError(self._path, f"references global '{qualified}'")
        return _ALLOWED[qualified]

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

    def _load_reduce(self):
        func = self.stack[-2]
        if not any(func is f for f in _FUNCTIONS.values()):
            raise UnsafeCheckpointError(self._path, f"calls {func!r}")
        pickle._Unpickler.load_reduce(self)

    def _load_newobj(self):
        self._check_newobj(self.stack[-2])
        pickle._Unpickler.load_newobj(self)

    def _load_newobj_ex(self):
        self._check_newobj(self.stack[-3])
        pickle._Unpickler.load_newobj_ex(self)

    def _check_newobj(self, cls) -> None:
        if not any(cls is c for c in _CLASSES.values()):
            raise UnsafeCheckpointError(self._path, f"instantiates {cls!r}")

    def _load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is np.ndarray:
            _set_numpy_array_state(inst, state)
        elif isinstance(inst, np.dtype):
            _set_numpy_dtype_state(inst, state)
        elif type(inst) in (OrderedDict, types.SimpleNamespace):
            # OrderedDict: the _metadata (module versions) of a state_dict.
            if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
                raise ValueError(f"unexpected attributes for {type(inst).__name__}")
            vars(inst).update(state)
        else:
            raise UnsafeCheckpointError(
                self._path, f"sets the state of a {type(inst).__name__} object"
            )

    def _refuse_old_instantiation(self):
        raise UnsafeCheckpointError(self._path, "uses a protocol-0/1 INST/OBJ opcode")

    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.INST[0]] = _refuse_old_instantiation
    dispatch[pickle.OBJ[0]] = _refuse_old_instantiation


def _unpickle(unpickler: _RestrictedUnpickler, path, what: str) -> object:
    """Run ``unpickler``, reporting any failure as a format error.

    A damaged or hostile pickle can make the unpickler fail in many ways
    (EOFError, UnpicklingError, IndexError on an empty stack, TypeError from
    a stand-in's arguments, ...); all of them mean the same thing here.
    """
    try:
        return unpickler.load()
    except (CheckpointFormatError, UnsafeCheckpointError):
        raise
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise CheckpointFormatError(path, f"truncated or corrupt {what} ({detail})") from exc


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
            unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(f"{prefix}data.pkl")), path)
            obj = _unpickle(unpickler, path, "data.pkl")

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

        def next_pickle(what: str) -> tuple[object, _RestrictedUnpickler]:
            unpickler = _RestrictedUnpickler(f, path)
            return _unpickle(unpickler, path, what), unpickler

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
