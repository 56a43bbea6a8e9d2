"""What a config may contain, and the defaults of its plain (untyped) sections.

A config has component sections (a ``type:`` and the component's arguments,
checked against its signature) and plain sections (``train``, ``runtime``,
``dataloader``, ``export``), described here as dataclasses so every key, its
default and its meaning live in one place.
"""

import dataclasses
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


@dataclass
class AmpOptions:
    """Automatic mixed precision; used on GPU only (CPU runs in fp32)."""

    enabled: bool = False
    dtype: str = "float16"  # float16 or bfloat16
    level: str = "O1"  # O1: per-op casting; O2: fp16/bf16 weights with fp32 master copies
    init_loss_scaling: float = 65536.0

    def __post_init__(self):
        if self.dtype not in ("float16", "bfloat16"):
            raise ValueError(f"dtype must be float16 or bfloat16, got {self.dtype!r}")
        if self.level not in ("O1", "O2"):
            raise ValueError(f"level must be O1 or O2, got {self.level!r}")


@dataclass
class EmaOptions:
    """Exponential moving average of the weights, updated after each optimizer step."""

    decay: float = 0.9999

    def __post_init__(self):
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}")


@dataclass
class TrainOptions:
    epochs: Optional[int] = None  # set exactly one of epochs / iters
    iters: Optional[int] = None
    accumulate_steps: int = 1  # micro-batches per optimizer step
    amp: AmpOptions = field(default_factory=AmpOptions)
    ema: Optional[EmaOptions] = None  # null: no EMA
    log_interval: int = 10  # optimizer steps between console lines
    eval_interval: int = 1  # epochs (epoch mode) or iterations (iteration mode)
    save_interval: int = 1  # same unit as eval_interval
    keep_last: int = 3  # periodic checkpoints kept; 'best' is kept apart
    best_metric: Optional[str] = None  # metric deciding 'best'; default: the first one reported
    best_mode: str = "max"  # max or min
    preview_images: int = 4  # enhancement: validation samples shown as input | output | target
    seed: int = 0
    pretrained: Optional[str] = None  # weights to start from (any format load_weights reads)
    pretrained_exclude: List[str] = field(default_factory=list)  # regexes of keys to leave at init, e.g. '^head\\.'

    def __post_init__(self):
        if self.best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {self.best_mode!r}")
        for name in ("accumulate_steps", "log_interval", "eval_interval", "save_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class RuntimeOptions:
    device: str = "auto"  # auto (GPU if visible, else CPU), cpu, gpu, gpu:1
    num_threads: Optional[int] = None  # CPU threads; default: all cores
    output_dir: str = "output/run"
    visualdl: bool = True


@dataclass
class DataLoaderOptions:
    batch_size: int = 32  # per process; total batch = batch_size x processes x accumulate_steps
    val_batch_size: Optional[int] = None  # default: batch_size
    num_workers: int = 2
    drop_last: bool = True  # training only
    repeated_augmentation: int = 1  # copies of each image per epoch, each in another process (DeiT: 3)


@dataclass
class ExportOptions:
    input_size: Optional[List[int]] = None  # [H, W]; default: the model's training size
    dynamic_size: bool = False  # export with free H and W where the model allows it


@dataclass
class TilingOptions:
    """Tiled inference for image-to-image models (evaluation, validation, export/infer).

    Leave the section out (or null) to run full frames.
    """

    tile_size: List[int] = field(default_factory=lambda: [720, 1280])  # [H, W]
    stride: Optional[List[int]] = None  # [H, W]; default: half a tile
    tile_batch: int = 1  # tiles per forward
    blend: str = "average"  # average (official LLFormer) or feather
    multiple: Optional[int] = None  # pad the frame to this first; default: the model's own

    def __post_init__(self):
        if self.blend not in ("average", "feather"):
            raise ValueError(f"blend must be 'average' or 'feather', got {self.blend!r}")


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


def options_from_dict(cls, data, where):
    """Build dataclass ``cls`` from ``data``, refusing unknown keys."""
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
        nested = _dataclass_type(fields[key].type)
        values[key] = options_from_dict(nested, value, f"{where}.{key}") if nested and value is not None else value
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def validate_config(cfg):
    """Check every section of a merged config; raise ConfigError on the first problem."""
    for key in cfg:
        if key not in ALL_SECTIONS:
            raise ConfigError(
                f"unknown top-level config key {key!r}.{suggest(key, ALL_SECTIONS)}"
                f" Accepted: {', '.join(ALL_SECTIONS)}."
            )
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
