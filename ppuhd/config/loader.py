"""Read YAML configs with ``_base_`` inheritance.

* ``_base_: other.yml`` or ``_base_: [a.yml, b.yml]`` (paths relative to the
  file). Bases are merged in order, then the file itself on top.
* Dicts merge key by key; lists and scalars are replaced.
* ``_replace_: true`` inside a dict replaces the inherited dict instead of
  merging into it (e.g. to swap a model for one with other arguments).
"""

import copy
import os
import re

import yaml

from ..registry import ConfigError

BASE_KEY = "_base_"
REPLACE_KEY = "_replace_"


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-4`` as a float.

    YAML 1.1 (and so plain ``yaml.safe_load``) needs a dot in the mantissa,
    reading ``1e-4`` as the string "1e-4"; learning rates are written that way.
    """


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path):
    """One YAML file as a dict (no inheritance)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=ConfigLoader)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level of a config must be a mapping, got {type(data).__name__}")
    return data


def merge(base, child):
    """Deep-merge ``child`` into a copy of ``base``; see the module docstring."""
    merged = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict):
            value = dict(value)
            replace = value.pop(REPLACE_KEY, False)
            if not replace and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
                continue
            merged[key] = merge({}, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_yaml_with_bases(path, _chain=()):
    """The merged dict of ``path`` and all its ``_base_`` files."""
    path = os.path.abspath(path)
    if path in _chain:
        cycle = " -> ".join(_chain + (path,))
        raise ConfigError(f"_base_ files include each other in a cycle: {cycle}")
    data = read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    merged = {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), base)
        if not os.path.isfile(base_path):
            raise ConfigError(f"{path}: _base_ file {base!r} not found (looked for {base_path})")
        merged = merge(merged, load_yaml_with_bases(base_path, _chain + (path,)))
    return merge(merged, data)
