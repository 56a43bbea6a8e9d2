"""The training loop: one optimizer step at a time, evaluation and checkpoints at intervals.

Construction (model, data, optimizer, ...) is in ``setup.py``; this file
holds only what happens while training runs.
"""

import functools
import logging
import math
import os
import time

import numpy as np

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
            try:
                self._resume(resume)
            except BaseException:
                self.close()
                raise

    def close(self):
        """Flush VisualDL and stop copying the log to train.log (``run`` does this when it ends)."""
        self.vdl.close()
        self.setup.close()

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
        """One optimizer step over ``accumulate_steps`` micro-batches (the task's step), then the schedule and EMA."""
        s = self.setup
        seed = step_seed(self.options.seed, s.runtime.rank, self.step)
        try:
            result = s.task.train_step(s.network, s.optimizer, s.amp, micro_batches, seed, s.runtime.world_size)
        except FloatingPointError as err:
            raise FloatingPointError(f"step {self.step}: {err}") from None
        s.scheduler.step()
        if s.ema is not None:
            s.ema.update(s.model)
        return result

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
        try:
            return self._run()
        finally:
            self.close()

    def _run(self):
        s = self.setup
        logger.info(
            "training %s for %d steps (%d per epoch; total batch %d) on %s with %d process(es); output: %s",
            type(s.model).__name__, s.total_steps, s.steps_per_epoch, s.total_batch_size, s.runtime.device,
            s.runtime.world_size, self.output_dir,
        )
        progress = Progress(s.total_steps - self.step, unit="step")
        window, window_samples, window_start = [], 0, time.perf_counter()
        while self.step < s.total_steps:
            epoch, first = divmod(self.step, s.steps_per_epoch)
            skipped = 0
            for micro in self._epoch_batches(epoch, first):
                window.append(self._train_step(micro))
                window_samples += sum(int(b["image"].shape[0]) for b in micro) * s.runtime.world_size
                skipped += sum(int(b["skipped"].sum()) for b in micro)
                self.step += 1
                progress.update()
                if self.step % self.options.log_interval == 0 or self.step == s.total_steps:
                    elapsed = time.perf_counter() - window_start
                    self._log_step(epoch, window, window_samples / elapsed, progress)
                    window, window_samples, window_start = [], 0, time.perf_counter()
                if s.unit == "iter":
                    self._at_boundary(self.step)
                if self.step == s.total_steps:
                    break
            if skipped:
                logger.warning("epoch %d: %d unreadable image(s) were skipped (see warnings above)", epoch + 1, skipped)
            if s.unit == "epoch" and self.step % s.steps_per_epoch == 0:
                self._at_boundary(self.step // s.steps_per_epoch)
        return self._summary() if s.runtime.is_main else None

    def _log_step(self, epoch, results, samples_per_second, progress):
        """The mean loss and loss terms of the steps since the last line: console, train.log, VisualDL."""
        s = self.setup
        lr = s.optimizer.get_lr()
        loss = float(np.mean([r.loss for r in results]))
        terms = {name: float(np.mean([r.terms[name] for r in results])) for name in results[0].terms}
        shown = "" if len(terms) < 2 else " (" + ", ".join(f"{name} {value:.4f}" for name, value in terms.items()) + ")"
        logger.info(
            "epoch %d/%d step %d/%d loss %.4f%s lr %.3e %.1f img/s eta %s",
            epoch + 1, s.total_epochs, self.step, s.total_steps, loss, shown, lr, samples_per_second,
            format_duration(progress.eta),
        )
        self.vdl.scalar("train/loss", loss, self.step)
        if len(terms) > 1:
            for name, value in terms.items():
                self.vdl.scalar(f"train/loss_{name}", value, self.step)
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
            evaluation = evaluate(s.task.predict, s.val_loader, s.metrics, s.runtime.world_size, on_batch=[preview],
                                  primary_output=s.task.info.primary_output)
            self._write_preview(preview.grid())
            results = dict(evaluation.metrics)
            evaluation.warn_left_out(f"validation at step {self.step}")
            if evaluation.left_out:
                notes["left_out"] = evaluation.left_out
            self._warn_non_finite(evaluation, "")
            if s.ema is not None:
                ema = evaluate(functools.partial(s.task.predict, model=s.ema.model), s.val_loader, s.metrics,
                               s.runtime.world_size)
                results.update({f"ema_{k}": v for k, v in ema.metrics.items()})
                self._warn_non_finite(ema, "EMA ")
            logger.info("eval at step %d: %s", self.step, "  ".join(f"{k} {v:.4f}" for k, v in results.items()))
            for key, value in results.items():
                if math.isfinite(value):
                    self.vdl.scalar(f"val/{key}", value, self.step)
        self.history.append({"step": self.step, **results, **notes})
        s.scheduler.observe_validation(results)  # a metric-driven schedule takes its next lr from these
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
        previews = os.path.join(self.output_dir, "previews")
        summary = {
            "output_dir": self.output_dir,
            "config": os.path.join(self.output_dir, "config.yml"),
            "log": os.path.join(self.output_dir, "train.log"),
            "visualdl": self.vdl.logdir,  # None: no VisualDL logs
            "metrics": os.path.join(self.output_dir, "metrics.json"),
            "latest_checkpoint": latest,
            "best_checkpoint": os.path.join(self.checkpoints.root, "best") if self.best else None,
            "best": self.best,
            "best_weights": self._best_weights(),
            "previews": previews if os.path.isdir(previews) else None,
            "final_metrics": self.history[-1] if self.history else {},
        }
        return summary

    def _best_weights(self):
        """Raw against EMA weights at the best step: ``{'metric', 'raw', 'ema', 'use_ema'}`` on the best
        metric (without its ``ema_`` prefix), or None without EMA results there."""
        if self.best is None or self.setup.ema is None:
            return None
        metric = self.best["metric"].removeprefix("ema_")
        at_best = next(entry for entry in self.history if entry["step"] == self.best["step"])
        raw, ema = at_best.get(metric), at_best.get(f"ema_{metric}")
        if raw is None or ema is None or not (math.isfinite(raw) and math.isfinite(ema)):
            return None
        better = max if self.options.best_mode == "max" else min
        return {"metric": metric, "raw": raw, "ema": ema, "use_ema": ema != raw and better(raw, ema) == ema}
