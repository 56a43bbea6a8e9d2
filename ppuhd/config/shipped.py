"""The configs shipped with ppuhd, addressable by name wherever ppuhd is installed.

``deit_small_patch16_224``, ``deit/deit_small_patch16_224``, either with ``.yml``
or after ``configs/``, all name ``configs/deit/deit_small_patch16_224.yml``. A path
that exists always wins over a name. Partial files (``_base_/``, names starting
with ``_``) are only ever read as the ``_base_`` of a complete config, so they have
no name.
"""

import os

from ..registry import ConfigError, suggest

SUFFIX = ".yml"
FOLDER = "configs"
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shipped_configs_dir():
    """``ppuhd/configs`` in an installed copy; the repository's ``configs/`` in a clone (or an editable install)."""
    installed = os.path.join(_PACKAGE_DIR, FOLDER)
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(_PACKAGE_DIR), FOLDER)


def shipped_configs():
    """The names of the complete shipped configs as ``family/name``, sorted."""
    root = shipped_configs_dir()
    names = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith("_")]
        relative = os.path.relpath(folder, root)
        names += [os.path.normpath(os.path.join(relative, f[: -len(SUFFIX)])).replace(os.sep, "/")
                  for f in files if f.endswith(SUFFIX) and not f.startswith("_")]
    return sorted(names)


def resolve_config(source):
    """The YAML file a config argument means: ``source`` itself if it exists, else the shipped config it names."""
    if os.path.exists(source):
        return source
    name = os.fspath(source).replace(os.sep, "/")
    name = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    name = name[len(FOLDER) + 1:] if name.startswith(FOLDER + "/") else name
    names = shipped_configs()
    matches = [n for n in names if name in (n, n.rsplit("/", 1)[-1])]
    if len(matches) > 1:
        raise ConfigError(f"config {source!r} is ambiguous: it names {' and '.join(matches)}; give the folder too")
    if not matches:
        short_names = [n.rsplit("/", 1)[-1] for n in names]
        raise ConfigError(f"config not found: {source} is neither a file nor the name of a shipped config."
                          f"{suggest(name.rsplit('/', 1)[-1], short_names)} "
                          f"Shipped configs are in {shipped_configs_dir()}")
    return os.path.join(shipped_configs_dir(), *matches[0].split("/")) + SUFFIX
