"""Automatic mixed precision on GPU; a clear note and fp32 elsewhere."""

import contextlib
import logging

import paddle

logger = logging.getLogger(__name__)


class MixedPrecision:
    """Autocast context and loss scaling for one training run.

    float16 uses a dynamic loss scaler; bfloat16 needs none. O2 keeps the
    weights in low precision with fp32 master copies in the optimizer.
    """

    def __init__(self, options, on_gpu):
        self.enabled = options.enabled and on_gpu
        if options.enabled and not on_gpu:
            logger.warning("train.amp.enabled is set, but AMP needs a GPU; this run trains in fp32 on the CPU")
        self.dtype, self.level = options.dtype, options.level
        self.scaler = paddle.amp.GradScaler(
            enable=self.enabled and self.dtype == "float16", init_loss_scaling=options.init_loss_scaling
        )

    def decorate(self, model, optimizer):
        if self.enabled and self.level == "O2":
            model, optimizer = paddle.amp.decorate(model, optimizer, level="O2", dtype=self.dtype)
        return model, optimizer

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return paddle.amp.auto_cast(enable=True, level=self.level, dtype=self.dtype)

    def backward(self, loss):
        self.scaler.scale(loss).backward()

    def step(self, optimizer):
        """Unscale (if scaling), clip (inside the optimizer), step, update the scale."""
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.clear_grad()
