"""Training engine: schedules, parameter groups, EMA, checkpoints, resume, accumulation."""

import math
import os

import numpy as np
import paddle
import pytest

from ppuhd import builder
from ppuhd.config import load_config
from ppuhd.engine import Trainer
from ppuhd.engine.amp import MixedPrecision
from ppuhd.engine.checkpoint import CheckpointManager, write_checkpoint
from ppuhd.engine.ema import ModelEMA
from ppuhd.config import AmpOptions
from ppuhd.engine.optimizers import param_groups
from ppuhd.registry import LR_SCHEDULERS, MODELS


def tiny_config(tmp_path, **train):
    """A ViT on a few generated images; a handful of steps takes seconds."""
    data = {"type": "DemoShapes", "root": str(tmp_path / "data"), "image_size": 16, "train_per_class": 4,
            "val_per_class": 2, "transforms": [{"type": "RandomHorizontalFlip"}, {"type": "Normalize"},
                                               {"type": "ToCHW"}]}
    return load_config({
        "model": {"type": "VisionTransformer", "img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 2,
                  "num_heads": 2, "num_classes": 6, "drop_path_rate": 0.2, "proj_drop_rate": 0.1},
        "train_dataset": {**data, "split": "train"},
        "val_dataset": {**data, "split": "val", "transforms": [{"type": "Normalize"}, {"type": "ToCHW"}]},
        "loss": {"type": "CrossEntropyLoss", "label_smoothing": 0.1},
        "metrics": [{"type": "TopKAccuracy", "topk": [1]}],
        "optimizer": {"type": "AdamW", "weight_decay": 0.05},
        "lr_scheduler": {"type": "CosineWarmup", "base_lr": 1e-3, "warmup_steps": 2, "min_lr": 1e-5},
        "dataloader": {"batch_size": 4, "num_workers": 0},
        "train": {"iters": 8, "eval_interval": 4, "save_interval": 2, "log_interval": 4, "keep_last": 2,
                  "ema": {"decay": 0.9}, **train},
        "runtime": {"device": "cpu", "output_dir": str(tmp_path / "run"), "visualdl": False},
    })


def weights_of(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def max_difference(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


# ----------------------------------------------------------- lr schedules
def schedule(**kwargs):
    args = dict(total_steps=100, steps_per_epoch=10, total_batch_size=256)
    return builder.build({"type": "CosineWarmup", **kwargs}, LR_SCHEDULERS, **args)


def lrs(scheduler, n):
    values = []
    for _ in range(n):
        values.append(scheduler.get_lr())
        scheduler.step()
    return values


def test_cosine_with_linear_warmup_and_batch_scaling():
    values = lrs(schedule(base_lr=5e-4, scale_base_batch=512, warmup_epochs=1, warmup_start_lr=1e-6,
                          min_lr=1e-5), 100)
    peak = 5e-4 * 256 / 512
    assert values[0] == pytest.approx(1e-6)
    assert values[5] == pytest.approx(1e-6 + (peak - 1e-6) * 5 / 10)
    # timm's default (warmup_prefix False): the cosine is measured from step 0
    assert values[40] == pytest.approx(1e-5 + 0.5 * (peak - 1e-5) * (1 + math.cos(math.pi * 40 / 100)))
    assert values[99] == pytest.approx(1e-5 + 0.5 * (peak - 1e-5) * (1 + math.cos(math.pi * 99 / 100)))


def test_cosine_after_warmup_prefix():
    values = lrs(schedule(base_lr=1.0, warmup_steps=20, warmup_prefix=True), 100)
    assert values[20] == pytest.approx(1.0) and values[60] == pytest.approx(0.5)


def test_step_schedule_decays_at_epoch_milestones():
    scheduler = builder.build({"type": "StepWarmup", "base_lr": 0.1, "milestones": [3, 6], "gamma": 0.1},
                              LR_SCHEDULERS, total_steps=100, steps_per_epoch=10, total_batch_size=1)
    values = lrs(scheduler, 70)
    assert values[29] == pytest.approx(0.1) and values[30] == pytest.approx(0.01) and values[65] == pytest.approx(1e-3)


# --------------------------------------------------------- weight decay groups
def test_norms_biases_and_tokens_get_no_weight_decay():
    model = builder.build({"type": "VisionTransformer", "img_size": 16, "patch_size": 8, "embed_dim": 16,
                           "depth": 1, "num_heads": 2, "num_classes": 3}, MODELS)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "pos_embed", "norm.weight", "head.bias", "blocks.0.attn.qkv.bias"} <= exempt
    assert {names[id(p)] for p in decay["params"]} == {
        "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
        "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight", "head.weight"}
    only_listed = param_groups(model, 0.05, no_weight_decay=["pos_embed"], no_weight_decay_1d=False)
    assert [names[id(p)] for p in only_listed[1]["params"]] == ["pos_embed"]


# --------------------------------------------------------------------- EMA
def test_ema_update_follows_its_formula():
    model = paddle.nn.Linear(3, 2)
    ema = ModelEMA(paddle.nn.Linear(3, 2), model, decay=0.9)
    start = weights_of(ema.model)
    paddle.assign(model.weight + 1.0, model.weight)
    ema.update(model)
    np.testing.assert_allclose(ema.model.weight.numpy(), 0.9 * start["weight"] + 0.1 * model.weight.numpy(),
                               rtol=1e-6)


# ------------------------------------------------------------- checkpoints
def test_an_interrupted_save_is_never_taken_as_a_checkpoint(tmp_path):
    manager = CheckpointManager(str(tmp_path), keep_last=2, unit="iter")
    for step in (2, 4, 6):
        manager.save(step, {"w": paddle.ones([2])}, None, {"step": step})
    assert [os.path.basename(p) for p in manager.periodic()] == ["iter_000004", "iter_000006"]
    # a crash mid-write leaves only a hidden temporary folder
    partial = tmp_path / "checkpoints" / ".tmp-iter_000008-123"
    partial.mkdir()
    (partial / "model.pdparams").write_bytes(b"trunc")
    assert os.path.basename(manager.latest()) == "iter_000006"


def test_rewriting_best_replaces_it_whole(tmp_path):
    folder = str(tmp_path / "best")
    write_checkpoint(folder, {"w": paddle.ones([2])}, {"w": paddle.zeros([2])})
    write_checkpoint(folder, {"w": paddle.full([2], 3.0)})
    assert sorted(os.listdir(folder)) == ["model.pdparams"]
    np.testing.assert_array_equal(paddle.load(os.path.join(folder, "model.pdparams"))["w"].numpy(), [3, 3])


# ------------------------------------------------------------------ resume
@pytest.mark.slow
def test_interrupted_and_resumed_training_ends_with_the_same_weights(tmp_path, monkeypatch):
    straight = Trainer(tiny_config(tmp_path / "a"))
    straight.run()
    expected, expected_ema = weights_of(straight.setup.model), weights_of(straight.setup.ema.model)

    cfg = tiny_config(tmp_path / "b")
    crashing = Trainer(cfg)
    original_step = Trainer._train_step

    def crash_at_step_5(self, micro):
        if self.step == 5:
            raise KeyboardInterrupt("simulated crash")
        return original_step(self, micro)

    monkeypatch.setattr(Trainer, "_train_step", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        crashing.run()
    monkeypatch.setattr(Trainer, "_train_step", original_step)

    resumed = Trainer(cfg, resume="auto")
    assert resumed.step == 4
    resumed.run()
    assert max_difference(weights_of(resumed.setup.model), expected) <= 1e-6
    assert max_difference(weights_of(resumed.setup.ema.model), expected_ema) <= 1e-6
    assert resumed.history == straight.history


@pytest.mark.slow
def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    plain = tiny_config(tmp_path / "a", iters=3, ema=None)
    plain["dataloader"]["batch_size"] = 8
    accumulated = tiny_config(tmp_path / "b", iters=3, accumulate_steps=2, ema=None)
    for cfg in (plain, accumulated):
        cfg["model"].update(drop_path_rate=0.0, proj_drop_rate=0.0)
    a, b = Trainer(plain), Trainer(accumulated)
    a.run(), b.run()
    assert max_difference(weights_of(a.setup.model), weights_of(b.setup.model)) <= 1e-6


def test_training_writes_config_logs_metrics_and_best(tmp_path):
    summary = Trainer(tiny_config(tmp_path)).run()
    for key in ("config", "log", "metrics", "latest_checkpoint", "best_checkpoint"):
        assert os.path.exists(summary[key]), key
    assert sorted(os.listdir(summary["best_checkpoint"])) == ["ema.pdparams", "model.pdparams",
                                                              "train_state.pdstates"]
    assert set(summary["final_metrics"]) == {"step", "top1", "ema_top1"}
    assert load_config(summary["config"]) == tiny_config(tmp_path)


def test_a_diverging_loss_stops_training_with_advice(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["lr_scheduler"]["base_lr"] = float("nan")
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        Trainer(cfg).run()


def test_amp_on_cpu_says_so_and_trains_in_fp32(caplog):
    amp = MixedPrecision(AmpOptions(enabled=True), on_gpu=False)
    assert not amp.enabled and "AMP needs a GPU" in caplog.text
