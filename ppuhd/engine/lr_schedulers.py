"""Learning-rate schedules, stepped per epoch or per iteration.

The trainer calls ``step()`` after every optimizer step, so a schedule always
knows how many optimizer steps are done; ``step_per`` decides what its formula
counts:

* ``iteration``: the lr changes at every optimizer step, lengths are in steps
  (``warmup_steps``, or ``warmup_epochs`` x steps per epoch);
* ``epoch``: the lr is held for a whole epoch and the formula counts epochs,
  as the official DeiT and LLFormer code step their schedulers once per epoch.

``lag_epochs`` makes a schedule run that many epochs late, repeating its first
value: DeiT's ``main.py`` calls ``lr_scheduler.step(epoch)`` after epoch
``epoch``, so epochs 0 and 1 both run at the warm-up start and epoch e >= 1 at
the value timm's formula gives for e - 1 (``lag_epochs: 1``).

Because the lr is a function of the optimizer-step count (plus, for
:class:`CosineWarmRestarts` following a metric, the last validation value),
a checkpoint's scheduler state resumes the exact sequence.

The peak is ``base_lr``, or ``base_lr * total_batch / scale_base_batch`` when
``scale_base_batch`` is set (DeiT's linear scaling rule: 5e-4 per 512 images).
The engine supplies ``total_steps``, ``steps_per_epoch`` and
``total_batch_size`` (batch per process x processes x accumulation steps).
"""

import math

from paddle.optimizer.lr import LRScheduler

from ..registry import LR_SCHEDULERS

STEP_PER = ("iteration", "epoch")


class Schedule(LRScheduler):
    """An lr that is ``lr_at(t)`` for position ``t`` in the schedule's unit (epochs or optimizer steps).

    Subclasses set their own attributes before calling this constructor:
    Paddle's computes the first lr.
    """

    position_metric = None  # the validation metric a schedule follows, if any (CosineWarmRestarts)

    def __init__(self, base_lr, total_steps, steps_per_epoch, total_batch_size, scale_base_batch=None,
                 step_per="iteration", lag_epochs=0):
        if step_per not in STEP_PER:
            raise ValueError(f"step_per must be one of {', '.join(STEP_PER)}, got {step_per!r}")
        if lag_epochs < 0:
            raise ValueError(f"lag_epochs must be >= 0, got {lag_epochs}")
        self.peak_lr = base_lr * total_batch_size / scale_base_batch if scale_base_batch else base_lr
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.step_per = step_per
        self.unit_steps = steps_per_epoch if step_per == "epoch" else 1  # optimizer steps per unit of t
        self.length = total_steps / self.unit_steps  # the run's length in units
        self.lag_steps = lag_epochs * steps_per_epoch
        super().__init__(learning_rate=self.peak_lr)

    def units(self, epochs):
        """A length given in epochs, in the schedule's unit."""
        return epochs * self.steps_per_epoch / self.unit_steps

    def position(self):
        """Where the schedule is, in its unit: whole epochs or optimizer steps done (minus the lag)."""
        return max(self.last_epoch - self.lag_steps, 0) // self.unit_steps  # last_epoch: Paddle's step() count

    def get_lr(self):
        return self.lr_at(self.position())

    def lr_at(self, t):
        raise NotImplementedError

    def observe_validation(self, metrics):
        """Called with the metrics of each validation; only metric-driven schedules use them."""


class WarmupSchedule(Schedule):
    """Linear warm-up from ``warmup_start_lr`` to the peak over ``warmup_epochs`` (or ``warmup_steps``),
    then ``decay(t)``."""

    def __init__(self, base_lr, total_steps, steps_per_epoch, total_batch_size, scale_base_batch=None,
                 warmup_epochs=0, warmup_steps=None, warmup_start_lr=0.0, step_per="iteration", lag_epochs=0):
        if warmup_steps is not None and step_per == "epoch":
            raise ValueError("warmup_steps needs step_per: iteration; with step_per: epoch give warmup_epochs")
        self.warmup_epochs = warmup_epochs
        self.warmup_steps = warmup_steps
        self.warmup_start_lr = warmup_start_lr
        super().__init__(base_lr, total_steps, steps_per_epoch, total_batch_size, scale_base_batch, step_per,
                         lag_epochs)

    @property
    def warmup(self):
        """The warm-up length in the schedule's unit."""
        return self.warmup_steps if self.warmup_steps is not None else round(self.units(self.warmup_epochs))

    def lr_at(self, t):
        if t < self.warmup:
            return self.warmup_start_lr + (self.peak_lr - self.warmup_start_lr) * t / self.warmup
        return self.decay(t)

    def decay(self, t):
        raise NotImplementedError


@LR_SCHEDULERS.register()
class CosineWarmup(WarmupSchedule):
    """Cosine decay from the peak to ``min_lr`` at the end of the run (timm's ``CosineLRScheduler``, one cycle).

    ``warmup_prefix=False`` (timm's default, used by DeiT) measures the cosine
    from t = 0, so warm-up overlays its start; ``True`` starts the cosine
    after warm-up and still ends it at the end of the run.
    """

    def __init__(self, base_lr, total_steps, steps_per_epoch, total_batch_size, min_lr=0.0, warmup_prefix=False,
                 scale_base_batch=None, warmup_epochs=0, warmup_steps=None, warmup_start_lr=0.0,
                 step_per="iteration", lag_epochs=0):
        self.min_lr = min_lr
        self.warmup_prefix = warmup_prefix
        super().__init__(base_lr, total_steps, steps_per_epoch, total_batch_size, scale_base_batch, warmup_epochs,
                         warmup_steps, warmup_start_lr, step_per, lag_epochs)

    def decay(self, t):
        start = self.warmup if self.warmup_prefix else 0
        progress = (t - start) / max(self.length - start, 1)
        return self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


@LR_SCHEDULERS.register()
class StepWarmup(WarmupSchedule):
    """Multiply by ``gamma`` at each milestone (epochs): a list, or every N epochs if an int."""

    def __init__(self, base_lr, total_steps, steps_per_epoch, total_batch_size, milestones=30, gamma=0.1,
                 scale_base_batch=None, warmup_epochs=0, warmup_steps=None, warmup_start_lr=0.0,
                 step_per="iteration", lag_epochs=0):
        self.milestones = milestones
        self.gamma = gamma
        super().__init__(base_lr, total_steps, steps_per_epoch, total_batch_size, scale_base_batch, warmup_epochs,
                         warmup_steps, warmup_start_lr, step_per, lag_epochs)

    def decay(self, t):
        epoch = t * self.unit_steps / self.steps_per_epoch
        if isinstance(self.milestones, int):
            passed = int(epoch // self.milestones)
        else:
            passed = sum(epoch >= m for m in self.milestones)
        return self.peak_lr * self.gamma**passed


@LR_SCHEDULERS.register()
class ConstantWarmup(WarmupSchedule):
    """The peak lr after warm-up (no warm-up by default)."""

    def decay(self, t):
        return self.peak_lr


@LR_SCHEDULERS.register()
class GradualWarmupCosine(Schedule):
    """LLFormer's ``GradualWarmupScheduler(multiplier=1)`` + ``CosineAnnealingLR``, as its ``train.py`` steps them.

    ``train.py`` steps the warm-up scheduler once before the first epoch and
    once after each, so (t counting from 0, W = ``warmup_epochs``, T = the run
    minus W) unit t runs at ``peak * (t + 1) / W`` for t < W: the warm-up
    starts at peak / W, not 0, and reaches the peak in unit W - 1. The cosine
    takes over one unit later than it would be reached, so the peak is held for
    unit W too: unit t >= W runs at ``min_lr + (peak - min_lr) * (1 + cos(pi *
    (t - W) / T)) / 2``, and the last unit is at t - W = T - 1: ``min_lr`` is
    never reached. With ``step_per: iteration``, W and T are in optimizer steps
    (the same schedulers stepped once per iteration).

    ``cosine_handover``: ``peak`` is PyTorch 1.x's CosineAnnealingLR (LLFormer
    installs 1.8), whose first value is the current lr. Recent PyTorch (2.14)
    computes a chainable step there instead, which scales the whole cosine by
    2 / (1 + cos(pi / T)): ``scaled`` reproduces that (1 + 2.8e-5 for 300
    epochs, but 3% above the peak in a 12-epoch run).
    """

    def __init__(self, base_lr, total_steps, steps_per_epoch, total_batch_size, warmup_epochs=3, min_lr=0.0,
                 cosine_handover="peak", scale_base_batch=None, step_per="epoch", lag_epochs=0):
        if cosine_handover not in ("peak", "scaled"):
            raise ValueError(f"cosine_handover must be 'peak' or 'scaled', got {cosine_handover!r}")
        self.warmup_epochs = warmup_epochs
        self.min_lr = min_lr
        self.cosine_handover = cosine_handover
        super().__init__(base_lr, total_steps, steps_per_epoch, total_batch_size, scale_base_batch, step_per,
                         lag_epochs)
        if self.cosine_length <= 0:
            raise ValueError(f"warmup_epochs ({warmup_epochs}) must be shorter than the run")

    @property
    def warmup(self):
        return self.units(self.warmup_epochs)

    @property
    def cosine_length(self):
        """CosineAnnealingLR's T_max: the run minus the warm-up."""
        return self.length - self.warmup

    def lr_at(self, t):
        warmup_count = t + 1  # GradualWarmupScheduler's last_epoch: stepped once before the first unit
        if warmup_count <= self.warmup:
            return self.peak_lr * warmup_count / self.warmup
        cosine_t = warmup_count - self.warmup - 1  # the hand-over step returns the cosine's t = 0
        at_handover = 2 if self.cosine_handover == "peak" else 1 + math.cos(math.pi / self.cosine_length)
        cosine = 1 + math.cos(math.pi * cosine_t / self.cosine_length)
        return self.min_lr + (self.peak_lr - self.min_lr) * cosine / at_handover


@LR_SCHEDULERS.register()
class CosineWarmRestarts(Schedule):
    """PyTorch's ``CosineAnnealingWarmRestarts`` (SGDR): cosine from the peak to ``min_lr`` over
    ``restart_epochs`` epochs, restarting, each cycle ``restart_mult`` times longer.

    Stepped by the epoch count (once after each epoch, as PyTorch intends),
    unit t runs at the cosine's t. UHDFour's code instead calls
    ``scheduler.step(valid_loss)``, which sets the cosine's position to the
    validation L1 loss, a number near 0.1: set ``position_metric`` to the
    validation metric holding that loss (``mae`` of ``ImageQuality`` with the
    uhdfour convention) and validate after every epoch to reproduce it. Until
    the first validation the position is 0 (the peak).
    """

    def __init__(self, base_lr, total_steps, steps_per_epoch, total_batch_size, restart_epochs=2, restart_mult=2,
                 min_lr=0.0, position_metric=None, scale_base_batch=None, step_per="epoch", lag_epochs=0):
        if restart_epochs <= 0 or restart_mult < 1 or int(restart_mult) != restart_mult:
            raise ValueError("restart_epochs must be > 0 and restart_mult an integer >= 1 (as PyTorch requires)")
        if position_metric and step_per != "epoch":
            raise ValueError("position_metric takes the position in epochs: it needs step_per: epoch")
        self.restart_epochs = restart_epochs
        self.restart_mult = restart_mult
        self.min_lr = min_lr
        self.position_metric = position_metric
        self.metric_position = 0.0  # the last validation value, when the position follows a metric
        super().__init__(base_lr, total_steps, steps_per_epoch, total_batch_size, scale_base_batch, step_per,
                         lag_epochs)

    def state_keys(self):
        self.keys = ["last_epoch", "last_lr", "metric_position"]

    def position(self):
        return self.metric_position if self.position_metric else super().position()

    def observe_validation(self, metrics):
        if not self.position_metric:
            return
        if self.position_metric not in metrics:
            raise KeyError(f"lr_scheduler.position_metric {self.position_metric!r} is not among the validation "
                           f"metrics ({', '.join(metrics) or 'none'})")
        self.metric_position = float(metrics[self.position_metric])
        self.last_lr = self.get_lr()  # takes effect from the next optimizer step

    def lr_at(self, t):
        cycle, into_cycle = self.units(self.restart_epochs), t
        while into_cycle >= cycle:  # PyTorch's T_cur and T_i after restarts
            into_cycle -= cycle
            cycle *= self.restart_mult
        return self.min_lr + (self.peak_lr - self.min_lr) * (1 + math.cos(math.pi * into_cycle / cycle)) / 2
