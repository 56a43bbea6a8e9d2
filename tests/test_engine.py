"""Training engine: schedules, parameter groups, EMA, checkpoints, resume, accumulation."""

import json
import math
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import paddle
import pytest

from ppuhd import builder
from ppuhd.config import load_config
from ppuhd.engine import Trainer
from ppuhd.engine import trainer as trainer_module
from ppuhd.engine.evaluator import Evaluation
from ppuhd.engine.amp import MixedPrecision
from ppuhd.engine.checkpoint import CheckpointError, CheckpointManager, verify_checkpoint, write_checkpoint
from ppuhd.engine.outputs import OutputError
from ppuhd.engine.ema import ModelEMA
from ppuhd.config import AmpOptions
from ppuhd.engine.optimizers import param_groups
from ppuhd.registry import LR_SCHEDULERS, MODELS


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    assert sorted(os.listdir(folder)) == ["manifest.json", "model.pdparams"]
    np.testing.assert_array_equal(paddle.load(os.path.join(folder, "model.pdparams"))["w"].numpy(), [3, 3])


def dead_pid():
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_save_killed_midway_is_cleaned_up_on_the_next_start(tmp_path):
    root = tmp_path / "checkpoints"
    script = textwrap.dedent(f"""
        import time, ppuhd.engine.checkpoint as checkpoint
        original = checkpoint._save_file
        def slow(obj, path):
            original(obj, path)
            time.sleep(120)  # killed here, with one file written
        checkpoint._save_file = slow
        checkpoint.write_checkpoint({str(root / "iter_000008")!r}, {{"w": __import__("numpy").ones(2)}})
    """)
    saver = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not (root.is_dir() and any(n.startswith(".tmp-") for n in os.listdir(root))):
            assert time.monotonic() < deadline and saver.poll() is None
            time.sleep(0.1)
    finally:
        saver.kill()
        saver.wait()
    (leftover,) = os.listdir(root)
    manager = CheckpointManager(str(tmp_path), unit="iter")
    assert manager.latest() is None  # never taken for a checkpoint
    live = root / f".tmp-iter_000010-{os.getpid()}"  # a save in progress elsewhere: not touched
    live.mkdir()
    assert manager.clean_leftovers() == [str(root / leftover)]
    assert os.listdir(root) == [live.name]


def test_a_checkpoint_lost_between_the_two_renames_of_a_save_is_restored(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    manager.save_best({"w": paddle.ones([2])}, None, None)
    os.rename(tmp_path / "checkpoints" / "best", tmp_path / "checkpoints" / f".old-best-{dead_pid()}")
    manager.clean_leftovers()
    assert os.listdir(tmp_path / "checkpoints") == ["best"]
    assert verify_checkpoint(str(tmp_path / "checkpoints" / "best"))


def test_a_damaged_checkpoint_is_named(tmp_path):
    folder = write_checkpoint(str(tmp_path / "iter_000002"), {"w": paddle.ones([4])}, None, {"step": 2})
    path = os.path.join(folder, "model.pdparams")
    original = open(path, "rb").read()
    damaged = bytearray(original)
    damaged[-20] ^= 0xFF  # same size, one byte changed
    open(path, "wb").write(bytes(damaged))
    with pytest.raises(CheckpointError, match=f"{path} is damaged"):
        verify_checkpoint(folder)
    open(path, "wb").write(original)
    assert verify_checkpoint(folder)
    os.remove(os.path.join(folder, "train_state.pdstates"))
    with pytest.raises(CheckpointError, match="train_state.pdstates is missing"):
        verify_checkpoint(folder)


# ------------------------------------------------------------------ resume
@pytest.mark.slow
@pytest.mark.parametrize("to_static", [False, True])
def test_interrupted_and_resumed_training_ends_with_the_same_weights(tmp_path, monkeypatch, to_static):
    straight = Trainer(tiny_config(tmp_path / "a", to_static=to_static))
    straight.run()
    expected, expected_ema = weights_of(straight.setup.model), weights_of(straight.setup.ema.model)

    cfg = tiny_config(tmp_path / "b", to_static=to_static)
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


def test_resume_auto_skips_a_damaged_latest_checkpoint_and_still_ends_exactly(tmp_path, caplog):
    straight = Trainer(tiny_config(tmp_path / "a"))
    straight.run()
    cfg = tiny_config(tmp_path / "b")
    Trainer(cfg).run()  # checkpoints at steps 6 and 8 (keep_last 2)
    latest = os.path.join(cfg["runtime"]["output_dir"], "checkpoints", "iter_000008")
    with open(os.path.join(latest, "train_state.pdstates"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(CheckpointError, match="train_state.pdstates is damaged"):
        Trainer(cfg, resume=latest)  # chosen by hand: no fallback
    resumed = Trainer(cfg, resume="auto")
    assert resumed.step == 6 and f"not resuming from {latest}" in caplog.text
    resumed.run()
    assert max_difference(weights_of(resumed.setup.model), weights_of(straight.setup.model)) <= 1e-6


def test_a_new_run_never_writes_over_an_earlier_one_unless_asked(tmp_path):
    cfg = tiny_config(tmp_path, iters=2)
    Trainer(cfg).run()
    run_dir = cfg["runtime"]["output_dir"]
    before = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    with pytest.raises(OutputError, match="already holds a training run; pass --resume auto"):
        Trainer(cfg)
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == before
    os.makedirs(os.path.join(run_dir, "checkpoints", "iter_999999"))  # from the earlier run
    (tmp_path / "run" / "notes.txt").write_text("mine")
    Trainer(cfg, overwrite=True).run()
    assert "iter_999999" not in os.listdir(os.path.join(run_dir, "checkpoints"))
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"  # only the run's own files go


def test_an_unwritable_output_folder_is_reported_before_anything_runs(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = tiny_config(tmp_path)
    cfg["runtime"]["output_dir"] = str(blocker / "run")
    with pytest.raises(OutputError, match=f"cannot create the training output folder {blocker / 'run'}"):
        Trainer(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("to_static", [False, True])
def test_gradient_accumulation_equals_the_larger_batch(tmp_path, to_static):
    plain = tiny_config(tmp_path / "a", iters=3, ema=None, to_static=to_static)
    plain["dataloader"]["batch_size"] = 8
    accumulated = tiny_config(tmp_path / "b", iters=3, accumulate_steps=2, ema=None, to_static=to_static)
    for cfg in (plain, accumulated):
        cfg["model"].update(drop_path_rate=0.0, proj_drop_rate=0.0)
    a, b = Trainer(plain), Trainer(accumulated)
    a.run(), b.run()
    assert max_difference(weights_of(a.setup.model), weights_of(b.setup.model)) <= 1e-6


def test_training_writes_config_logs_metrics_and_best(tmp_path):
    summary = Trainer(tiny_config(tmp_path)).run()
    for key in ("config", "log", "metrics", "latest_checkpoint", "best_checkpoint"):
        assert os.path.exists(summary[key]), key
    assert sorted(os.listdir(summary["best_checkpoint"])) == ["ema.pdparams", "manifest.json", "model.pdparams",
                                                              "train_state.pdstates"]
    assert set(summary["final_metrics"]) == {"step", "top1", "ema_top1"}
    assert load_config(summary["config"]) == tiny_config(tmp_path)


def test_the_summary_compares_raw_and_ema_weights_at_the_best_step(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, best_metric="top1"))
    trainer.run()
    trainer.best = {"metric": "top1", "value": 50.0, "step": 4}
    trainer.history = [{"step": 4, "top1": 50.0, "ema_top1": 58.0}, {"step": 8, "top1": 40.0, "ema_top1": 30.0}]
    assert trainer._summary()["best_weights"] == {"metric": "top1", "raw": 50.0, "ema": 58.0, "use_ema": True}
    trainer.history[0]["ema_top1"] = 50.0  # a tie keeps the raw weights
    assert not trainer._summary()["best_weights"]["use_ema"]
    trainer.best = {"metric": "ema_top1", "value": 30.0, "step": 8}  # best chosen by the EMA, or by a loss
    trainer.options.best_mode = "min"
    assert trainer._summary()["best_weights"] == {"metric": "top1", "raw": 40.0, "ema": 30.0, "use_ema": True}
    assert Trainer(tiny_config(tmp_path / "plain", ema=None)).run()["best_weights"] is None


def test_a_diverging_loss_stops_training_with_advice(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["lr_scheduler"]["base_lr"] = float("nan")
    with pytest.raises(FloatingPointError, match=r"on a batch of .*\.png \(label \d\); .*lower the learning rate"):
        Trainer(cfg).run()


def test_a_nan_metric_never_becomes_best_and_metrics_json_stays_valid(tmp_path, monkeypatch, caplog):
    cfg = tiny_config(tmp_path, ema=None)
    values = iter([float("nan"), 20.0])  # validations at steps 4 and 8

    def fake_evaluate(model, loader, metrics, *args, **kwargs):
        return Evaluation({"top1": next(values)}, [0, 1, 2], [], [], ["cat/3.png"])

    monkeypatch.setattr(trainer_module, "evaluate", fake_evaluate)
    summary = Trainer(cfg).run()
    assert summary["best"] == {"metric": "top1", "value": 20.0, "step": 8}
    assert "validation at step 4: metric(s) top1 are not finite" in caplog.text
    text = open(summary["metrics"]).read()
    saved = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in metrics.json"))
    assert saved["history"][0]["top1"] is None and saved["history"][1]["top1"] == 20.0


def test_amp_on_cpu_says_so_and_trains_in_fp32(caplog):
    amp = MixedPrecision(AmpOptions(enabled=True), on_gpu=False)
    assert not amp.enabled and "AMP needs a GPU" in caplog.text


def test_gradient_clipping_uses_the_norm_over_every_parameter_group():
    """Paddle clips each parameter group by its own norm; torch and vit_jax clip by the global one."""
    from ppuhd.engine.optimizers import SGD

    class TwoGroups(paddle.nn.Layer):  # a 2-D weight (decayed group) and a 1-D bias (no-decay group)
        def __init__(self):
            super().__init__()
            self.weight = self.create_parameter([2, 2], default_initializer=paddle.nn.initializer.Constant(0.0))
            self.bias = self.create_parameter([2], default_initializer=paddle.nn.initializer.Constant(0.0))

    model = TwoGroups()
    optimizer = SGD(model, learning_rate=1.0, momentum=0.0, weight_decay=0.0, grad_clip_norm=1.0)
    assert len(optimizer._param_groups) == 2
    grad_w, grad_b = np.full((2, 2), 3.0, np.float32), np.array([0.0, 4.0], np.float32)  # global norm 7.211
    ((model.weight * paddle.to_tensor(grad_w)).sum() + (model.bias * paddle.to_tensor(grad_b)).sum()).backward()
    optimizer.step()
    norm = np.sqrt((grad_w ** 2).sum() + (grad_b ** 2).sum())
    np.testing.assert_allclose(model.weight.numpy(), -grad_w / norm, rtol=1e-6)
    np.testing.assert_allclose(model.bias.numpy(), -grad_b / norm, rtol=1e-6)
