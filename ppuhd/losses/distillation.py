"""DeiT's distillation loss, with the teacher built from the config.

``loss = (1 - alpha) * base(class logits, targets) + alpha * distill``, where

* soft: ``KL(softmax(teacher / tau) || softmax(dist / tau))`` summed over the
  batch, times ``tau**2``, divided by the number of logits (B x C), exactly as
  the official ``losses.py`` (which keeps PyTorch's legacy normalisation by
  ``numel``, not by the batch size);
* hard: cross-entropy of the distillation logits against the teacher's argmax;
* none: the base loss alone (on the class logits).

The teacher is any registered model, loaded from a weights file, frozen, kept
in evaluation mode and run without gradients on the same (mixed, augmented)
batch the student sees. It belongs to the loss, not to the model, so it is
neither saved in the student's checkpoints nor exported.
"""

import paddle
import paddle.nn.functional as F

from ..registry import LOSSES
from ..weights import load_weights
from .base import Loss, total_of

DISTILLATION_TYPES = ("none", "soft", "hard")


@LOSSES.register(argument_kinds={"teacher": "models"})
class DistillationLoss(Loss):
    """Args:
        base: the loss on the class head (e.g. SoftTargetCrossEntropy after Mixup).
        teacher: the teacher model (a model config, built by the builder);
            required unless ``distillation_type`` is 'none'.
        teacher_weights: its weights (any format ``load_weights`` reads).
        distillation_type: 'none', 'soft' or 'hard' (the paper's best).
        alpha: weight of the distillation term (official default 0.5).
        tau: softmax temperature of soft distillation (official default 1.0).
    """

    def __init__(self, base, teacher=None, teacher_weights=None, distillation_type="hard", alpha=0.5, tau=1.0):
        super().__init__()
        if distillation_type not in DISTILLATION_TYPES:
            raise ValueError(f"distillation_type must be one of {DISTILLATION_TYPES}, got {distillation_type!r}")
        if distillation_type != "none" and (teacher is None or teacher_weights is None):
            raise ValueError(f"{distillation_type} distillation needs a teacher and teacher_weights "
                             "(a trained teacher's weights file)")
        self.base = base
        self.distillation_type = distillation_type
        self.alpha, self.tau = alpha, tau
        self.teacher = teacher
        if teacher is not None:
            if teacher_weights is not None:
                load_weights(teacher, teacher_weights)
            for param in teacher.parameters():
                param.stop_gradient = True
            teacher.eval()

    def train(self):
        super().train()
        if self.teacher is not None:
            self.teacher.eval()  # the teacher never trains: fixed BatchNorm statistics, no dropout
        return self

    def teacher_logits(self, inputs):
        with paddle.no_grad():
            return self.teacher(inputs)

    def terms(self, outputs, batch):
        """``base`` (weighted 1 - alpha) and ``distillation`` (weighted alpha); the teacher sees ``batch['image']``."""
        return self._weighted(outputs, batch["target"], batch["image"])

    def forward(self, outputs, target, inputs):
        return total_of(self._weighted(outputs, target, inputs))

    def _weighted(self, outputs, target, inputs):
        if isinstance(outputs, (tuple, list)):
            cls_logits, dist_logits = outputs
        else:
            cls_logits, dist_logits = outputs, None
        base_loss = self.base(cls_logits, target)
        if self.distillation_type == "none":
            return {"base": base_loss}
        if dist_logits is None:
            raise ValueError("distillation needs a model that returns (class logits, distillation logits) "
                             "in training, such as a deit_*_distilled_* model")
        teacher = self.teacher_logits(inputs)
        if self.distillation_type == "soft":
            student_log = F.log_softmax(dist_logits / self.tau, axis=1)
            teacher_log = F.log_softmax(teacher / self.tau, axis=1)
            kl = (paddle.exp(teacher_log) * (teacher_log - student_log)).sum()
            distill = kl * (self.tau * self.tau) / dist_logits.numel().astype(kl.dtype)
        else:
            distill = F.cross_entropy(dist_logits, teacher.argmax(axis=1))
        return {"base": base_loss * (1 - self.alpha), "distillation": distill * self.alpha}
