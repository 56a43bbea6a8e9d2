"""The task layer: what one training step and one prediction are, for each kind of model.

The trainer, the evaluator and the benchmark all go through a task, so a
training step is written once (as BasicSR's ``optimize_parameters``):

* ``ClassificationTask``: batch transform (Mixup/CutMix), forward, the loss's
  terms (one for a plain loss; ``base`` and ``distillation`` for DeiT's
  distillation, whose teacher sees the same mixed images), backward.
* ``EnhancementTask``: the same step; predictions are run tile by tile when
  the config has a ``tiling`` section.

With ``train.to_static`` the forward and the loss of a step run as one static
program (``paddle.jit.to_static``); the backward pass is that program's, built
by Paddle. ``backward()`` and the optimizer update stay outside it: Paddle
3.3.1 cannot trace them (a traced value has no ``backward``).

Which task a model gets follows from its contract (``ModelInfo.task``).
"""

import contextlib
import logging
import math

import numpy as np
import paddle
from paddle.distributed.fleet.utils.hybrid_parallel_util import fused_allreduce_gradients

from ..contract import model_info
from ..losses.base import total_of
from .tiling import TiledModel, tiling_arguments

logger = logging.getLogger(__name__)


class StepResult:
    """One optimizer step: the loss (mean over its micro-batches) and each named term of it."""

    def __init__(self, loss, terms):
        self.loss = loss
        self.terms = terms


class StaticLossTerms(paddle.nn.Layer):
    """The forward and the loss of a training step as one Layer, to be compiled by ``paddle.jit.to_static``.

    Only the batch entries the losses read (``image``, ``target``) enter the
    program; the network's and the criterion's parameters are shared, not copied.
    """

    def __init__(self, network, criterion):
        super().__init__()
        self.network, self.criterion = network, criterion

    def forward(self, image, target):
        return self.criterion.terms(self.network(image), {"image": image, "target": target})


class ClassificationTask:
    """Args:
        model: the model (its contract decides the task).
        criterion: the training loss (a ``ppuhd.losses.base.Loss``); None for evaluation only.
        batch_transform: applied to each training batch with the step's generator (Mixup/CutMix).
        describe: ``index -> description`` of training samples, to name the files of a batch
            whose loss is not finite.
        to_static: run each step's forward and loss as a static program (``train.to_static``).
    """

    def __init__(self, model, criterion=None, batch_transform=None, describe=None, to_static=False):
        self.model = model
        self.info = model_info(model)
        self.criterion = criterion
        self.batch_transform = batch_transform
        self.describe = describe
        self.to_static = to_static
        self._static_programs = {}  # id(network) -> its compiled StaticLossTerms

    # --------------------------------------------------------------- training
    def loss_terms(self, network, batch):
        """The named loss terms of one batch (forward included)."""
        if not self.to_static:
            return self.criterion.terms(network(batch["image"]), batch)
        program = self._static_programs.get(id(network))
        if program is None:
            program = paddle.jit.to_static(StaticLossTerms(network, self.criterion), full_graph=True)
            self._static_programs[id(network)] = program
        return program(batch["image"], batch["target"])

    def train_step(self, network, optimizer, amp, micro_batches, seed, world_size=1):
        """One optimizer step over ``micro_batches`` (gradient accumulation); returns a :class:`StepResult`.

        ``seed`` makes the step reproducible: Paddle's generator (dropout,
        drop path) and the batch transform are seeded from it. With several
        processes, gradients are averaged once, after the last micro-batch:
        by ``paddle.DataParallel`` (``network``) in eager mode; in static mode,
        whose programs cannot contain DataParallel, here, in the fused buckets
        fleet uses.
        """
        paddle.seed(seed)
        network.train()
        losses, sums = [], {}
        for i, batch in enumerate(micro_batches):
            if self.batch_transform is not None:
                batch = self.batch_transform(dict(batch), np.random.default_rng([seed, i]))  # the caller's batch kept
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or world_size == 1 or self.to_static else network.no_sync()
            with sync:
                with amp.autocast():
                    terms = self.loss_terms(network, batch)
                    loss = total_of(terms)
                amp.backward(loss / len(micro_batches))
            losses.append(float(loss))
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value)
        if not all(math.isfinite(v) for v in losses):
            raise FloatingPointError(self._non_finite_message(losses, micro_batches))
        if self.to_static and world_size > 1:
            fused_allreduce_gradients(list(network.parameters()), None)  # the mean over processes
        amp.step(optimizer)
        count = len(micro_batches)
        return StepResult(float(np.mean(losses)), {name: total / count for name, total in sums.items()})

    def _non_finite_message(self, losses, micro_batches):
        indices = [int(i) for batch in micro_batches for i in batch["index"].numpy()] if self.describe else []
        where = f", on a batch of {'; '.join(self.describe(i) for i in indices)}" if indices else ""
        return (f"the loss became {losses}{where}; lower the learning rate, enable gradient clipping "
                "(optimizer.grad_clip_norm) or check these images")

    # ------------------------------------------------------------- prediction
    def evaluation_model(self, model=None):
        """``model`` (default: the task's) as evaluation runs it."""
        return self.model if model is None else model

    def predict(self, images, model=None):
        """The outputs of ``model`` (default: the task's) in evaluation mode, without gradients."""
        model = self.model if model is None else model
        was_training = model.training
        model.eval()
        try:
            with paddle.no_grad():
                return self.evaluation_model(model)(images)
        finally:
            if was_training:
                model.train()


class EnhancementTask(ClassificationTask):
    """Image-to-image models; ``tiling``: :func:`~ppuhd.engine.tiling.tiling_arguments` of the config, or None."""

    def __init__(self, model, criterion=None, batch_transform=None, describe=None, to_static=False, tiling=None):
        super().__init__(model, criterion, batch_transform, describe, to_static)
        self.tiling = tiling_arguments(tiling, self.info.input_multiple)

    def evaluation_model(self, model=None):
        model = super().evaluation_model(model)
        if self.tiling is None:
            return model
        return TiledModel(model, **self.tiling, log_seconds=30.0)


def build_task(model, criterion=None, batch_transform=None, describe=None, tiling=None, to_static=False):
    """The task for ``model``'s kind (its ``ModelInfo.task``); ``tiling``: a config's ``tiling`` section."""
    if model_info(model).task == "enhancement":
        return EnhancementTask(model, criterion, batch_transform, describe, to_static, tiling)
    return ClassificationTask(model, criterion, batch_transform, describe, to_static)
