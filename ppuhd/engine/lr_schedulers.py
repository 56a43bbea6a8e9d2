"""Learning-rate schedules, stepped once per optimizer step.

Every schedule has a linear warm-up from ``warmup_start_lr`` to the peak over
``warmup_epochs`` (or ``warmup_steps``). The peak is ``base_lr``, or
``base_lr * total_batch / scale_base_batch`` when ``scale_base_batch`` is set
(the linear scaling rule of DeiT: 5e-4 per 512 images).

The engine supplies ``total_steps``, ``steps_per_epoch`` and
``total_batch_size`` (batch per process x processes x accumulation steps).
"""

import math

from paddle.optimizer.lr import LRScheduler

from ..registry import LR_SCHEDULERS


class WarmupSchedule(LRScheduler):
    """Linear warm-up, then ``decay(step)`` from subclasses."""

    def __init__(self, base_lr, total_steps, steps_per_epoch, total_batch_size, scale_base_batch=None,
                 warmup_epochs=0, warmup_steps=None, warmup_start_lr=0.0):
        self.peak_lr = base_lr * total_batch_size / scale_base_batch if scale_base_batch else base_lr
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.warmup_steps = warmup_steps if warmup_steps is not None else round(warmup_epochs * steps_per_epoch)
        self.warmup_start_lr = warmup_start_lr
        super().__init__(learning_rate=self.peak_lr)

    def get_lr(self):
        step = self.last_epoch  # Paddle's counter of step() calls; here optimizer steps
        if step < self.warmup_steps:
            return self.warmup_start_lr + (self.peak_lr - self.warmup_start_lr) * step / self.warmup_steps
        return self.decay(step)

    def decay(self, step):
        raise NotImplementedError


@LR_SCHEDULERS.register()
class CosineWarmup(WarmupSchedule):
    """Cosine decay from the peak to ``min_lr`` at the last step.

    ``warmup_prefix=False`` (timm's default, used by DeiT) measures the cosine
    from step 0, so warm-up overlays its start; ``True`` starts the cosine
    after warm-up.
    """

    def __init__(self, base_lr, total_steps, steps_per_epoch, total_batch_size, min_lr=0.0, warmup_prefix=False,
                 scale_base_batch=None, warmup_epochs=0, warmup_steps=None, warmup_start_lr=0.0):
        self.min_lr = min_lr
        self.warmup_prefix = warmup_prefix
        super().__init__(base_lr, total_steps, steps_per_epoch, total_batch_size, scale_base_batch, warmup_epochs,
                         warmup_steps, warmup_start_lr)

    def decay(self, step):
        start = self.warmup_steps if self.warmup_prefix else 0
        progress = (step - start) / max(self.total_steps - start, 1)
        return self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


@LR_SCHEDULERS.register()
class StepWarmup(WarmupSchedule):
    """Multiply by ``gamma`` at each milestone (epochs): a list, or every N epochs if an int."""

    def __init__(self, base_lr, total_steps, steps_per_epoch, total_batch_size, milestones=30, gamma=0.1,
                 scale_base_batch=None, warmup_epochs=0, warmup_steps=None, warmup_start_lr=0.0):
        self.milestones = milestones
        self.gamma = gamma
        super().__init__(base_lr, total_steps, steps_per_epoch, total_batch_size, scale_base_batch, warmup_epochs,
                         warmup_steps, warmup_start_lr)

    def decay(self, step):
        epoch = step / self.steps_per_epoch
        if isinstance(self.milestones, int):
            passed = int(epoch // self.milestones)
        else:
            passed = sum(epoch >= m for m in self.milestones)
        return self.peak_lr * self.gamma**passed


@LR_SCHEDULERS.register()
class ConstantWarmup(WarmupSchedule):
    """The peak lr after warm-up (no warm-up by default)."""

    def decay(self, step):
        return self.peak_lr
