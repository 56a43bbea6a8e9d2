"""The training loop: one optimizer step at a time, evaluation and checkpoints at intervals.

Construction (model, data, optimizer, ...) is in ``setup.py``; this file
holds only what happens while training runs.
"""

import contextlib
import logging
import math
import os
import time

import numpy as np
import paddle

from .checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_portable_optimizer_state,
    portable_optimizer_state,
    read_train_state,
    verify_checkpoint,
)
from .evaluator import evaluate
from ..data.image_io import write_image
from .logger import Progress, VisualDLWriter, format_duration
from .reports import PreviewCollector, write_json
from .runtime import step_seed
from .setup import TrainingSetup
from .tiling import evaluation_model

logger = logging.getLogger(__name__)


class Trainer:
    """Trains the model described by a config; ``run()`` returns a summary (None on other ranks).

    Args:
        cfg: a validated config dict (see ``ppuhd.config.load_config``).
        resume: None, 'auto' (the newest intact checkpoint in the output
            folder, if any) or a checkpoint folder.
        overwrite: start again in an output folder that holds an earlier
            run, deleting that run's files (without it, that is an error).
    """

    def __init__(self, cfg, resume=None, overwrite=False):
        self.setup = s = TrainingSetup(cfg, continuing=bool(resume), overwrite=overwrite)
        self.options = s.train_options
        self.output_dir = s.output_dir
        self.checkpoints = CheckpointManager(self.output_dir, self.options.keep_last, s.unit)
        if s.runtime.is_main:
            self.checkpoints.clean_leftovers()
        self.vdl = VisualDLWriter(os.path.join(self.output_dir, "vdl"), s.runtime_options.visualdl and s.runtime.is_main)
        self.step = 0
        self.best = None  # {'metric', 'value', 'step'} of the best evaluation so far
        self.history = []
        if resume:
            self._resume(resume)

    # ------------------------------------------------------------------ resume
    def _resume(self, resume):
        if resume == "auto":
            folder = self.checkpoints.latest_intact()
            if folder is None and self.checkpoints.periodic():
                raise CheckpointError(f"resume=auto: every checkpoint in {self.checkpoints.root} is damaged "
                                      "(see the warnings above)")
            if folder is None:
                logger.info("resume=auto: no checkpoint in %s yet, starting from scratch", self.checkpoints.root)
                return
        else:
            folder = resume
            verify_checkpoint(folder)
        s = self.setup
        state = read_train_state(folder)
        s.load_model_states(folder)
        load_portable_optimizer_state(s.optimizer, s.model, state["optimizer"])
        s.scheduler.set_state_dict(state["scheduler"])
        s.amp.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.best = state["best"]
        self.history = state["history"]
        logger.info("resumed from %s at step %d/%d", folder, self.step, s.total_steps)

    def _train_state(self):
        s = self.setup
        return {
            "step": self.step,
            "optimizer": portable_optimizer_state(s.optimizer, s.model),
            "scheduler": s.scheduler.state_dict(),
            "scaler": s.amp.scaler.state_dict(),
            "best": self.best,
            "history": self.history,
        }

    # ------------------------------------------------------------------- steps
    def _train_step(self, micro_batches):
        """One optimizer step over ``accumulate_steps`` micro-batches; returns the mean loss."""
        s = self.setup
        seed = step_seed(self.options.seed, s.runtime.rank, self.step)
        paddle.seed(seed)
        s.network.train()
        losses = []
        for i, batch in enumerate(micro_batches):
            if s.batch_transform is not None:
                batch = s.batch_transform(batch, np.random.default_rng([seed, i]))
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or s.runtime.world_size == 1 else s.network.no_sync()
            with sync:
                with s.amp.autocast():
                    outputs = s.network(batch["image"])
                    # A distillation loss also gets the (mixed) images, for its teacher.
                    extra = (batch["image"],) if getattr(s.criterion, "needs_inputs", False) else ()
                    loss = s.criterion(outputs, batch["target"], *extra)
                s.amp.backward(loss / len(micro_batches))
            losses.append(float(loss))
        if not all(math.isfinite(v) for v in losses):
            files = [s.train_dataset.describe(int(i)) for batch in micro_batches for i in batch["index"].numpy()]
            raise FloatingPointError(
                f"the loss became {losses} at step {self.step}, on a batch of {'; '.join(files)}; "
                "lower the learning rate, enable gradient clipping (optimizer.grad_clip_norm) or check these images"
            )
        s.amp.step(s.optimizer)
        s.scheduler.step()
        if s.ema is not None:
            s.ema.update(s.model)
        return float(np.mean(losses))

    def _epoch_batches(self, epoch, first_step):
        """Groups of ``accumulate_steps`` batches for the optimizer steps of ``epoch`` from ``first_step``."""
        s = self.setup
        accumulate = self.options.accumulate_steps
        s.train_sampler.set_epoch(epoch, start_batch=first_step * accumulate)
        batches = iter(s.train_loader)
        for _ in range(first_step, s.steps_per_epoch):
            yield [next(batches) for _ in range(accumulate)]

    # -------------------------------------------------------------------- loop
    def run(self):
        s = self.setup
        logger.info(
            "training %s for %d steps (%d per epoch; total batch %d) on %s with %d process(es); output: %s",
            type(s.model).__name__, s.total_steps, s.steps_per_epoch, s.total_batch_size, s.runtime.device,
            s.runtime.world_size, self.output_dir,
        )
        progress = Progress(s.total_steps - self.step, unit="step")
        window_loss, window_samples, window_start = [], 0, time.perf_counter()
        while self.step < s.total_steps:
            epoch, first = divmod(self.step, s.steps_per_epoch)
            skipped = 0
            for micro in self._epoch_batches(epoch, first):
                window_loss.append(self._train_step(micro))
                window_samples += sum(int(b["image"].shape[0]) for b in micro) * s.runtime.world_size
                skipped += sum(int(b["skipped"].sum()) for b in micro)
                self.step += 1
                progress.update()
                if self.step % self.options.log_interval == 0 or self.step == s.total_steps:
                    elapsed = time.perf_counter() - window_start
                    self._log_step(epoch, float(np.mean(window_loss)), window_samples / elapsed, progress)
                    window_loss, window_samples, window_start = [], 0, time.perf_counter()
                if s.unit == "iter":
                    self._at_boundary(self.step)
                if self.step == s.total_steps:
                    break
            if skipped:
                logger.warning("epoch %d: %d unreadable image(s) were skipped (see warnings above)", epoch + 1, skipped)
            if s.unit == "epoch" and self.step % s.steps_per_epoch == 0:
                self._at_boundary(self.step // s.steps_per_epoch)
        self.vdl.close()
        return self._summary() if s.runtime.is_main else None

    def _log_step(self, epoch, loss, samples_per_second, progress):
        s = self.setup
        lr = s.optimizer.get_lr()
        logger.info(
            "epoch %d/%d step %d/%d loss %.4f lr %.3e %.1f img/s eta %s",
            epoch + 1, s.total_epochs, self.step, s.total_steps, loss, lr, samples_per_second,
            format_duration(progress.eta),
        )
        self.vdl.scalar("train/loss", loss, self.step)
        self.vdl.scalar("train/lr", lr, self.step)

    def _at_boundary(self, count):
        """After epoch (or iteration) ``count``: evaluate and save when their intervals say so."""
        final = self.step == self.setup.total_steps
        evaluate_now = final or count % self.options.eval_interval == 0
        save_now = final or count % self.options.save_interval == 0
        is_best = self._evaluate() if evaluate_now else False
        if not self.setup.runtime.is_main or not (save_now or is_best):
            return
        s = self.setup
        model_state = s.model.state_dict()
        ema_state = s.ema.model.state_dict() if s.ema is not None else None
        train_state = self._train_state()
        if save_now:
            logger.info("saved checkpoint %s", self.checkpoints.save(count, model_state, ema_state, train_state))
        if is_best:
            self.checkpoints.save_best(model_state, ema_state, train_state)
            logger.info("new best %s %.4f (saved to %s)", self.best["metric"], self.best["value"],
                        os.path.join(self.checkpoints.root, "best"))

    def _evaluate(self):
        """Evaluate raw (and EMA) weights; record the results; return whether they are the best yet."""
        s = self.setup
        results, notes = {}, {}
        if s.val_loader is not None and s.metrics:
            preview = PreviewCollector(self.options.preview_images)
            evaluation = evaluate(evaluation_model(s.model, self.setup.cfg), s.val_loader, s.metrics,
                                  s.runtime.world_size, on_batch=[preview])
            self._write_preview(preview.grid())
            results = dict(evaluation.metrics)
            evaluation.warn_left_out(f"validation at step {self.step}")
            if evaluation.left_out:
                notes["left_out"] = evaluation.left_out
            self._warn_non_finite(evaluation, "")
            if s.ema is not None:
                ema = evaluate(evaluation_model(s.ema.model, self.setup.cfg), s.val_loader, s.metrics,
                               s.runtime.world_size)
                results.update({f"ema_{k}": v for k, v in ema.metrics.items()})
                self._warn_non_finite(ema, "EMA ")
            logger.info("eval at step %d: %s", self.step, "  ".join(f"{k} {v:.4f}" for k, v in results.items()))
            for key, value in results.items():
                if math.isfinite(value):
                    self.vdl.scalar(f"val/{key}", value, self.step)
        self.history.append({"step": self.step, **results, **notes})
        is_best = self._update_best(results)
        if s.runtime.is_main:
            write_json(os.path.join(self.output_dir, "metrics.json"), {"best": self.best, "history": self.history})
        return is_best

    def _warn_non_finite(self, evaluation, which):
        bad = [k for k, v in evaluation.metrics.items() if not math.isfinite(v)]
        if bad:
            images = "; ".join(evaluation.non_finite[:10]) or "no single image (the whole metric)"
            logger.warning("validation at step %d: %smetric(s) %s are not finite (NaN or Inf), so they cannot "
                           "become the best; outputs scored NaN/Inf for: %s", self.step, which, ", ".join(bad), images)

    def _write_preview(self, grid):
        """Validation images as input | output | target rows: a PNG in the output folder and in VisualDL."""
        if grid is None or not self.setup.runtime.is_main:
            return
        write_image(os.path.join(self.output_dir, "previews", f"step_{self.step:06d}.png"), grid)
        self.vdl.image("val/input_output_target", grid, self.step)

    def _update_best(self, results):
        if not results:
            return False
        key = self.options.best_metric or next(iter(results))
        value = results[key]
        if not math.isfinite(value):  # a NaN would compare as best, or block every later best
            return False
        better = max if self.options.best_mode == "max" else min
        if self.best is None or better(value, self.best["value"]) != self.best["value"]:
            self.best = {"metric": key, "value": value, "step": self.step}
            return True
        return False

    def _summary(self):
        latest = self.checkpoints.latest()
        summary = {
            "output_dir": self.output_dir,
            "config": os.path.join(self.output_dir, "config.yml"),
            "log": os.path.join(self.output_dir, "train.log"),
            "visualdl": os.path.join(self.output_dir, "vdl"),
            "metrics": os.path.join(self.output_dir, "metrics.json"),
            "latest_checkpoint": latest,
            "best_checkpoint": os.path.join(self.checkpoints.root, "best") if self.best else None,
            "best": self.best,
            "final_metrics": self.history[-1] if self.history else {},
        }
        return summary
