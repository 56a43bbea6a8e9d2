"""Configs: YAML files with ``_base_`` inheritance, overrides and a schema."""

import copy
import os

import yaml

from .loader import load_yaml_with_bases, merge, read_yaml
from .overrides import apply_overrides, parse_value
from .schema import (
    AmpOptions,
    DataLoaderOptions,
    EmaOptions,
    ExportOptions,
    RuntimeOptions,
    TilingOptions,
    TrainOptions,
    options_from_dict,
    validate_config,
)

from .run import RunConfig
from .shipped import resolve_config, shipped_configs

__all__ = [
    "load_config", "as_run_config", "resolve_config", "shipped_configs", "save_config", "merge", "read_yaml",
    "apply_overrides", "parse_value",
    "validate_config", "options_from_dict", "RunConfig", "AmpOptions", "DataLoaderOptions", "EmaOptions",
    "ExportOptions", "RuntimeOptions", "TilingOptions", "TrainOptions",
]


def load_config(source, overrides=None):
    """A validated :class:`RunConfig` from a YAML path, a shipped config's name or a dict, with overrides applied."""
    if isinstance(source, (str, os.PathLike)):
        cfg = load_yaml_with_bases(resolve_config(source))
    elif isinstance(source, dict):
        cfg = copy.deepcopy(dict(source))
    else:
        raise TypeError(f"a config is a YAML path or a dict, not {type(source).__name__}")
    validate_config(cfg)
    apply_overrides(cfg, overrides)
    validate_config(cfg)
    return RunConfig(cfg)


def as_run_config(cfg):
    """``cfg`` if it is a :class:`RunConfig` already, else validated into one (a path or a dict)."""
    return cfg if isinstance(cfg, RunConfig) else load_config(cfg)


def save_config(cfg, path):
    """Write the merged config; the file alone reproduces the run."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(dict(cfg), f, sort_keys=False, default_flow_style=None)
