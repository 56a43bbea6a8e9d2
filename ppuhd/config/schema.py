"""What a config may contain, and the defaults of its plain (untyped) sections.

A config has component sections (a ``type:`` and the component's arguments,
checked against its signature) and plain sections (``train``, ``runtime``,
``dataloader``, ``export``, ``tiling``), described here as dataclasses so every
key, its type, its allowed range, its default and its meaning live in one
place; a value of the wrong type or out of range is a one-line ConfigError.
"""

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import List, Optional

from .. import builder
from ..registry import (
    DATASETS,
    LOSSES,
    LR_SCHEDULERS,
    METRICS,
    MODELS,
    OPTIMIZERS,
    TRANSFORMS,
    ConfigError,
    suggest,
)


def _number(default=None, *, minimum=None, above=None, below=None):
    """A number field with limits: >= ``minimum``, > ``above``, < ``below`` (those given)."""
    limits = {"minimum": minimum, "above": above, "below": below}
    return field(default=default, metadata={k: v for k, v in limits.items() if v is not None})


def _size(default=None):
    """An [H, W] pair of positive integers."""
    if default is None:
        return field(default=None, metadata={"minimum": 1, "length": 2})
    return field(default_factory=lambda: list(default), metadata={"minimum": 1, "length": 2})


def _choice(*choices):
    """One of ``choices``; the first is the default."""
    return field(default=choices[0], metadata={"choices": choices})


@dataclass
class AmpOptions:
    """Automatic mixed precision; used on GPU only (CPU runs in fp32)."""

    enabled: bool = False
    dtype: str = _choice("float16", "bfloat16")
    level: str = _choice("O1", "O2")  # O1: per-op casting; O2: fp16/bf16 weights with fp32 master copies
    init_loss_scaling: float = _number(65536.0, above=0)


@dataclass
class EmaOptions:
    """Exponential moving average of the weights, updated after each optimizer step."""

    decay: float = _number(0.9999, minimum=0.0, below=1.0)


@dataclass
class TrainOptions:
    epochs: Optional[int] = _number(minimum=1)  # set exactly one of epochs / iters
    iters: Optional[int] = _number(minimum=1)
    accumulate_steps: int = _number(1, minimum=1)  # micro-batches per optimizer step
    amp: AmpOptions = field(default_factory=AmpOptions)
    ema: Optional[EmaOptions] = None  # null: no EMA
    log_interval: int = _number(10, minimum=1)  # optimizer steps between console lines
    eval_interval: int = _number(1, minimum=1)  # epochs (epoch mode) or iterations (iteration mode)
    save_interval: int = _number(1, minimum=1)  # same unit as eval_interval
    keep_last: int = _number(3, minimum=0)  # periodic checkpoints kept (0: all); 'best' is kept apart
    best_metric: Optional[str] = None  # metric deciding 'best'; default: the first one reported
    best_mode: str = _choice("max", "min")
    preview_images: int = _number(4, minimum=0)  # enhancement: validation samples shown as input | output | target
    seed: int = _number(0, minimum=0)
    pretrained: Optional[str] = None  # weights to start from (any format load_weights reads)
    pretrained_exclude: List[str] = field(default_factory=list)  # regexes of keys to leave at init, e.g. '^head\\.'
    to_static: bool = False  # run each step's forward and loss as a static program (paddle.jit.to_static)


@dataclass
class RuntimeOptions:
    device: str = "auto"  # auto (GPU if visible, else CPU), cpu, gpu, gpu:1
    num_threads: Optional[int] = _number(minimum=1)  # CPU threads; default: all cores
    # CPU: keep freed memory for reuse (faster; false lowers the peak: an LLFormer tile 2.09 not 2.84 GiB, 1.26x slower)
    keep_freed_memory: bool = True
    output_dir: str = "output/run"
    visualdl: bool = True


@dataclass
class DataLoaderOptions:
    batch_size: int = _number(32, minimum=1)  # per process; total batch = batch_size x processes x accumulate_steps
    val_batch_size: Optional[int] = _number(minimum=1)  # default: batch_size
    num_workers: int = _number(2, minimum=0)  # processes reading batches; 0: read in the training process
    drop_last: bool = True  # training only
    # copies of each image per epoch, each in another process (DeiT: 3)
    repeated_augmentation: int = _number(1, minimum=1)


EXPORT_FORMATS = ("paddle", "onnx")


@dataclass
class ExportOptions:
    input_size: Optional[List[int]] = _size()  # [H, W]; default: the model's training size (enhancers: the tile)
    dynamic_size: bool = False  # export with free H and W where the model allows it (Paddle format only)
    format: str = _choice(*EXPORT_FORMATS)  # onnx: also model.onnx, for ONNX Runtime (fixed H and W)


# How overlapping tile outputs merge; the first is the default. feather: each tile's weight
# rises from near 0 at its inner edges (where the model saw padding instead of the image)
# across the overlap, so no seam shows; average: uniform, the official LLFormer test's merge
# (the official test configs set it, to reproduce the papers' numbers).
TILE_BLENDS = ("feather", "average")


@dataclass
class TilingOptions:
    """Tiled inference for image-to-image models (evaluation, validation, export/infer).

    Leave the section out (or null) to run full frames.
    """

    tile_size: List[int] = _size([720, 1280])  # [H, W]
    stride: Optional[List[int]] = _size()  # [H, W]; default: half a tile
    tile_batch: int = _number(1, minimum=1)  # tiles per forward
    blend: str = _choice(*TILE_BLENDS)  # feather (seamless) or average (the official LLFormer merge)
    multiple: Optional[int] = _number(minimum=1)  # pad the frame to this first; default: the model's own


PLAIN_SECTIONS = {
    "train": TrainOptions,
    "runtime": RuntimeOptions,
    "dataloader": DataLoaderOptions,
    "export": ExportOptions,
    "tiling": TilingOptions,
}

# section -> (registry, run-time arguments the engine supplies)
COMPONENT_SECTIONS = {
    "model": (MODELS, ()),
    "loss": (LOSSES, ()),
    "train_dataset": (DATASETS, ()),
    "val_dataset": (DATASETS, ()),
    "batch_transform": (TRANSFORMS, ()),  # applied to each training batch, e.g. Mixup/CutMix
    "optimizer": (OPTIMIZERS, ("model", "learning_rate")),
    "lr_scheduler": (LR_SCHEDULERS, ("total_steps", "steps_per_epoch", "total_batch_size")),
}
LIST_SECTIONS = {"metrics": METRICS}
REQUIRED_SECTIONS = ("model",)
ALL_SECTIONS = [*PLAIN_SECTIONS, *COMPONENT_SECTIONS, *LIST_SECTIONS]


def _dataclass_type(annotation):
    """The dataclass inside ``annotation`` (``X`` or ``Optional[X]``), or None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _describe(value):
    return f"{value!r} ({'null' if value is None else type(value).__name__})"


def _checked_value(value, annotation, where):
    """``value`` if it is of type ``annotation`` (ints accepted as floats), else ConfigError."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _checked_value(value, next(a for a in args if a is not type(None)), where)
    if typing.get_origin(annotation) is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {_describe(value)}")
        return [_checked_value(item, args[0], f"{where}.{i}") for i, item in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {_TYPE_NAMES[annotation]}, got {_describe(value)}")
    return value


def _check_bounds(value, metadata, where):
    if value is None:
        return
    if "length" in metadata and len(value) != metadata["length"]:
        raise ConfigError(f"{where} must have {metadata['length']} values ([H, W]), got {value!r}")
    for number in value if isinstance(value, list) else [value]:
        if "minimum" in metadata and number < metadata["minimum"]:
            raise ConfigError(f"{where} must be at least {metadata['minimum']}, got {value!r}")
        if "above" in metadata and number <= metadata["above"]:
            raise ConfigError(f"{where} must be above {metadata['above']}, got {value!r}")
        if "below" in metadata and number >= metadata["below"]:
            raise ConfigError(f"{where} must be below {metadata['below']}, got {value!r}")
    if "choices" in metadata and value not in metadata["choices"]:
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, metadata['choices']))}, got {value!r}."
                          f"{suggest(value, metadata['choices'])}")


def options_from_dict(cls, data, where):
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and values of the wrong type or range."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown key {key!r}.{suggest(key, fields)} Accepted: {', '.join(fields)}."
            )
        spot = f"{where}.{key}"
        nested = _dataclass_type(fields[key].type)
        if nested and value is not None:
            values[key] = options_from_dict(nested, value, spot)
        else:
            values[key] = _checked_value(value, fields[key].type, spot)
            _check_bounds(values[key], fields[key].metadata, spot)
    return cls(**values)


def _option_paths(cls, prefix):
    """Dotted paths of every option of dataclass ``cls`` and of the dataclasses it nests."""
    for f in dataclasses.fields(cls):
        yield f"{prefix}.{f.name}"
        nested = _dataclass_type(f.type)
        if nested:
            yield from _option_paths(nested, f"{prefix}.{f.name}")


def _value_paths(value, prefix):
    """Dotted paths of the keys in a config section's nested dicts and lists."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield f"{prefix}.{key}"
        yield from _value_paths(item, f"{prefix}.{key}")


def _unknown_top_level_key(key, cfg):
    """The error for top-level ``key``, pointing at nested options of that name or a name like it
    (``epochs`` and ``epoch`` -> ``train.epochs``) before sections that merely look like it."""
    paths = {path for name, cls in PLAIN_SECTIONS.items() for path in _option_paths(cls, name)}
    paths.update(path for name in ALL_SECTIONS if name in cfg for path in _value_paths(cfg[name], name))
    nested = sorted(path for path in paths if path.rsplit(".", 1)[-1] == key)
    if not nested:  # a misspelt nested option: close to the option's own name (a high bar, names are short)
        leaves = {path.rsplit(".", 1)[-1] for path in paths}
        close = difflib.get_close_matches(key, leaves, n=3, cutoff=0.8)
        nested = sorted((path for path in paths if path.rsplit(".", 1)[-1] in close),
                        key=lambda path: (close.index(path.rsplit(".", 1)[-1]), path))  # closest first
    hint = (" Did you mean " + " or ".join(repr(p) for p in nested[:3]) + "?") if nested else suggest(key, ALL_SECTIONS)
    return ConfigError(f"unknown top-level config key {key!r}.{hint} Accepted: {', '.join(ALL_SECTIONS)}.")


def validate_config(cfg):
    """Check every section of a merged config; raise ConfigError on the first problem."""
    for key in cfg:
        if key not in ALL_SECTIONS:
            raise _unknown_top_level_key(key, cfg)
    for key in REQUIRED_SECTIONS:
        if key not in cfg:
            raise ConfigError(f"the config has no {key!r} section")
    for key, cls in PLAIN_SECTIONS.items():
        options_from_dict(cls, cfg.get(key), key)
    for key, (registry, provided) in COMPONENT_SECTIONS.items():
        if cfg.get(key) is not None:
            builder.validate(cfg[key], registry, key, provided)
    for key, registry in LIST_SECTIONS.items():
        items = cfg.get(key) or []
        if not isinstance(items, list):
            raise ConfigError(f"{key} must be a list of components, got {items!r}")
        for i, item in enumerate(items):
            builder.validate(item, registry, f"{key}.{i}")
    train = options_from_dict(TrainOptions, cfg.get("train"), "train")
    if "train_dataset" in cfg and (train.epochs is None) == (train.iters is None):
        raise ConfigError("train: set exactly one of 'epochs' or 'iters'")
