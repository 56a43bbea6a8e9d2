"""Checkpoints written atomically, pruned to the last K, plus 'best'.

Layout under ``<output_dir>/checkpoints/``::

    epoch_0003/            (or iter_000500/ in iteration mode)
        model.pdparams     raw weights: ppuhd eval --weights <folder or file>
        ema.pdparams       EMA weights, when EMA is on
        train_state.pdstates  optimizer, schedule, loss scale, counters, best metric
        manifest.json      size and SHA-256 of each file above, to detect damage
    best/                  same files, for the best validation result

A checkpoint folder is written under a temporary name, flushed to disk and
renamed into place, so an interrupted save never leaves a partial checkpoint
where resume would find it; the next run removes what such a save left behind.
"""

import hashlib
import json
import logging
import os
import re
import shutil

import paddle

from ..errors import UserError
from ..weights import EMA_FILE, MODEL_FILE, read_checkpoint

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.pdstates"
MANIFEST_FILE = "manifest.json"
BEST = "best"
_PERIODIC = re.compile(r"^(epoch|iter)_(\d+)$")
_LEFTOVER = re.compile(r"^\.(tmp|old)-(.+)-(\d+)$")  # what write_checkpoint leaves if killed


class CheckpointError(UserError, ValueError):
    """A checkpoint folder that is incomplete or damaged."""


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint(folder):
    """Raise CheckpointError unless every file of ``folder`` has the size and hash it was saved with.

    Returns False for a folder without a manifest (written before checkpoints
    had one), which cannot be verified, and True otherwise.
    """
    manifest_path = os.path.join(folder, MANIFEST_FILE)
    if not os.path.isdir(folder):
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{manifest_path} is damaged ({err})") from None
    try:
        expected = {name: (entry["size"], entry["sha256"]) for name, entry in manifest.items()}
    except (AttributeError, KeyError, TypeError):
        raise CheckpointError(f"{manifest_path} is damaged (not a list of file sizes and hashes)") from None
    for name, (size, sha256) in expected.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"{path} is missing")
        if os.path.getsize(path) != size or _sha256(path) != sha256:
            raise CheckpointError(f"{path} is damaged: its contents differ from when it was saved")
    return True


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_file(obj, path):
    paddle.save(obj, path)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_checkpoint(folder, model_state, ema_state=None, train_state=None):
    """Write a checkpoint folder atomically (temporary folder, manifest, fsync, rename)."""
    parent, name = os.path.split(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-{name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    manifest = {}
    for filename, state in ((MODEL_FILE, model_state), (EMA_FILE, ema_state), (STATE_FILE, train_state)):
        if state is not None:
            path = os.path.join(tmp, filename)
            _save_file(state, path)
            manifest[filename] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    with open(os.path.join(tmp, MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    old = os.path.join(parent, f".old-{name}-{os.getpid()}")
    if os.path.isdir(folder):
        os.rename(folder, old)  # replaced below; 'best' is rewritten in place
    os.rename(tmp, folder)
    _fsync_dir(parent)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def read_train_state(folder):
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{folder} is not a resumable checkpoint: {STATE_FILE} is missing")
    return read_checkpoint(path)


def _rename_prefixes(key, renames):
    """``key`` with its longest prefix found in ``renames`` replaced (followed by '_' or the end)."""
    for old in sorted(renames, key=len, reverse=True):
        if key == old or key.startswith(old + "_"):
            return renames[old] + key[len(old):]
    return key


def _rename_optimizer_state(state, renames):
    renamed = {}
    for key, value in state.items():
        if key == "master_weights":
            renamed[key] = {renames.get(k, k): v for k, v in value.items()}
        else:
            renamed[_rename_prefixes(key, renames)] = value
    return renamed


def portable_optimizer_state(optimizer, model):
    """The optimizer's state keyed by parameter paths (``blocks.0.attn.qkv.weight_moment1_0``).

    Paddle keys optimizer state by generated tensor names (``linear_3.w_0``),
    which change with the order layers are created in; keyed by path, a
    checkpoint resumes into any freshly built copy of the model.
    """
    return _rename_optimizer_state(optimizer.state_dict(), {p.name: n for n, p in model.named_parameters()})


def load_portable_optimizer_state(optimizer, model, state):
    optimizer.set_state_dict(_rename_optimizer_state(state, {n: p.name for n, p in model.named_parameters()}))


class CheckpointManager:
    """Names, writes and prunes the checkpoints of one run."""

    def __init__(self, output_dir, keep_last=3, unit="epoch"):
        self.root = os.path.join(output_dir, "checkpoints")
        self.keep_last = keep_last
        self.unit = unit

    def periodic_name(self, count):
        return f"{self.unit}_{count:04d}" if self.unit == "epoch" else f"{self.unit}_{count:06d}"

    def save(self, count, model_state, ema_state, train_state):
        folder = write_checkpoint(
            os.path.join(self.root, self.periodic_name(count)), model_state, ema_state, train_state
        )
        self._prune()
        return folder

    def save_best(self, model_state, ema_state, train_state):
        return write_checkpoint(os.path.join(self.root, BEST), model_state, ema_state, train_state)

    def clean_leftovers(self):
        """Remove what saves interrupted by a kill left behind; return what was removed.

        A save killed between its two renames leaves the checkpoint only as
        ``.old-<name>-<pid>``: that is the previous, complete version, and is
        put back. Leftovers of live processes are not touched.
        """
        removed = []
        if not os.path.isdir(self.root):
            return removed
        for entry in sorted(os.listdir(self.root)):
            match = _LEFTOVER.match(entry)
            if not match or _process_alive(int(match.group(3))):
                continue
            kind, name = match.group(1), match.group(2)
            path, final = os.path.join(self.root, entry), os.path.join(self.root, name)
            if kind == "old" and not os.path.exists(final):
                os.rename(path, final)
                logger.warning("restored checkpoint %s from an interrupted save", final)
            else:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        if removed:
            logger.info("removed %d folder(s) left by interrupted saves: %s", len(removed), ", ".join(removed))
        return removed

    def latest_intact(self):
        """The newest periodic checkpoint that verifies, or None; damaged newer ones are named in a warning."""
        for folder in reversed(self.periodic()):
            try:
                if not verify_checkpoint(folder):
                    logger.info("%s has no %s (an older checkpoint): not verified", folder, MANIFEST_FILE)
                return folder
            except CheckpointError as err:
                logger.warning("not resuming from %s: %s; trying the previous checkpoint", folder, err)
        return None

    def periodic(self):
        """Complete periodic checkpoints, oldest first."""
        if not os.path.isdir(self.root):
            return []
        found = [(int(m.group(2)), name) for name in os.listdir(self.root) if (m := _PERIODIC.match(name))]
        return [os.path.join(self.root, name) for _, name in sorted(found)]

    def latest(self):
        found = self.periodic()
        return found[-1] if found else None

    def _prune(self):
        if self.keep_last and self.keep_last > 0:
            for folder in self.periodic()[: -self.keep_last]:
                shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        pass
    return True
