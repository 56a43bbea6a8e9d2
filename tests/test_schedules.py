"""Learning-rate schedules: stepping granularity, lag, metric-driven restarts, exact resume."""

import math

import pytest

from ppuhd import builder
from ppuhd.engine import Trainer
from ppuhd.registry import LR_SCHEDULERS, ConfigError

from test_engine import tiny_config

SPE = 4  # optimizer steps per epoch


def build(cfg, total_steps=10 * SPE):
    return builder.build(cfg, LR_SCHEDULERS, "lr_scheduler", total_steps=total_steps, steps_per_epoch=SPE,
                         total_batch_size=8)


def lrs(scheduler, n, validation=None):
    """The lr of each of ``n`` optimizer steps; ``validation(epoch)`` -> metrics after each epoch."""
    values = []
    for step in range(n):
        values.append(scheduler())
        scheduler.step()
        if validation and (step + 1) % SPE == 0:
            scheduler.observe_validation(validation((step + 1) // SPE - 1))
    return values


def test_per_epoch_schedules_hold_one_value_per_epoch_and_lag_repeats_the_first():
    cosine = {"type": "CosineWarmup", "base_lr": 1.0, "warmup_epochs": 2, "warmup_start_lr": 0.1, "min_lr": 0.0}
    per_epoch = lrs(build({**cosine, "step_per": "epoch"}), 10 * SPE)
    assert all(len(set(per_epoch[e * SPE:(e + 1) * SPE])) == 1 for e in range(10))
    epochs = per_epoch[::SPE]
    assert epochs[:3] == pytest.approx([0.1, 0.55, 0.5 * (1 + math.cos(math.pi * 2 / 10))])
    lagged = lrs(build({**cosine, "step_per": "epoch", "lag_epochs": 1}), 10 * SPE)[::SPE]
    assert lagged == pytest.approx([epochs[0]] + epochs[:-1])
    per_iteration = lrs(build(cosine), 10 * SPE)
    assert per_iteration[1] == pytest.approx(0.1 + 0.9 / (2 * SPE))


def test_warmup_steps_need_per_iteration_stepping():
    with pytest.raises(ConfigError, match="warmup_steps needs step_per: iteration"):
        build({"type": "CosineWarmup", "base_lr": 1.0, "warmup_steps": 3, "step_per": "epoch"})
    with pytest.raises(ConfigError, match="step_per must be one of"):
        build({"type": "ConstantWarmup", "base_lr": 1.0, "step_per": "epochs"})


def test_gradual_warmup_cosine_starts_above_zero_and_holds_the_peak_an_epoch():
    values = lrs(build({"type": "GradualWarmupCosine", "base_lr": 1.0, "warmup_epochs": 3, "min_lr": 0.0}),
                 10 * SPE)[::SPE]
    assert values[:5] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 7))])
    assert values[-1] > 0.0  # the cosine's last epoch is t = T - 1


def test_restarts_follow_the_epoch_count_or_the_validation_metric():
    restarts = {"type": "CosineWarmRestarts", "base_lr": 1.0, "restart_epochs": 2, "restart_mult": 2}
    by_epoch = lrs(build(restarts), 8 * SPE)[::SPE]
    assert by_epoch == pytest.approx([1.0, 0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                      0.5 * (1 + math.cos(3 * math.pi / 4)), 1.0, 0.5 * (1 + math.cos(math.pi / 8))])
    losses = [0.2, 0.1, 0.15, 0.12]
    by_loss = lrs(build({**restarts, "position_metric": "mae"}), 4 * SPE, lambda epoch: {"mae": losses[epoch]})
    expected = [1.0] + [0.5 * (1 + math.cos(math.pi * loss / 2)) for loss in losses[:3]]
    assert by_loss[::SPE] == pytest.approx(expected)


def test_a_schedule_following_a_metric_the_run_does_not_report_fails_at_setup(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["lr_scheduler"] = {"type": "CosineWarmRestarts", "base_lr": 1e-3, "position_metric": "mae"}
    with pytest.raises(ConfigError, match="lr_scheduler.position_metric 'mae' is not reported"):
        Trainer(cfg)


def test_resume_mid_run_continues_the_exact_per_epoch_sequence(tmp_path, monkeypatch):
    """A run interrupted after epoch 2 of 4 and resumed sets the lr of every later step as the straight run."""

    def config(folder):
        cfg = tiny_config(tmp_path / folder, iters=None, epochs=4, eval_interval=1, save_interval=1)
        cfg["lr_scheduler"] = {"type": "CosineWarmup", "base_lr": 1e-3, "warmup_epochs": 1, "warmup_start_lr": 1e-5,
                               "min_lr": 1e-5, "step_per": "epoch", "lag_epochs": 1}
        return cfg

    def recorded(trainer):
        seen = []
        original = trainer.setup.task.train_step

        def step(network, optimizer, *args):
            seen.append(optimizer.get_lr())
            return original(network, optimizer, *args)

        trainer.setup.task.train_step = step
        return seen

    straight = Trainer(config("a"))
    expected = recorded(straight)
    straight.run()
    steps_per_epoch = straight.setup.steps_per_epoch

    first = Trainer(config("b"))
    original_step = Trainer._train_step

    def crash_in_epoch_3(self, micro):
        if self.step == 2 * steps_per_epoch + 1:
            raise KeyboardInterrupt("simulated crash")
        return original_step(self, micro)

    monkeypatch.setattr(Trainer, "_train_step", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    monkeypatch.setattr(Trainer, "_train_step", original_step)
    resumed = Trainer(config("b"), resume="auto")
    assert resumed.step == 2 * steps_per_epoch
    seen = recorded(resumed)
    resumed.run()
    assert seen == expected[2 * steps_per_epoch:]
    assert len(set(expected[:steps_per_epoch] + expected[steps_per_epoch:2 * steps_per_epoch])) == 1  # the lag
