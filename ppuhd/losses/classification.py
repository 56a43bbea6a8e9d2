"""Classification losses."""

import paddle
import paddle.nn.functional as F

from ..registry import LOSSES
from .base import Loss


@LOSSES.register()
class CrossEntropyLoss(Loss):
    """Cross-entropy on class indices, with optional label smoothing.

    With smoothing s: ``(1 - s) * nll + s * mean_over_classes(-log p)``, as
    PyTorch's ``cross_entropy(label_smoothing=s)`` and timm's
    ``LabelSmoothingCrossEntropy``.
    """

    def __init__(self, label_smoothing=0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits, target):
        log_probs = F.log_softmax(logits, axis=-1)
        nll = -paddle.take_along_axis(log_probs, target.reshape([-1, 1]).astype("int64"), axis=-1).squeeze(-1)
        if self.label_smoothing == 0.0:
            return nll.mean()
        smooth = -log_probs.mean(axis=-1)
        return ((1.0 - self.label_smoothing) * nll + self.label_smoothing * smooth).mean()


@LOSSES.register()
class SoftTargetCrossEntropy(Loss):
    """Cross-entropy against a probability distribution per sample (after Mixup/CutMix)."""

    def forward(self, logits, target):
        return (-target * F.log_softmax(logits, axis=-1)).sum(axis=-1).mean()
