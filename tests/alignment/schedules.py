"""Ladder step "lr": the trainer's learning rate at every optimizer step against the official schedulers.

Each check runs the real :class:`~ppuhd.engine.Trainer` (a tiny ViT on a few
generated images, 12 epochs x 3 optimizer steps) with the ``lr_scheduler``
section of a shipped schedule config, reads the optimizer's lr as each step
starts and compares the 36 values with the sequence the official code sets
(``tests/fixtures/schedules/``). For UHDFour's loss-driven schedule the
validation results are the fixture's losses (the evaluation itself is not
what is checked). Tolerance: 1e-12 relative to the peak lr: both sides are
float64 formulas and differ by rounding only (the official recursive cosine
accumulates a few ulps).
"""

import functools
import json
import os
import tempfile

import yaml

from ppuhd.config import load_config
from ppuhd.engine import Trainer
from ppuhd.engine import trainer as trainer_module
from ppuhd.engine.evaluator import Evaluation

from .ladder import fixture, generated_by, max_abs, result, rung

generated_by("make_schedule_fixtures.py", "schedules", official="deit")
generated_by("make_llformer_schedule_fixtures.py", "schedules", official="llformer")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPOCHS, STEPS_PER_EPOCH, BATCH = 12, 3, 4  # 6 classes x 2 images = 12 images: 3 steps of 4
RELATIVE_TOLERANCE = 1e-12


@functools.lru_cache(maxsize=None)
def reference(name):
    with open(fixture("schedules", name)) as f:
        return json.load(f)


def shipped_schedule(name, **changes):
    """The ``lr_scheduler`` section of ``configs/_base_/schedules/<name>.yml``, with ``changes``."""
    with open(os.path.join(REPO, "configs", "_base_", "schedules", f"{name}.yml")) as f:
        return {**yaml.safe_load(f)["lr_scheduler"], **changes}


def trainer_lrs(lr_scheduler, validation_losses=None):
    """The lr of each optimizer step of a 12 x 3-step run of the trainer with ``lr_scheduler``.

    With ``validation_losses``, the run validates after every epoch and epoch
    e's validation reports ``mae`` = ``validation_losses[e]``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        data = {"type": "DemoShapes", "root": os.path.join(tmp, "data"), "image_size": 16, "train_per_class": 2,
                "val_per_class": 1, "transforms": [{"type": "Normalize"}, {"type": "ToCHW"}]}
        cfg = load_config({
            "model": {"type": "VisionTransformer", "img_size": 16, "patch_size": 8, "embed_dim": 8, "depth": 1,
                      "num_heads": 1, "num_classes": 6},
            "train_dataset": {**data, "split": "train"},
            "val_dataset": {**data, "split": "val"},
            "loss": {"type": "CrossEntropyLoss"},
            "metrics": [{"type": "ImageQuality", "measures": ["mae"]}],
            "optimizer": {"type": "AdamW", "weight_decay": 0.05},
            "lr_scheduler": lr_scheduler,
            "dataloader": {"batch_size": BATCH, "num_workers": 0},
            "train": {"epochs": EPOCHS, "eval_interval": 1 if validation_losses else EPOCHS * 10,
                      "save_interval": EPOCHS * 10, "log_interval": 1000},
            "runtime": {"device": "cpu", "output_dir": os.path.join(tmp, "run"), "visualdl": False},
        })
        trainer = Trainer(cfg)
        assert trainer.setup.steps_per_epoch == STEPS_PER_EPOCH
        lrs = []
        task = trainer.setup.task
        train_step = task.train_step

        def recording_step(network, optimizer, *args):
            lrs.append(optimizer.get_lr())
            return train_step(network, optimizer, *args)

        task.train_step = recording_step
        losses = iter(validation_losses or [])

        def validation(*args, **kwargs):
            return Evaluation({"mae": next(losses, 0.0)}, [], [], [], [])  # the final step always validates

        original_evaluate = trainer_module.evaluate
        trainer_module.evaluate = validation
        try:
            trainer.run()
        finally:
            trainer_module.evaluate = original_evaluate
    return lrs


def compare(row, case, lrs, expected):
    return row(case, max_abs(lrs, expected) / max(expected), RELATIVE_TOLERANCE, measure="max abs / peak lr",
               note=f"{len(expected)} optimizer steps")


@rung("lr", "DeiT")
def deit_schedule():
    row, ref = result("lr", "DeiT"), reference("schedules.json")
    batch = dict(scale_base_batch=512 * BATCH / ref["settings"]["deit"]["batch_size"])  # the same peak lr
    return [
        compare(row, "deit_300e.yml (per epoch, main.py's step(epoch)) vs timm CosineLRScheduler",
                trainer_lrs(shipped_schedule("deit_300e", **batch)), ref["deit_per_epoch"]),
        compare(row, "step_per: iteration, lag_epochs: 0 vs timm step_update",
                trainer_lrs(shipped_schedule("deit_300e", step_per="iteration", lag_epochs=0, **batch)),
                ref["deit_per_iteration"]),
    ]


@rung("lr", "LLFormer")
def llformer_schedule():
    row, ref = result("lr", "LLFormer"), reference("llformer_schedules.json")
    rows = []
    for step_per in ("epoch", "iteration"):
        rows.append(compare(row, f"llformer.yml, step_per: {step_per} vs GradualWarmupScheduler (PyTorch 1.x cosine)",
                            trainer_lrs(shipped_schedule("llformer", step_per=step_per)),
                            ref[f"llformer_per_{step_per}_pytorch1"]))
        rows.append(compare(row, f"cosine_handover: scaled, step_per: {step_per} vs GradualWarmupScheduler "
                                 f"(PyTorch {ref['settings']['versions']['torch']})",
                            trainer_lrs(shipped_schedule("llformer", step_per=step_per, cosine_handover="scaled")),
                            ref[f"llformer_per_{step_per}"]))
    return rows


@rung("lr", "UHDFour")
def uhdfour_schedule():
    row, ref = result("lr", "UHDFour"), reference("schedules.json")
    restarts = {"type": "CosineWarmRestarts", "base_lr": ref["settings"]["uhdfour"]["lr"], "restart_epochs": 2,
                "restart_mult": 2}
    return [
        compare(row, "position_metric: mae vs CosineAnnealingWarmRestarts.step(valid_loss)",
                trainer_lrs({**restarts, "position_metric": "mae"}, ref["uhdfour_validation_losses"]),
                ref["uhdfour_by_loss"]),
        compare(row, "step_per: epoch vs CosineAnnealingWarmRestarts.step() per epoch",
                trainer_lrs({**restarts, "step_per": "epoch"}), ref["uhdfour_per_epoch"]),
        compare(row, "step_per: iteration vs CosineAnnealingWarmRestarts.step() per step",
                trainer_lrs({**restarts, "step_per": "iteration"}), ref["uhdfour_per_iteration"]),
    ]


@rung("lr", "ViT")
def vit_schedule():
    row, ref = result("lr", "ViT"), reference("schedules.json")
    vit = ref["settings"]["vit"]
    schedule = shipped_schedule("vit_imagenet_finetune_20k", base_lr=vit["base_lr"], warmup_steps=vit["warmup_steps"],
                                scale_base_batch=None)
    return [compare(row, "vit_imagenet_finetune_20k.yml vs vit_jax warm-up + cosine", trainer_lrs(schedule),
                    ref["vit"])]
