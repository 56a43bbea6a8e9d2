"""A classifier assembled from a backbone and a head, both chosen in the config.

The named variants (``vit_base_patch16_224``, ...) are complete classifiers
with timm's parameter names; use this composite for other heads, e.g. a
linear probe on a frozen backbone::

    model:
      type: ImageClassifier
      backbone: {type: VisionTransformer, num_classes: 0, embed_dim: 192, depth: 12, num_heads: 3}
      head: {type: LinearClsHead, in_features: 192, num_classes: 10}
      freeze_backbone: true
"""

import paddle.nn as nn

from ..contract import model_info
from ..registry import HEADS, MODELS
from .layers import trunc_normal_


@HEADS.register()
class LinearClsHead(nn.Layer):
    """Dropout then one Linear layer (trunc-normal .02 weights, zero bias)."""

    def __init__(self, in_features, num_classes, dropout=0.0):
        super().__init__()
        self.num_classes = num_classes
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)
        trunc_normal_(self.fc.weight)
        nn.initializer.Constant(0.0)(self.fc.bias)

    def forward(self, features):
        return self.fc(self.drop(features))


@MODELS.register()
class ImageClassifier(nn.Layer):
    """``head(backbone(x))``; the backbone must return pooled features [B, C]."""

    def __init__(self, backbone, head, freeze_backbone=False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.info = model_info(backbone).with_updates(num_classes=head.num_classes)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for param in backbone.parameters():
                param.stop_gradient = True

    def train(self):
        super().train()
        if self.freeze_backbone:
            self.backbone.eval()  # a frozen backbone keeps eval behaviour (no dropout, fixed norms)
        return self

    def no_weight_decay_names(self):
        inner = getattr(self.backbone, "no_weight_decay_names", lambda: set())()
        return {f"backbone.{name}" for name in inner}

    def forward(self, x):
        return self.head(self.backbone(x))
