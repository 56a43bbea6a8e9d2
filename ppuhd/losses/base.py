"""What every loss offers the training step: the loss, and its named parts for the logs."""

import functools
import operator

import paddle.nn as nn


def total_of(terms):
    """The loss a dict of terms adds up to (summed in order, as the official code adds them)."""
    return functools.reduce(operator.add, terms.values())


class Loss(nn.Layer):
    """Base of the registered losses.

    ``forward(outputs, target)`` computes the loss as the official code does.
    ``terms(outputs, batch)`` gives its parts by name, each already weighted,
    adding up to the loss; the trainer logs every one. A plain loss is one
    term, named after its class; losses made of several parts (a weighted
    combination, distillation) override it. ``batch`` is the training batch
    (``image``, ``target``, ...) as the model saw it.
    """

    def terms(self, outputs, batch):
        return {type(self).__name__: self(outputs, batch["target"])}
