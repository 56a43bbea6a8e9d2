"""Everything a training run needs, built from the config before the first step.

Building it all up front means a wrong argument or a missing dataset fails
within seconds, not hours into a run.
"""

import logging
import math
import os

import paddle
from paddle.distributed.parallel import sync_params_buffers

from ..config import as_run_config, save_config
from ..data.loader import DataLoader
from ..data.sampler import EvalBatchSampler, TrainBatchSampler
from ..registry import ConfigError, suggest
from ..runtime import run_static_programs_in_order
from ..weights import EMA_FILE, MODEL_FILE, check_state_dict, find_state_dict, load_weights, read_checkpoint
from .amp import MixedPrecision
from .ema import ModelEMA
from .logger import RunLog
from .outputs import claim_run_dir
from .runtime import seed_everything, setup_runtime
from .tasks import build_task

logger = logging.getLogger(__name__)


class TrainingSetup:
    """Holds the run's components; see the attributes set in ``__init__``.

    ``continuing``: the run resumes (an earlier run in the output folder is
    expected); ``overwrite``: an earlier run there is deleted first.
    """

    def __init__(self, cfg, continuing=False, overwrite=False):
        self.cfg = cfg = as_run_config(cfg)
        self.train_options = options = cfg.train
        self.runtime_options = cfg.runtime
        self.loader_options = cfg.dataloader
        cfg.require("train_dataset", "loss", "optimizer", "lr_scheduler", purpose="training")

        self.runtime = setup_runtime(self.runtime_options.device)
        self.output_dir = self.runtime_options.output_dir
        claim_run_dir(self.output_dir, continuing, overwrite, self.runtime.is_main)
        self.run_log = RunLog(self.output_dir) if self.runtime.is_main else None
        try:
            self._build_components(cfg, options)
        except BaseException:
            self.close()
            raise

    def close(self):
        """Stop copying the log to the run's train.log."""
        if self.run_log is not None:
            self.run_log.close()

    def _build_components(self, cfg, options):
        if self.runtime.is_main:
            save_config(cfg, os.path.join(self.output_dir, "config.yml"))
        seed_everything(options.seed)
        if options.to_static:
            run_static_programs_in_order()
            logger.info("train.to_static: each step's forward and loss run as a static program, "
                        "its operators in program order (FLAGS_new_executor_serial_run) so random ones repeat exactly")

        self.model = cfg.build_model()
        if options.pretrained:
            load_weights(self.model, options.pretrained, exclude=options.pretrained_exclude)
            logger.info("initialised from %s", options.pretrained)
        self._build_data()
        self.criterion, self.batch_transform = cfg.build_loss(), cfg.build_batch_transform()
        self.metrics = cfg.build_metrics()
        self._check_best_metric()

        self.unit = "epoch" if options.epochs is not None else "iter"
        self.steps_per_epoch = len(self.train_sampler) // options.accumulate_steps
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"an epoch has {len(self.train_sampler)} batches, fewer than train.accumulate_steps "
                f"({options.accumulate_steps})"
            )
        self.total_steps = options.epochs * self.steps_per_epoch if self.unit == "epoch" else options.iters
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.total_batch_size = self.loader_options.batch_size * self.runtime.world_size * options.accumulate_steps
        self.scheduler = cfg.build_scheduler(self.total_steps, self.steps_per_epoch, self.total_batch_size)
        self._check_schedule_metric()
        self.optimizer = cfg.build_optimizer(self.model, self.scheduler)
        self.amp = MixedPrecision(options.amp, self.runtime.on_gpu)
        self.model, self.optimizer = self.amp.decorate(self.model, self.optimizer)
        self.ema = None
        if options.ema is not None:
            self.ema = ModelEMA(cfg.build_model(), self.model, options.ema.decay)
        # The network that runs the steps: wrapped for gradient averaging across processes (a static
        # program cannot hold DataParallel: the task averages instead, from the same initial weights).
        self.network = self.model
        if self.runtime.world_size > 1 and options.to_static:
            sync_params_buffers(self.model)
        elif self.runtime.world_size > 1:
            self.network = paddle.DataParallel(self.model)
        self.task = build_task(self.model, self.criterion, self.batch_transform, self.train_dataset.describe,
                               cfg.get("tiling"), to_static=options.to_static)

    def _reported_metrics(self):
        names = [name for metric in self.metrics for name in metric.names]
        return names + ([f"ema_{name}" for name in names] if self.train_options.ema is not None else [])

    def _check_best_metric(self):
        """``train.best_metric`` must be a reported metric (checked now, not after an epoch)."""
        self._check_reported("train.best_metric", self.train_options.best_metric)

    def _check_schedule_metric(self):
        """A schedule that follows a validation metric needs it reported, and a validation set."""
        wanted = self.scheduler.position_metric
        if wanted is not None and self.val_loader is None:
            raise ConfigError(f"lr_scheduler.position_metric {wanted!r} needs a val_dataset")
        self._check_reported("lr_scheduler.position_metric", wanted)

    def _check_reported(self, key, wanted):
        names = self._reported_metrics()
        if wanted is not None and wanted not in names:
            raise ConfigError(f"{key} {wanted!r} is not reported.{suggest(wanted, names)} "
                              f"Reported: {', '.join(names) or '(no metrics configured)'}.")

    def _build_data(self):
        cfg, options, loader = self.cfg, self.train_options, self.loader_options
        rank, world = self.runtime.rank, self.runtime.world_size
        self.train_dataset = cfg.build_dataset("train")
        try:
            self.train_sampler = TrainBatchSampler(
                len(self.train_dataset), loader.batch_size, rank, world, shuffle=True,
                drop_last=loader.drop_last, seed=options.seed, repeats=loader.repeated_augmentation,
            )
        except ValueError as err:  # fewer samples than one batch
            raise ConfigError(f"dataloader: {err}") from None
        self.train_loader = DataLoader(self.train_dataset, self.train_sampler, loader.num_workers)
        self.val_loader = None
        if cfg.get("val_dataset"):
            self.val_dataset = cfg.build_dataset("val")
            sampler = EvalBatchSampler(
                len(self.val_dataset), loader.val_batch_size or loader.batch_size, rank, world
            )
            self.val_loader = DataLoader(self.val_dataset, sampler, loader.num_workers)
        logger.info(
            "data: %d training samples%s",
            len(self.train_dataset),
            f", {len(self.val_dataset)} validation samples" if self.val_loader else " (no validation set)",
        )

    def load_model_states(self, folder):
        """Restore the raw and EMA weights of a checkpoint folder."""
        for model, filename in ((self.model, MODEL_FILE), (self.ema and self.ema.model, EMA_FILE)):
            if model is None:
                continue
            state = find_state_dict(read_checkpoint(os.path.join(folder, filename)))
            check_state_dict(model, state, source=os.path.join(folder, filename))
            model.set_state_dict(state)
