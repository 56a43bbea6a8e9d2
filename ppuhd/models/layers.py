"""Small layers, initialisers and kernel choices shared by several model families."""

import functools
import math

import paddle
import paddle.nn as nn

from .. import cpu
from ..paddle_compat import is_traced


class DropPath(nn.Layer):
    """Stochastic depth per sample (Huang et al.), as in timm.

    Drops the whole residual branch of a sample with probability ``drop_prob``
    and scales kept samples by 1 / (1 - drop_prob).
    """

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask_shape = [x.shape[0]] + [1] * (x.ndim - 1)
        mask = paddle.floor(keep + paddle.rand(mask_shape, dtype=x.dtype))
        return x / keep * mask

    def extra_repr(self):
        return f"drop_prob={self.drop_prob}"


def trunc_normal_(param, std=0.02):
    """timm's ``trunc_normal_(std=std)``: normal, cut at the absolute bounds +-2."""
    nn.initializer.TruncatedNormal(mean=0.0, std=std, a=-2.0, b=2.0)(param)


def torch_default_init_(layer):
    """PyTorch's default init for a Conv or Linear layer.

    Paddle's defaults differ (Xavier for Linear, a normal for Conv). Weights
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5)) and
    the same bound for the bias, so training from scratch starts where the
    PyTorch originals start.
    """
    weight = layer.weight
    if isinstance(layer, nn.Linear):
        fan_in = weight.shape[0]  # Paddle Linear weights are [in, out]
    elif isinstance(layer, (nn.Conv2DTranspose, nn.Conv1DTranspose)):
        # torch computes fan_in from dim 1 of its [in, out/groups, k, k] layout
        fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    else:
        fan_in = math.prod(weight.shape[1:])
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.initializer.Uniform(-bound, bound)(weight)
    if layer.bias is not None:
        nn.initializer.Uniform(-bound, bound)(layer.bias)


@functools.cache
def cpu_has_avx512():
    return "avx512f" in cpu.read_cpuinfo().get("flags", "").split()


def fused_attention_runs(x, layer):
    """Can Paddle's fused CPU attention (``self_dp_attention``) run ``layer`` on ``x``?

    That kernel (written for Paddle Inference's fusion pass, reachable in
    eager only as a legacy op) takes the packed (B, N, 3, heads, head_dim)
    queries, keys and values and computes the scores, softmax and product in
    512 x 512 tiles on all threads, never holding the N x N scores; Paddle's
    eager softmax runs on one thread. It is float32 AVX-512 code (float64
    would be computed in float32), and it has no backward (its output
    silently stops the gradient), so it runs only where no gradient is
    wanted, and never in training mode: a recomputed block's first forward
    runs without gradient, and its recomputation in the backward must round
    as it did. Exports keep the portable matmul graph.
    """
    return (
        not layer.training
        and not is_traced()
        and x.dtype == paddle.float32
        and x.place.is_cpu_place()
        and (not paddle.is_grad_enabled() or (x.stop_gradient and all(p.stop_gradient for p in layer.parameters())))
        and hasattr(paddle._legacy_C_ops, "self_dp_attention")
        and cpu_has_avx512()
    )


def fused_attention(qkv, scale, num_heads):
    """softmax(q k^T * scale) v per head, for (B, N, 3, heads, head_dim) ``qkv``: (B, N, heads, head_dim).

    Only where :func:`fused_attention_runs` says so.
    """
    return paddle._legacy_C_ops.self_dp_attention(qkv, "alpha", float(scale), "head_number", num_heads)
