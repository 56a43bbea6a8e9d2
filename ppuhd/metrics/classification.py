"""Classification metrics."""

import paddle

from ..registry import METRICS
from .base import Metric


@METRICS.register()
class TopKAccuracy(Metric):
    """Top-k accuracy in percent, reported as ``top1``, ``top5``, ...

    Targets may be class indices or, after Mixup, probability rows (their
    argmax is taken). ``output_index`` and ``prefix``: see ``Metric``.
    """

    def __init__(self, topk=(1, 5), output_index=0, prefix=""):
        super().__init__(output_index, prefix)
        self.topk = tuple(topk)
        self.reset()

    @property
    def names(self):
        return [f"{self.prefix}top{k}" for k in self.topk]

    def reset(self):
        self.correct = {k: 0 for k in self.topk}
        self.total = 0

    def update(self, outputs, target):
        outputs = self.select(outputs)
        if target.ndim == outputs.ndim:
            target = target.argmax(axis=-1)
        k_max = min(max(self.topk), outputs.shape[-1])
        top = paddle.topk(outputs, k_max, axis=-1)[1]
        hits = (top == target.reshape([-1, 1]).astype(top.dtype)).astype("int64")
        for k in self.topk:
            self.correct[k] += int(hits[:, : min(k, k_max)].sum())
        self.total += int(outputs.shape[0])

    def sums(self):
        return {**{f"top{k}": self.correct[k] for k in self.topk}, "count": self.total}

    def compute(self, sums):
        count = max(sums["count"], 1)
        return {f"{self.prefix}top{k}": 100.0 * sums[f"top{k}"] / count for k in self.topk}
