"""Vision Transformer (Dosovitskiy et al., ICLR 2021), as timm implements it.

Pre-norm blocks (``x + attn(norm1(x))``, ``x + mlp(norm2(x))``), LayerNorm
eps 1e-6, qkv bias, exact GELU, MLP ratio 4, a stride-P convolution as patch
embedding and a learned position embedding (1, prefix + N, D) with the class
token first. Parameter names equal timm's (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.N.attn.qkv``, ``norm``, ``head``, ...), so a
timm checkpoint converts by copying keys and transposing Linear weights.

The position embedding follows the input size: weights trained at one
resolution load into a model built for another (the patch grid part is resized
bicubically, the class token's row kept apart), and at run time any input
whose sides divide by the patch size works.
"""

import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..contract import ModelInfo
from ..paddle_compat import Linear, as_float32, is_static_size
from ..registry import BACKBONES, MODELS
from .layers import DropPath, fused_attention, fused_attention_runs, torch_default_init_, trunc_normal_
from .preprocessing import TO_MINUS_ONE_ONE, resize_and_center_crop
from .variants import register_variant


class PatchEmbed(nn.Layer):
    """Image to a sequence of patch embeddings with a stride-P convolution."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        for side, patch in zip(self.img_size, self.patch_size):
            if side % patch:
                raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.grid_size = tuple(s // p for s, p in zip(self.img_size, self.patch_size))
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2D(in_chans, embed_dim, self.patch_size, stride=self.patch_size)

    def forward(self, x):
        x = self.proj(x)
        grid = x.shape[2:]
        return x.flatten(2).transpose([0, 2, 1]), grid


class Attention(nn.Layer):
    def __init__(self, dim, num_heads=8, qkv_bias=True, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = Linear(dim, dim * 3, bias_attr=None if qkv_bias else False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        # [B, N, 3, heads, head_dim]; 0 copies the input's size
        qkv = self.qkv(x).reshape([0, 0, 3, self.num_heads, self.head_dim])
        if fused_attention_runs(x, self):  # eval on an AVX-512 CPU: 3x faster (DeiT-S, batch 8)
            return self.proj_drop(self.proj(fused_attention(qkv, self.scale, self.num_heads).flatten(2)))
        qkv = qkv.transpose([2, 0, 3, 1, 4])  # 3 x [B, heads, N, head_dim]
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = paddle.matmul(q * self.scale, k, transpose_y=True)
        attn = self.attn_drop(F.softmax(attn, axis=-1))
        x = paddle.matmul(attn, v).transpose([0, 2, 1, 3]).flatten(2)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Layer):
    def __init__(self, in_features, hidden_features, drop=0.0):
        super().__init__()
        self.fc1 = Linear(in_features, hidden_features)
        self.act = nn.GELU()  # exact (erf) GELU, as timm and the original JAX code
        self.drop1 = nn.Dropout(drop)
        self.fc2 = Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Layer):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, proj_drop=0.0, attn_drop=0.0, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, epsilon=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, epsilon=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), proj_drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


def _cubic(x, a):
    """Keys' cubic convolution kernel; a=-0.5 for antialiased, -0.75 for plain bicubic."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return paddle.where(x <= 1, near, paddle.where(x < 2, far, paddle.zeros_like(x)))


def _antialias_bicubic_matrix(out_size, in_size):
    """[out_size, in_size] weights of PyTorch's ``interpolate(bicubic, antialias=True)``.

    PIL-style: the kernel (a=-0.5) is widened by the scale when shrinking, and
    each row is normalised. Built from Paddle ops so that ``out_size`` may be a
    run-time tensor in an exported graph.
    """
    out = as_float32(out_size)
    scale = in_size / out
    stretch = paddle.clip(scale, min=1.0)
    centers = (paddle.arange(out_size, dtype="float32") + 0.5) * scale
    offsets = paddle.arange(in_size, dtype="float32") + 0.5
    weights = _cubic((offsets.unsqueeze(0) - centers.unsqueeze(1)) / stretch, -0.5)
    return weights / weights.sum(axis=1, keepdim=True)


def resample_pos_embed(pos_embed, new_grid, old_grid, num_prefix_tokens, antialias=True):
    """Resize the patch-grid rows of ``pos_embed`` (1, prefix + H*W, D) bicubically.

    The prefix tokens' rows (class, distillation) are kept apart and unchanged.
    ``antialias=True`` equals timm's ``resample_abs_pos_embed`` (PyTorch's
    antialiased bicubic, which differs from plain bicubic even when enlarging);
    ``antialias=False`` is plain bicubic (a=-0.75), as the official DeiT
    fine-tuning code resizes.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[-1]
    grid = grid.reshape([old_grid[0], old_grid[1], dim]).transpose([2, 0, 1])  # [D, H, W]
    if antialias:
        rows = _antialias_bicubic_matrix(new_grid[0], old_grid[0])
        cols = _antialias_bicubic_matrix(new_grid[1], old_grid[1])
        grid = paddle.matmul(paddle.matmul(rows, grid), cols, transpose_y=True)
    else:
        grid = F.interpolate(grid.unsqueeze(0), size=new_grid, mode="bicubic", align_corners=False)[0]
    grid = grid.transpose([1, 2, 0]).reshape([1, -1, dim])
    return paddle.concat([prefix, grid], axis=1)


class VisionTransformer(nn.Layer):
    """ViT classifier; with ``num_classes=0`` it returns the pooled features.

    Args:
        img_size: training resolution (int or (H, W)); sets the stored
            position-embedding grid. Other sizes work at run time.
        patch_size: side of the square patches.
        num_classes: classifier outputs; 0 for a feature extractor.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the architecture.
        drop_rate: dropout before the head.
        pos_drop_rate: dropout after adding the position embedding.
        proj_drop_rate: dropout after the attention projection and in the MLP.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth, rising linearly to this over the blocks.
        global_pool: 'token' (class token, the original) or 'avg' (mean of patch tokens).
        pos_embed_antialias: resize position embeddings as timm does (antialiased
            bicubic); False for plain bicubic, as the official DeiT code.
    """

    # Learned tokens put before the patch tokens, in order (DeiT adds 'dist_token').
    prefix_token_names = ("cls_token",)

    def __init__(
        self,
        img_size=224,
        patch_size=16,
        in_chans=3,
        num_classes=1000,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_rate=0.0,
        pos_drop_rate=0.0,
        proj_drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.0,
        global_pool="token",
        pos_embed_antialias=True,
    ):
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.global_pool = global_pool
        self.pos_embed_antialias = pos_embed_antialias
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        for name in self.prefix_token_names:
            setattr(self, name, self.create_parameter([1, 1, embed_dim], default_initializer=nn.initializer.Constant(0.0)))
        self.pos_embed = self.create_parameter(
            [1, self.num_prefix_tokens + self.patch_embed.num_patches, embed_dim],
            default_initializer=nn.initializer.Constant(0.0),
        )
        self.pos_drop = nn.Dropout(pos_drop_rate)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.LayerList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias, proj_drop_rate, attn_drop_rate, r) for r in rates]
        )
        self.norm = nn.LayerNorm(embed_dim, epsilon=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.info = ModelInfo("classification", num_classes, self.patch_embed.img_size,
                              eval_transforms=timm_evaluation(self.patch_embed.img_size, TIMM_DEFAULT_CROP))
        self.init_weights()

    def init_weights(self):
        """timm's default ('') init: trunc-normal(.02) Linear weights, zero biases,
        trunc-normal(.02) pos_embed, normal(1e-6) tokens, PyTorch-default patch conv."""
        trunc_normal_(self.pos_embed)
        for token in self.prefix_tokens():
            nn.initializer.Normal(std=1e-6)(token)
        torch_default_init_(self.patch_embed.proj)
        for layer in self.sublayers():
            if isinstance(layer, nn.Linear):
                trunc_normal_(layer.weight)
                nn.initializer.Constant(0.0)(layer.bias)

    @property
    def num_prefix_tokens(self):
        return len(self.prefix_token_names)

    def prefix_tokens(self):
        return [getattr(self, name) for name in self.prefix_token_names]

    def no_weight_decay_names(self):
        """Parameter names that conventionally get no weight decay."""
        return {"pos_embed", *self.prefix_token_names}

    def _pos_embed(self, x, grid):
        pos_embed = self.pos_embed
        # Skip the identity resize when the grid is known to be the stored one
        # (eager, or a graph traced at a fixed size). A graph with free H and W
        # always resizes; at the stored size that is the identity.
        known = all(is_static_size(side) and side > 0 for side in grid)
        if not known or tuple(grid) != self.patch_embed.grid_size:
            pos_embed = resample_pos_embed(
                pos_embed, grid, self.patch_embed.grid_size, self.num_prefix_tokens, self.pos_embed_antialias
            )
        batch = x.shape[0]
        tokens = [t.expand([batch, -1, -1]) for t in self.prefix_tokens()]
        x = paddle.concat(tokens + [x], axis=1) + pos_embed
        return self.pos_drop(x)

    def forward_features(self, x):
        x, grid = self.patch_embed(x)
        x = self._pos_embed(x, grid)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def pool(self, x):
        if self.global_pool == "avg":
            return x[:, self.num_prefix_tokens :].mean(axis=1)
        return x[:, 0]

    def forward_head(self, x):
        return self.head(self.head_drop(self.pool(x)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def adapt_state_dict(self, state):
        """Resize a loaded ``pos_embed`` to this model's grid (weights from another resolution)."""
        if "pos_embed" not in state:
            return state
        stored = state["pos_embed"]
        num_grid = stored.shape[1] - self.num_prefix_tokens
        side = math.isqrt(num_grid)
        if stored.shape[1] == self.pos_embed.shape[1] or side * side != num_grid:
            return state  # same size, or not a square grid: let the shape check report it
        resized = resample_pos_embed(
            paddle.to_tensor(stored, dtype="float32"),
            self.patch_embed.grid_size,
            (side, side),
            self.num_prefix_tokens,
            self.pos_embed_antialias,
        )
        return {**state, "pos_embed": resized.numpy()}


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _side(size):
    """A square (H, W) as its side (as the configs write sizes), other sizes as [H, W]."""
    return size[0] if size[0] == size[1] else list(size)


def timm_evaluation(img_size, crop_pct):
    """timm's evaluation of its ViT weights: resize to ``img_size / crop_pct`` bicubically
    (PIL), centre crop ``img_size``, pixels to [-1, 1] (mean = std = 0.5)."""
    return resize_and_center_crop(_side(img_size), crop_pct, "bicubic", TO_MINUS_ONE_ONE)


def _timm_variant_evaluation(crop_pct):
    return lambda model: {"eval_transforms": timm_evaluation(model.patch_embed.img_size, crop_pct)}


MODELS.register(VisionTransformer)
BACKBONES.register(VisionTransformer)

VIT_SIZES = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16),
}
# patch size -> resolutions; 384 is not a multiple of 14, so patch 14 is 224 only.
VIT_RESOLUTIONS = {16: (224, 384), 32: (224, 384), 14: (224,)}

# The evaluation of each variant name is that of timm's pretrained_cfg for the name (its
# default tag, timm 1.0.31): bicubic, mean = std = 0.5, centre crop, and crop_pct 0.9 at 224
# and 1.0 at 384. Names timm has no weights for (tag None) take the same settings: timm's
# ViT defaults (its ``_cfg``) at 224 and every timm ViT's at 384. tests/alignment/data.py
# checks these against timm.
TIMM_DEFAULT_CROP = 0.9
TIMM_CROP_BY_RESOLUTION = {224: 0.9, 384: 1.0}
TIMM_DEFAULT_TAGS = {
    "vit_tiny_patch16_224": "augreg_in21k_ft_in1k",
    "vit_tiny_patch16_384": "augreg_in21k_ft_in1k",
    "vit_tiny_patch32_224": None,
    "vit_tiny_patch32_384": None,
    "vit_tiny_patch14_224": None,
    "vit_small_patch16_224": "augreg_in21k_ft_in1k",
    "vit_small_patch16_384": "augreg_in21k_ft_in1k",
    "vit_small_patch32_224": "augreg_in21k_ft_in1k",
    "vit_small_patch32_384": "augreg_in21k_ft_in1k",
    "vit_small_patch14_224": None,
    "vit_base_patch16_224": "augreg2_in21k_ft_in1k",
    "vit_base_patch16_384": "augreg_in21k_ft_in1k",
    "vit_base_patch32_224": "augreg_in21k_ft_in1k",
    "vit_base_patch32_384": "augreg_in21k_ft_in1k",
    "vit_base_patch14_224": None,
    "vit_large_patch16_224": "augreg_in21k_ft_in1k",
    "vit_large_patch16_384": "augreg_in21k_ft_in1k",
    "vit_large_patch32_224": "orig_in21k",  # ImageNet-21k classifier weights (21,843 classes)
    "vit_large_patch32_384": "orig_in21k_ft_in1k",
    "vit_large_patch14_224": "untrained",  # a cfg without weights
    "vit_huge_patch16_224": None,
    "vit_huge_patch16_384": None,
    "vit_huge_patch32_224": None,
    "vit_huge_patch32_384": None,
    "vit_huge_patch14_224": "orig_in21k",  # ImageNet-21k features (no classifier)
}


for _size, _arch in VIT_SIZES.items():
    for _patch, _resolutions in VIT_RESOLUTIONS.items():
        for _res in _resolutions:
            register_variant(
                f"vit_{_size}_patch{_patch}_{_res}", VisionTransformer,
                info=_timm_variant_evaluation(TIMM_CROP_BY_RESOLUTION[_res]), img_size=_res, patch_size=_patch, **_arch
            )
