"""Tests for ppuhd.weights.readers: foreign weights files into numpy, no torch.

The PyTorch and safetensors fixtures were written by real PyTorch (see
tests/fixtures/make_torch_io_fixtures.py); ``expected.npz`` holds what torch
itself says each tensor is.  Hostile and damaged files are built here.
"""

import json
import pickle
import re
import shutil
import struct
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ppuhd.weights.readers import (
    CheckpointFormatError,
    StateDictNotFoundError,
    UnsafeCheckpointError,
    find_state_dict,
    read_checkpoint,
)

FIXTURES = Path(__file__).parent / "fixtures" / "torch_io"


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "expected.npz") as npz:
        return {name: npz[name] for name in npz.files}


def group(expected, name):
    prefix = f"{name}/"
    return {k[len(prefix) :]: v for k, v in expected.items() if k.startswith(prefix)}


def assert_same_arrays(actual, wanted):
    assert set(actual) == set(wanted)
    for name, value in wanted.items():
        got = actual[name]
        np.testing.assert_array_equal(got, value, strict=True, err_msg=name)
        assert got.flags.c_contiguous and got.flags.writeable, name


# --------------------------------------------------------------------------
# Hand-built pickles and torch files
# --------------------------------------------------------------------------

PROTO2 = b"\x80\x02"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def op_global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def op_value(value):
    """Opcodes pushing a plain value (a protocol-2 pickle without PROTO/STOP)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def op_tensor(numel, offset, size, stride, view=None, legacy=False):
    """Opcodes pushing ``_rebuild_tensor_v2`` of a float32 storage '0'."""
    pid = (
        op_value("storage")
        + op_global("torch", "FloatStorage")
        + op_value("0")
        + op_value("cpu")
        + op_value(numel)
        + (op_value(view) if legacy else b"")
    )
    args = (
        b"(" + pid + b"tQ"  # MARK ... TUPLE, BINPERSID
        + op_value(offset) + op_value(size) + op_value(stride)
        + b"\x89N"  # requires_grad=False, backward_hooks=None
    )
    return op_global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"


def write_zip_checkpoint(path, data_pkl, storages=()):
    """A zip-format checkpoint; ``storages`` are (key, raw bytes) pairs."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, raw in storages:
            archive.writestr(f"archive/data/{key}", raw)
    return path


def write_legacy_checkpoint(path, object_pickle, storages=()):
    """A legacy-format checkpoint; ``storages`` are (key, float32 values) pairs."""
    header = b"".join(
        pickle.dumps(v, protocol=2)
        for v in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    body = pickle.dumps([key for key, _ in storages], protocol=2)
    for _, values in storages:
        body += struct.pack("<q", len(values)) + np.asarray(values, "<f4").tobytes()
    path.write_bytes(header + object_pickle + body)
    return path


# --------------------------------------------------------------------------
# PyTorch files written by torch
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tensors_zip.pt", "tensors_legacy.pt"])
def test_torch_tensors_match_torch(name, expected):
    obj = read_checkpoint(FIXTURES / name)
    assert_same_arrays(obj, group(expected, "tensors"))
    assert obj["bf16_t"].dtype == np.float32  # bfloat16 is widened
    assert obj["f16"].dtype == np.float16
    # Views of one storage come back as independent copies.
    assert not np.shares_memory(obj["shared_a"], obj["shared_b"])
    assert not np.shares_memory(obj["transposed"], obj["strided"])


@pytest.mark.parametrize("name", ["module_zip.pth", "module_legacy.pth"])
def test_training_checkpoint(name, expected):
    obj = read_checkpoint(FIXTURES / name)
    assert obj["epoch"] == 3
    assert isinstance(obj["args"], types.SimpleNamespace)
    assert vars(obj["args"]) == {"lr": 0.1, "arch": "tiny"}
    extra = group(expected, "extra")
    assert obj["best_acc"] == extra["best_acc"] and obj["best_acc"].dtype == np.float64
    np.testing.assert_array_equal(obj["pixel_mean"], extra["pixel_mean"], strict=True)

    weights = find_state_dict(obj)
    assert type(weights) is dict
    assert_same_arrays(weights, group(expected, "net"))
    assert weights["bn.num_batches_tracked"].shape == ()
    assert weights["bn.num_batches_tracked"].dtype == np.int64


def test_numpy_1_pickle_names(tmp_path):
    """Checkpoints pickled under numpy 1.x name numpy.core, not numpy._core."""
    path = tmp_path / "np1.pth"
    with zipfile.ZipFile(FIXTURES / "module_zip.pth") as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                assert b"numpy._core.multiarray" in data
                # GLOBAL arguments are newline-terminated, so this edit is safe.
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(info.filename, data)
    obj = read_checkpoint(path)
    assert obj["best_acc"] == 0.75
    original = read_checkpoint(FIXTURES / "module_zip.pth")
    np.testing.assert_array_equal(obj["pixel_mean"], original["pixel_mean"], strict=True)


def test_data_parallel_prefix_is_stripped(expected):
    obj = read_checkpoint(FIXTURES / "dataparallel.pth.tar")
    assert set(obj["state_dict"]) == {"module.weight", "module.bias"}
    wanted = {k.removeprefix("module."): v for k, v in group(expected, "dataparallel").items()}
    assert_same_arrays(find_state_dict(obj), wanted)


def test_big_endian_zip_checkpoint(tmp_path, expected):
    """A zip checkpoint whose byteorder record says 'big' (all float32)."""
    big = tmp_path / "big.pth"
    source = FIXTURES / "dataparallel.pth.tar"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(big, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            parts = info.filename.split("/")
            if parts[1] == "byteorder":
                data = b"big"
            elif parts[1] == "data":
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            dst.writestr(info.filename, data)
    weights = find_state_dict(read_checkpoint(big))
    wanted = {k.removeprefix("module."): v for k, v in group(expected, "dataparallel").items()}
    assert_same_arrays(weights, wanted)


# --------------------------------------------------------------------------
# Hand-built torch files: format details torch 2.x no longer writes
# --------------------------------------------------------------------------


def test_legacy_storage_view(tmp_path):
    """PyTorch < 1.0 could pickle tensors on a slice (offset 2, length 4) of a storage."""
    pkl = PROTO2 + op_tensor(6, 1, (3,), (1,), view=("view", 2, 4), legacy=True) + b"."
    path = write_legacy_checkpoint(tmp_path / "old.pt", pkl, [("0", [0, 1, 2, 3, 4, 5])])
    np.testing.assert_array_equal(read_checkpoint(path), np.array([3, 4, 5], np.float32))


def test_out_of_bounds_tensor_is_refused(tmp_path):
    pkl = PROTO2 + op_tensor(4, 1, (2, 2), (2, 1)) + b"."  # would read element 4 of 0..3
    path = write_zip_checkpoint(tmp_path / "oob.pt", pkl, [("0", bytes(16))])
    with pytest.raises(CheckpointFormatError, match="reaches element 4 of a 4-element storage"):
        read_checkpoint(path)


def test_storage_size_mismatch_is_refused(tmp_path):
    pkl = PROTO2 + op_tensor(4, 0, (4,), (1,)) + b"."
    path = write_zip_checkpoint(tmp_path / "short.pt", pkl, [("0", bytes(12))])
    with pytest.raises(CheckpointFormatError, match="storage '0' has 12 bytes"):
        read_checkpoint(path)


# --------------------------------------------------------------------------
# Hostile pickles
# --------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["os", "posix", "subprocess"])
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_code_execution_is_refused(tmp_path, module, container):
    marker = tmp_path / "pwned"
    name = "Popen" if module == "subprocess" else "system"
    command = ["touch", str(marker)] if module == "subprocess" else f"touch {marker}"
    # REDUCE: os.system("touch <marker>"), then STOP.
    pkl = PROTO2 + op_global(module, name) + op_value(command) + b"\x85R."
    path = tmp_path / "evil.pth"
    if container == "zip":
        write_zip_checkpoint(path, pkl)
    else:
        write_legacy_checkpoint(path, pkl)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert f"'{module}.{name}'" in message
    assert "weights file should not need" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        # Python 2 spelling of builtins.eval.
        (op_global("__builtin__", "eval") + op_value("1") + b"\x85R", "'builtins.eval'"),
        (op_global("builtins", "getattr"), "'builtins.getattr'"),
        (op_global("torch._utils", "_rebuild_qtensor"), "'torch._utils._rebuild_qtensor'"),
        # Setting attributes on an allowed function.
        (
            op_global("torch._utils", "_rebuild_tensor_v2") + op_value({"a": 1}) + b"b",
            "sets the state",
        ),
        # Calling something allowed only as data.
        (op_global("torch", "FloatStorage") + op_value(()) + b"R", "calls"),
        # NEWOBJ of an allowed function (only Namespace may be instantiated).
        (op_global("collections", "OrderedDict") + op_value(()) + b"\x81", "instantiates"),
        # Protocol-0 INST calls its class directly.
        (b"(iargparse\nNamespace\n", "INST/OBJ"),
    ],
)
def test_unsafe_pickle_constructs_are_refused(tmp_path, body, refusal):
    path = write_zip_checkpoint(tmp_path / "evil.pt", PROTO2 + body + b".")
    with pytest.raises(UnsafeCheckpointError, match=re.escape(refusal)):
        read_checkpoint(path)


# --------------------------------------------------------------------------
# Damaged and unknown files
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tensors_zip.pt", "tensors_legacy.pt"])
@pytest.mark.parametrize("keep", [0.05, 0.25, 0.5, 0.75, -1])
def test_truncated_torch_files(tmp_path, name, keep):
    data = (FIXTURES / name).read_bytes()
    size = len(data) - 1 if keep == -1 else int(len(data) * keep)
    path = tmp_path / name
    path.write_bytes(data[:size])
    with pytest.raises(CheckpointFormatError, match=re.escape(str(path))):
        read_checkpoint(path)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.pth", b"", "unrecognised file content"),
        ("text.bin", b"hello, weights", "unrecognised file content"),
        ("plain.pkl", pickle.dumps({"a": 1}, protocol=2), "not a PyTorch checkpoint"),
        ("broken.npz", b"PK\x03\x04 not really", "unreadable .npz"),
        ("broken.safetensors", b"\x05\x00\x00\x00\x00\x00\x00\x00{oops", "bad safetensors header"),
    ],
)
def test_unknown_or_corrupt_files(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and problem in message
    assert "safetensors" in message and ".npz" in message  # the formats understood


def test_torchscript_archive_is_named(tmp_path):
    path = tmp_path / "scripted.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("scripted/data.pkl", PROTO2 + b"N.")
        archive.writestr("scripted/constants.pkl", PROTO2 + b").")
    with pytest.raises(CheckpointFormatError, match="TorchScript"):
        read_checkpoint(path)


# --------------------------------------------------------------------------
# safetensors, npz, pdparams
# --------------------------------------------------------------------------


def test_safetensors_matches_torch(tmp_path, expected):
    wanted = group(expected, "safetensors")
    assert_same_arrays(read_checkpoint(FIXTURES / "tensors.safetensors"), wanted)
    # Recognised by content under another name, too.
    renamed = tmp_path / "model.bin"
    shutil.copy(FIXTURES / "tensors.safetensors", renamed)
    assert_same_arrays(read_checkpoint(renamed), wanted)


def write_safetensors(path, header, data=b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_safetensors_rejects_bad_entries(tmp_path):
    fp8 = {"x": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}
    path = write_safetensors(tmp_path / "f8.safetensors", fp8, bytes(2))
    with pytest.raises(CheckpointFormatError, match="unsupported safetensors dtype 'F8_E4M3'"):
        read_checkpoint(path)
    short = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    path = write_safetensors(tmp_path / "short.safetensors", short, bytes(4))
    with pytest.raises(CheckpointFormatError, match="offsets do not match"):
        read_checkpoint(path)


def test_npz(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(7, np.int64)}
    np.savez(tmp_path / "w.npz", **arrays)
    assert_same_arrays(read_checkpoint(tmp_path / "w.npz"), arrays)


# --------------------------------------------------------------------------
# Paddle's own files: read as paddle.load reads them, but never run
# --------------------------------------------------------------------------


def assert_same_structure(actual, wanted, where="obj"):
    """Equal nested data, arrays compared exactly (dtype included)."""
    if isinstance(wanted, np.ndarray):
        assert isinstance(actual, np.ndarray), where
        np.testing.assert_array_equal(actual, wanted, strict=True, err_msg=where)
    elif isinstance(wanted, dict):
        assert isinstance(actual, dict) and list(actual) == list(wanted), where
        for key in wanted:
            assert_same_structure(actual[key], wanted[key], f"{where}[{key!r}]")
    elif isinstance(wanted, (list, tuple)):
        assert type(actual) is type(wanted) and len(actual) == len(wanted), where
        for i, (a, w) in enumerate(zip(actual, wanted)):
            assert_same_structure(a, w, f"{where}[{i}]")
    else:
        assert type(actual) is type(wanted) and actual == wanted, where


def paddle_objects(paddle):
    """A layer's state dict, and an object holding every kind of value paddle.save pickles."""
    layer = paddle.nn.Linear(3, 2)
    optimizer = paddle.optimizer.AdamW(
        parameters=layer.parameters(), learning_rate=paddle.optimizer.lr.CosineAnnealingDecay(0.1, 10))
    layer(paddle.ones([1, 3])).sum().backward()
    optimizer.step()
    dense = paddle.base.core.DenseTensor()
    dense.set(np.arange(4, dtype=np.float16), paddle.CPUPlace())
    mixed = {
        "optimizer": optimizer.state_dict(), "dense": dense, "int_tensor": paddle.to_tensor([1, 2]),
        "nested": [paddle.ones([2]), {"scalar": np.float32(3.5), "pair": (1, "a")}],
        "text": "x", "none": None, "float": 1.5, "flag": True,
    }
    return {"state_dict": layer.state_dict(), "mixed": mixed}


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_paddle_save_files_read_as_paddle_load_returns_them(tmp_path, protocol):
    paddle = pytest.importorskip("paddle")
    for name, obj in paddle_objects(paddle).items():
        path = tmp_path / f"{name}.pdparams"
        paddle.save(obj, str(path), protocol=protocol)
        assert_same_structure(read_checkpoint(path), paddle.load(str(path), return_numpy=True))


def test_paddle_state_dict_finds_its_weights(tmp_path):
    paddle = pytest.importorskip("paddle")
    weights = {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    paddle.save({k: paddle.to_tensor(v) for k, v in weights.items()}, str(tmp_path / "m.pdparams"))
    assert_same_arrays(find_state_dict(read_checkpoint(tmp_path / "m.pdparams")), weights)


def test_paddle_parameters_split_in_slices_are_joined(tmp_path):
    # What paddle.save writes for a parameter above 1 GiB with protocol 2 or 3, in small.
    paddle = pytest.importorskip("paddle")
    weight = np.arange(12, dtype=np.float32).reshape(3, 4)
    saved = {"w@@.0": weight.ravel()[:5], "w@@.1": weight.ravel()[5:], "b": np.ones(2, np.float32),
             "UnpackBigParamInfor@@": {"w": {"OriginShape": (3, 4), "slices": ["w@@.0", "w@@.1"]}}}
    path = tmp_path / "big.pdparams"
    path.write_bytes(pickle.dumps(saved, protocol=2))
    assert_same_structure(read_checkpoint(path), paddle.load(str(path), return_numpy=True))


class RunsCommand:
    """Unpickles as os.system(command): what a hostile weights file does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


class EvaluatesCode:
    """Unpickles as eval(code): Paddle's own DenseTensor spelling, abused."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code, {}))


def hostile_paddle_file(path, marker, payload=RunsCommand):
    """A .pdparams that looks like weights and creates ``marker`` when paddle.load reads it."""
    code = f"touch {marker}" if payload is RunsCommand else f"open({str(marker)!r}, 'w').close()"
    state = {"weight": np.zeros((2, 3), np.float32), "bias": payload(code)}
    path.write_bytes(pickle.dumps(state, protocol=4))
    return path


@pytest.mark.parametrize("payload", [RunsCommand, EvaluatesCode])
def test_hostile_paddle_file_is_refused_and_runs_nothing(tmp_path, payload):
    paddle = pytest.importorskip("paddle")
    marker = tmp_path / "pwned"
    path = hostile_paddle_file(tmp_path / "evil.pdparams", marker, payload)
    paddle.load(str(path))  # the threat is real: paddle.load runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafeCheckpointError) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)
    assert ("'posix.system'" if payload is RunsCommand else "builtins.eval on \"open(") in str(info.value)
    assert not marker.exists()


def test_a_file_that_is_not_a_paddle_pickle_is_named(tmp_path):
    path = tmp_path / "text.pdparams"
    path.write_text("hello")
    with pytest.raises(CheckpointFormatError, match="not a paddle.save file"):
        read_checkpoint(path)


# --------------------------------------------------------------------------
# find_state_dict
# --------------------------------------------------------------------------

W = np.zeros(2, np.float32)


def test_find_state_dict_choices():
    flat = {"a": W, "b": W}
    assert find_state_dict(flat) == flat
    # 'model' wins over the later container names; key= overrides the order.
    ckpt = {"net": {"n": W}, "model": {"m": W}, "ema": {"e": W}}
    assert list(find_state_dict(ckpt)) == ["m"]
    assert list(find_state_dict(ckpt, key="ema")) == ["e"]
    # 'module.' is only stripped when every key has it.
    assert list(find_state_dict({"module.a": W, "b": W})) == ["module.a", "b"]


def test_find_state_dict_errors():
    with pytest.raises(StateDictNotFoundError, match=r"no key 'ema'.*\['model', 'epoch'\]"):
        find_state_dict({"model": {"a": W}, "epoch": 1}, key="ema")
    with pytest.raises(ValueError, match=r"its keys are \['weights', 'epoch'\]"):
        find_state_dict({"weights": {"a": W}, "epoch": 1})
    with pytest.raises(ValueError, match=r"checkpoint\['model'\]\['head'\] is a dict"):
        find_state_dict({"model": {"a": W, "head": {"b": W}}})
    with pytest.raises(ValueError, match="got list"):
        find_state_dict([W])
