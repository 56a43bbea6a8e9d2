"""DeiT (Touvron et al., ICML 2021): data-efficient ViTs and distillation through attention.

The plain DeiT models are ViTs (``ppuhd.models.vit.VisionTransformer``) under
DeiT's names. The distilled models add, as the official
``DistilledVisionTransformer``:

* a ``dist_token`` after the class token, with its own row in ``pos_embed``
  (1, 2 + N, D), kept apart from the patch grid when the embedding is resized;
* a second classifier ``head_dist`` on the distillation token.

In training the model returns ``(class logits, distillation logits)`` so a
distillation loss can train each head against its target. In evaluation it
returns their average, as the official code; ``eval_head`` selects the class
head, the distillation head, or ``'all'``: ``(average, class, distillation)``
(the first output is always what export and inference use). PaddleClas always
returns the average, so its distillation head cannot be trained.

Parameter names equal the official / timm checkpoints' (``dist_token``,
``head_dist``, ...), so their ``.pth`` files convert directly. Tokens and
``pos_embed`` start as in the official code: truncated normal, std 0.02.
"""

import paddle.nn as nn

from ..registry import MODELS
from .layers import trunc_normal_
from .variants import register_variant
from .preprocessing import resize_and_center_crop
from .vit import VisionTransformer, _side

EVAL_HEADS = ("avg", "cls", "dist", "all")


@MODELS.register()
class DistilledVisionTransformer(VisionTransformer):
    """ViT with a distillation token and head; see the module docstring.

    Args:
        eval_head: what evaluation returns: 'avg' (default, as the official
            code), 'cls', 'dist', or 'all' = (avg, cls, dist).
        Others: as ``VisionTransformer``.
    """

    prefix_token_names = ("cls_token", "dist_token")

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0, pos_drop_rate=0.0, proj_drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0, pos_embed_antialias=True, eval_head="avg"):
        if num_classes <= 0:
            raise ValueError("a distilled ViT needs num_classes > 0 (its two heads are the point)")
        if eval_head not in EVAL_HEADS:
            raise ValueError(f"eval_head must be one of {EVAL_HEADS}, got {eval_head!r}")
        super().__init__(img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio,
                         qkv_bias, drop_rate, pos_drop_rate, proj_drop_rate, attn_drop_rate, drop_path_rate,
                         "token", pos_embed_antialias)
        self.eval_head = eval_head
        self.head_dist = nn.Linear(embed_dim, num_classes)
        trunc_normal_(self.head_dist.weight)
        nn.initializer.Constant(0.0)(self.head_dist.bias)

    def init_weights(self):
        super().init_weights()
        for token in self.prefix_tokens():  # the official DeiT init (timm's ViT uses normal(1e-6))
            trunc_normal_(token)

    def forward_head(self, x):
        cls_logits = self.head(self.head_drop(x[:, 0]))
        dist_logits = self.head_dist(self.head_drop(x[:, 1]))
        if self.training:
            return cls_logits, dist_logits
        average = (cls_logits + dist_logits) / 2
        return {"avg": average, "cls": cls_logits, "dist": dist_logits,
                "all": (average, cls_logits, dist_logits)}[self.eval_head]


DEIT_SIZES = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
}
DEIT_VARIANTS = [("tiny", 224), ("small", 224), ("base", 224), ("base", 384)]

def _deit_evaluation(model):
    """DeiT's evaluation (``datasets.py``): shorter side to size / 0.875, bicubic, centre crop."""
    return {"eval_transforms": resize_and_center_crop(_side(model.patch_embed.img_size))}


for _size, _res in DEIT_VARIANTS:
    register_variant(f"deit_{_size}_patch16_{_res}", VisionTransformer, info=_deit_evaluation, img_size=_res,
                     patch_size=16, **DEIT_SIZES[_size])
    register_variant(f"deit_{_size}_distilled_patch16_{_res}", DistilledVisionTransformer, info=_deit_evaluation,
                     img_size=_res, patch_size=16, **DEIT_SIZES[_size])
