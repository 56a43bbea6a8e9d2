"""A validated run config: the merged dict, its plain sections typed, and a builder per component."""

from .. import builder
from ..registry import DATASETS, LOSSES, LR_SCHEDULERS, METRICS, MODELS, OPTIMIZERS, TRANSFORMS, ConfigError
from .schema import DataLoaderOptions, ExportOptions, RuntimeOptions, TilingOptions, TrainOptions, options_from_dict

SPLITS = ("train", "val")


class RunConfig(dict):
    """What ``load_config`` returns.

    It is the merged config dict itself (``cfg["model"]``, saved as it is),
    already validated. The plain sections are typed (``cfg.train.epochs``,
    ``cfg.dataloader.batch_size``, ...; read from the dict each time, so a
    changed value is seen), and each component section has its builder.
    """

    @property
    def train(self) -> TrainOptions:
        return options_from_dict(TrainOptions, self.get("train"), "train")

    @property
    def runtime(self) -> RuntimeOptions:
        return options_from_dict(RuntimeOptions, self.get("runtime"), "runtime")

    @property
    def dataloader(self) -> DataLoaderOptions:
        return options_from_dict(DataLoaderOptions, self.get("dataloader"), "dataloader")

    @property
    def export(self) -> ExportOptions:
        return options_from_dict(ExportOptions, self.get("export"), "export")

    @property
    def tiling(self):
        """:class:`TilingOptions`, or None when the config runs full frames."""
        return None if self.get("tiling") is None else options_from_dict(TilingOptions, self["tiling"], "tiling")

    def require(self, *sections, purpose):
        """ConfigError unless every one of ``sections`` is set."""
        for section in sections:
            if not self.get(section):
                raise ConfigError(f"{purpose} needs a {section!r} section in the config")

    def build_model(self):
        return builder.build(self["model"], MODELS, "model")

    def build_dataset(self, split):
        """The ``train`` or ``val`` dataset."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        key = f"{split}_dataset"
        self.require(key, purpose=f"the {split} split")
        return builder.build(self[key], DATASETS, key)

    def build_loss(self):
        self.require("loss", purpose="training")
        return builder.build(self["loss"], LOSSES, "loss")

    def build_metrics(self):
        return [builder.build(m, METRICS, f"metrics.{i}") for i, m in enumerate(self.get("metrics") or [])]

    def build_batch_transform(self):
        """The transform applied to each training batch (Mixup/CutMix), or None."""
        return builder.build(self["batch_transform"], TRANSFORMS, "batch_transform") if self.get("batch_transform") else None

    def build_scheduler(self, total_steps, steps_per_epoch, total_batch_size):
        self.require("lr_scheduler", purpose="training")
        return builder.build(self["lr_scheduler"], LR_SCHEDULERS, "lr_scheduler", total_steps=total_steps,
                             steps_per_epoch=steps_per_epoch, total_batch_size=total_batch_size)

    def build_optimizer(self, model, learning_rate):
        self.require("optimizer", purpose="training")
        return builder.build(self["optimizer"], OPTIMIZERS, "optimizer", model=model, learning_rate=learning_rate)
