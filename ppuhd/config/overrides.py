"""Command-line overrides: ``-o train.epochs=5 -o model.drop_path_rate=0.2``.

Values are parsed as Python literals (``ast.literal_eval``: numbers, strings,
lists, dicts), as YAML flow collections (``[{type: RandomCrop, size: 96}]``, as
a config file writes them), plus ``true/false/null``; anything else stays a
string. Nothing is evaluated. A key that is neither in the config nor accepted
at that place (by the section's schema or the component's signature) is refused.
"""

import ast

import yaml

from ..registry import ConfigError
from .loader import ConfigLoader
from .schema import validate_config

_WORDS = {"true": True, "false": False, "null": None, "none": None}


def parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if text.strip()[:1] in ("[", "{"):
        try:
            return yaml.load(text, Loader=ConfigLoader)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or err
            raise ConfigError(f"{text!r} is neither a Python literal nor a YAML list or mapping ({problem})") from None
    return _WORDS.get(text.strip().lower(), text)


def _step(node, key, where):
    """Index ``node`` by ``key`` (a list index or a dict key); None if absent."""
    if isinstance(node, list):
        if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
            raise ConfigError(f"{where}: {key!r} is not an index of this list of {len(node)} items")
        return int(key)
    if isinstance(node, dict):
        return key
    raise ConfigError(f"{where}: cannot go into {node!r}, it is not a mapping or a list")


def apply_overrides(cfg, overrides):
    """Apply ``key.path=value`` strings to ``cfg`` in place and return it."""
    for text in overrides or ():
        if "=" not in text:
            raise ConfigError(f"override {text!r} must look like key.path=value")
        path, raw = text.split("=", 1)
        keys = path.strip().split(".")
        node, created = cfg, False
        for depth, key in enumerate(keys):
            where = ".".join(keys[: depth + 1])
            index = _step(node, key, where)
            last = depth == len(keys) - 1
            if isinstance(node, dict) and index not in node:
                created = True
                node[index] = None if last else {}
            elif not last and node[index] is None:
                created = True
                node[index] = {}
            if last:
                try:
                    node[index] = parse_value(raw)
                except ConfigError as err:
                    raise ConfigError(f"override {text!r}: {err}") from None
            else:
                node = node[index]
        if created:
            try:
                validate_config(cfg)
            except ConfigError as err:
                raise ConfigError(f"override {text!r}: {err}") from None
    return cfg
