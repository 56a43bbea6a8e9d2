"""Unpickling weights files without letting them run code.

A pickle is a program: it may name any importable function and call it
(``os.system`` is one opcode away).  Every pickle-based weights format this
package reads -- PyTorch's ``torch.save`` and Paddle's ``paddle.save`` -- goes
through :class:`RestrictedUnpickler`, which, like
``torch.load(weights_only=True)``, resolves only an allow-list of names.  Each
allowed name is a local stand-in that builds plain values (numpy arrays,
tuples, strings), so nothing from torch, paddle, numpy's pickle helpers or
argparse is ever called; numpy arrays and dtypes receive their pickled state
only once it has been checked.  Anything else raises
:class:`UnsafeCheckpointError` before it runs.

The numpy stand-ins live here because both formats store arrays the way numpy
pickles them; each format adds its own names (see ``torch_pickle`` and
``paddle_pickle``).
"""

from __future__ import annotations  # 'str | None' annotations on Python 3.9

import math
import os
import pickle
import types
from collections import OrderedDict
from typing import BinaryIO

import numpy as np

from ..errors import UserError

__all__ = [
    "CheckpointFormatError",
    "RefusedCall",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "int_tuple",
    "read_exact",
    "unpickle",
]

_FORMATS = (
    "PyTorch .pt/.pth/.bin/.ckpt/.tar (torch.save, zip or legacy format), "
    ".safetensors, .npz, .pdparams / .pdstates (paddle.save)"
)


class _FileProblem(UserError, ValueError):
    """An error about one file: ``(path, problem)``, composed into a message by ``_compose``.

    Keeping both as the args lets the error survive pickling (e.g. out of a
    loader worker); given one argument, that is the whole message (as Paddle's
    loader workers re-raise errors).
    """

    def __init__(self, path: str | os.PathLike, problem: str | None = None):
        super().__init__(os.fspath(path), problem)

    def __str__(self) -> str:
        path, problem = self.args
        return path if problem is None else self._compose(path, problem)

    def _compose(self, path: str, problem: str) -> str:
        raise NotImplementedError


class CheckpointFormatError(_FileProblem):
    """The file is not a weights file this package can read, or is damaged."""

    def _compose(self, path, problem):
        return f"{path}: {problem}. Readable formats: {_FORMATS}"


class UnsafeCheckpointError(_FileProblem):
    """The pickle asks for something a weights file has no reason to contain."""

    def _compose(self, path, problem):
        return (
            f"{path}: refusing to load: the pickle {problem}, which a weights file "
            "should not need (only arrays, numbers, strings and containers are "
            "allowed, as with torch.load(weights_only=True)), so it could run code on "
            "this machine. If you trust the file and its author, load it yourself "
            "(torch.load or paddle.load) and re-save only its weights: "
            "torch.save(model.state_dict()), paddle.save(layer.state_dict()) or .safetensors"
        )


class RefusedCall(Exception):
    """Raised by a stand-in asked to do more than the format it stands for needs.

    :func:`unpickle` reports it as an :class:`UnsafeCheckpointError`; the text
    completes "the pickle ...".
    """


def read_exact(f: BinaryIO, size: int, path: str | os.PathLike, what: str) -> bytearray:
    """Read exactly ``size`` bytes into a (writable) buffer or fail clearly."""
    buf = bytearray(size)
    if f.readinto(buf) != size:
        raise CheckpointFormatError(path, f"file is truncated inside {what}")
    return buf


# --------------------------------------------------------------------------
# Stand-ins every format needs: numpy arrays and scalars, bytes, containers
# --------------------------------------------------------------------------


def int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{what} is not a tuple of integers: {value!r}")
    return value


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


def _as_bytes(data) -> bytes:
    # Python 2 pickles, read with encoding='latin1', hold raw bytes as str.
    return data.encode("latin1") if isinstance(data, str) else data


def _numpy_scalar(dtype, data) -> np.generic:
    """Stand-in for ``numpy.core.multiarray.scalar(dtype, raw_bytes)``."""
    dtype = _check_numpy_dtype(dtype)
    data = _as_bytes(data)
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
    version, shape, dtype, is_fortran, data = state
    shape = int_tuple(shape, "array shape")
    dtype = _check_numpy_dtype(dtype)
    data = _as_bytes(data)
    if not isinstance(is_fortran, bool) or not isinstance(data, bytes):
        raise ValueError("unexpected numpy array state")
    if min(shape, default=0) < 0 or len(data) != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"numpy array of shape {shape} has {len(data)} bytes of data")
    array.__setstate__((version, shape, dtype, is_fortran, data))


# Names every pickle of plain data and numpy arrays may use, by "module.name".
COMMON_FUNCTIONS = {
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
COMMON_VALUES = {"numpy.ndarray": np.ndarray}  # only as _reconstruct's first argument


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that resolves only the names it is given.

    Args:
        file, path: the pickle stream and the file it came from (for messages).
        functions: ``"module.name" -> stand-in`` callable through REDUCE.
        classes: ``"module.name" -> stand-in`` instantiable through NEWOBJ.
        values: ``"module.name" -> value`` for names that are only ever data.
        encoding: how Python 2 ``str`` objects are decoded.

    It builds on the pure-Python unpickler because that one lets each opcode
    be replaced: besides ``find_class`` (which guards GLOBAL, STACK_GLOBAL and
    EXT*), the opcodes that call or mutate objects -- REDUCE, NEWOBJ(_EX),
    BUILD, INST, OBJ -- are checked too, so not even an allowed stand-in can
    be called or modified in an unintended way.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, path, functions, classes=None, values=None, encoding="utf-8"):
        super().__init__(file, encoding=encoding)
        self._path = path
        self._functions = {**COMMON_FUNCTIONS, **functions}
        self._classes = dict(classes or {})
        self._allowed = {**self._functions, **self._classes, **COMMON_VALUES, **(values or {})}

    def find_class(self, module: str, name: str):
        if module == "__builtin__":  # protocol-2 pickles use Python 2's name
            module = "builtins"
        qualified = f"{module}.{name}"
        if qualified not in self._allowed:
            raise UnsafeCheckpointError(self._path, f"references global '{qualified}'")
        return self._allowed[qualified]

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(self._path, f"refers to an external object {pid!r}")

    def _load_reduce(self):
        func = self.stack[-2]
        if not any(func is f for f in self._functions.values()):
            raise UnsafeCheckpointError(self._path, f"calls {func!r}")
        pickle._Unpickler.load_reduce(self)

    def _load_newobj(self):
        self._check_newobj(self.stack[-2])
        pickle._Unpickler.load_newobj(self)

    def _load_newobj_ex(self):
        self._check_newobj(self.stack[-3])
        pickle._Unpickler.load_newobj_ex(self)

    def _check_newobj(self, cls) -> None:
        if not any(cls is c for c in self._classes.values()):
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


def unpickle(unpickler: RestrictedUnpickler, path, what: str) -> object:
    """Run ``unpickler``, reporting any failure as a format error.

    A damaged or hostile pickle can make the unpickler fail in many ways
    (EOFError, UnpicklingError, IndexError on an empty stack, TypeError from
    a stand-in's arguments, ...); all of them mean the same thing here.
    """
    try:
        return unpickler.load()
    except (CheckpointFormatError, UnsafeCheckpointError):
        raise
    except RefusedCall as exc:
        raise UnsafeCheckpointError(path, str(exc)) from None
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise CheckpointFormatError(path, f"truncated or corrupt {what} ({detail})") from exc
