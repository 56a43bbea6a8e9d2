"""LLFormer (Wang et al., AAAI 2023), as the official ``model/LLFormer.py`` builds it.

"Ultra-High-Definition Low-Light Image Enhancement: A Benchmark and
Transformer-Based Method". A 3x3 convolution embeds the image; three stages of
axis-based transformer blocks run at full resolution and a layer-attention
module fuses their three outputs. An encoder (four downsamplings) and a decoder
(weighted skips, each followed by a 1x1 conv) make the U-shaped middle; its
output is mixed, with learned per-channel weights, with a full-resolution
``latent`` stage; three refinement stages follow, fused again by layer
attention, then a 3x3 output convolution.

Pieces, each ported with the original's quirks:

* Transformer block: ``x + attn(norm1(x))``, ``x + ffn(norm2(x))``.
* Channel LayerNorm over C at every pixel, biased variance, eps 1e-5.
  ``'BiasFree'`` divides the *uncentred* x by the standard deviation, as the
  original does.
* Axis-based attention (``NextAttentionZ``): attention along the width within
  every row (``row_att``), then along the height within every column
  (``col_att``), in that order (the paper's figure draws height first). Each
  of the two: qkv = 1x1 conv then two depthwise 3x3 convs; q and k
  L2-normalised over the head dimension; scores times one learnable scalar
  ``fac`` (init 1) with no 1/sqrt(d); softmax; a 1x1 output conv. Its convs
  always have a bias (the block's ``bias`` flag is not passed on).
* Dual gated feed-forward network: 1x1 conv to 2 x int(dim * 2.66), depthwise
  3x3, ``gelu(x2) * x1 + gelu(x1) * x2`` with exact (erf) GELU, 1x1 conv.
* Layer attention (``LAM_Module_v2``): each of the three stacked feature maps
  is one token (qkv 1x1 + depthwise 3x3 over the concatenation, normalised,
  times a learnable ``temperature``), a 3x3 attention, 1x1 conv, residual.
* Down: 3x3 conv C -> C/2 then PixelUnshuffle(2); Up: 3x3 conv C -> 2C then
  PixelShuffle(2); no bias.
* Skips: ``skip_conv(a * enc + b * dec)`` with per-channel weights ``a``, ``b``
  (init 1). Level 1 uses ``skip_1_0`` and the full-resolution mix has no conv;
  ``skip_2_1`` and ``coefficient`` are built but never used (kept: they are in
  the official state_dict and in its parameter count).
* ``skip=True`` adds the input image to the output (the trained model has it off).

Differences from the original; the mathematics is the same, only the
rounding differs (float64 runs of both agree to 1e-15):

* Any input size. The network needs sides that are multiples of 16; forward
  reflect-pads the bottom and right edges to the next multiple of 16 and crops
  the output back, exactly as the official ``test.py``/``test_UHD.py`` pad
  around the model. Their own padding is then a no-op, since it leaves
  multiples of 16 alone. (Sides must be at least 9 pixels: reflection cannot
  pad more than the side minus one.) ``forward_aligned`` is the bare network.
* Bounded memory. The original builds the attention scores of every row (or
  column) at once: rows x W x W floats, 4.7 GB for one 720x1280 tile at full
  resolution. Here the rows (columns) are processed in chunks whose scores stay
  within ``attn_budget_mb`` (chunks span the whole batch and all heads, and
  hold at least one row). Gradients flow through the chunks too. The qkv and
  FFN projections are computed one part (q, k, v; each FFN half) at a time
  from slices of the conv weights, so the map of all parts is never held.
* Eager float32 inference on a CPU with AVX-512 runs the axis attention
  through Paddle's fused CPU attention kernel (``self_dp_attention``), 1.7x
  faster on a 720x1280 tile; training, float64, exports and other CPUs use
  the chunked matmuls (see :func:`fused_attention_runs`).
* The column attention runs on the map as it is, with its depthwise kernels
  transposed, instead of transposing the whole feature map twice; the
  LayerNorm normalises over the channel axis in place instead of going to
  (B, HW, C) and back.
* The scale ``fac`` multiplies the normalised q instead of the W x W scores
  (one pass over a small tensor instead of a large one).
* ``LAM_Module_v2`` takes the three maps concatenated along channels,
  (B, 3C, H, W), the memory layout of the original's (B, 3, C, H, W). Its
  token norms come from matmuls rather than ``F.normalize``: Paddle's CPU
  norm adds the C*H*W elements one by one, which lost 4e-5 of relative
  precision at 256x256 (see ``LAM_Module_v2.forward``).
* Exportable with free H and W (``paddle.jit.to_static`` + ``jit.save``): the
  chunk loop becomes a graph while-loop, and PixelUnshuffle is written as
  reshape + transpose, since Paddle's op rejects unknown sizes.

Parameter names equal the official state_dict's (``encoder_1.0.attn.row_att.q1.weight``,
``norm1.body.weight``, ...), so an official checkpoint converts key for key.

The class defaults are the official constructor's, which are NOT the trained
model (``num_blocks=[1, 2, 4, 8]``). Every official train/test script uses
``num_blocks=[2, 4, 8, 16]`` with the other defaults: that configuration,
24,549,014 parameters, is registered as ``llformer``.

Initialisation follows PyTorch's defaults, as the original training did:
every conv gets :func:`torch_default_init_` (Paddle's own conv init differs),
LayerNorm weight 1 and bias 0, attention scales, temperatures and skip weights 1.
"""

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.distributed.fleet.utils import recompute

from ..contract import ModelInfo
from ..paddle_compat import (Conv2D, PixelUnshuffle, channel_map, conv2d, is_portable_graph, is_static_size, is_traced,
                             reflect_pad_to_multiple)
from ..registry import MODELS
from .layers import fused_attention, fused_attention_runs, torch_default_init_
from .preprocessing import WHOLE_IMAGE
from .variants import register_variant

# Four 2x downsamplings: the network needs sides divisible by 16.
SIZE_MULTIPLE = 16
LAYERNORM_EPS = 1e-5
NORMALIZE_EPS = 1e-12  # F.normalize's floor on the norm
# Attention scores per chunk. Small chunks stay in cache between the scores'
# matmul, the softmax and the second matmul: at 360x1280, 16-32 MiB chunks ran
# the model 1.2x faster than 256 MiB ones.
DEFAULT_ATTN_BUDGET_MB = 16.0
# Tokens per call of the fused attention kernel (see fused_row_attention).
FUSED_TOKENS_BUDGET_MB = 32.0


def _conv(in_channels, out_channels, kernel_size, bias, groups=1):
    """A 'same'-padded Conv2D with PyTorch's default init."""
    conv = Conv2D(
        in_channels,
        out_channels,
        kernel_size,
        padding=kernel_size // 2,
        groups=groups,
        bias_attr=None if bias else False,
    )
    torch_default_init_(conv)
    return conv


def _ones_parameter(layer, shape, trainable=True):
    param = layer.create_parameter(shape, default_initializer=nn.initializer.Constant(1.0))
    param.stop_gradient = not trainable
    return param


def _conv_slice(conv, x, start, end, transpose_kernel=False):
    """Output channels [start, end) of ``conv(x)``, from the matching slice of its weights."""
    weight = conv.weight[start:end]
    if transpose_kernel:
        weight = weight.transpose([0, 1, 3, 2])
    bias = None if conv.bias is None else conv.bias[start:end]
    groups = 1 if conv._groups == 1 else end - start  # depthwise: one group per channel
    return conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=groups)


def split_projection(x, pointwise, depthwise, parts, transpose_kernels=False):
    """``depthwise[-1](...depthwise[0](pointwise(x))).chunk(parts, axis=1)``, one part at a time.

    After the 1x1 conv every channel goes through the depthwise convs on its
    own, so each part (q, k, v; the two FFN halves) can be computed from
    slices of the weights. The map of all parts is never built and no part is
    copied out of it: at full resolution that is most of a block's memory.
    ``transpose_kernels`` transposes the depthwise kernels (see ``col_att``).
    """
    return [projection_part(x, pointwise, depthwise, index, parts, transpose_kernels) for index in range(parts)]


def projection_part(x, pointwise, depthwise, index, parts, transpose_kernels=False):
    """Part ``index`` of :func:`split_projection`'s ``parts``, alone."""
    size = pointwise.weight.shape[0] // parts
    start, end = index * size, (index + 1) * size
    y = _conv_slice(pointwise, x, start, end)
    for conv in depthwise:
        y = _conv_slice(conv, y, start, end, transpose_kernels)
    return y


def _full(small, like):
    """``small`` expanded to the shape of ``like``.

    Paddle's CPU elementwise kernels are about 3.5x slower when one operand
    broadcasts along an inner axis (a per-pixel statistic over channels) than
    an expand followed by the same operation on equal shapes: at full
    resolution that was a fifth of LLFormer's time. A portable graph
    broadcasts instead: paddle2onnx 2.1 writes ``expand_as`` with a free
    batch as an ONNX Expand to a size of -1, which ONNX Runtime rejects.
    """
    return small if is_portable_graph() else paddle.expand_as(small, like)


def _sum_over_rows(x, scale=1.0):
    """``scale * x.sum(axis=-2, keepdim=True)`` for (..., n, L) ``x``, as a product with a row of ``scale``.

    Paddle's CPU reduction over an axis other than the last runs on one
    thread: over the 16 channels of a 720x1280 map it took 11 ms, MKL's
    threaded product 1.7 ms.
    """
    return paddle.matmul(paddle.full([1, x.shape[-2]], scale, dtype=x.dtype), x)


def _channel_mean(x):
    """Mean over the channels of a (B, C, H, W) map, (B, 1, H, W)."""
    return _sum_over_rows(x.flatten(2), 1.0 / x.shape[1]).reshape([0, 1, x.shape[2], x.shape[3]])


def _centred_and_std(x):
    """x minus its channel mean, and the channel standard deviation (biased, as torch's
    var(unbiased=False), plus eps), expanded to x's shape."""
    centred = x - _full(_channel_mean(x), x)
    variance = _channel_mean(centred * centred)
    return centred, _full(paddle.sqrt(variance + LAYERNORM_EPS), x)


def _temporaries_reusable():
    """No gradient to compute and no graph being traced: a temporary may be overwritten in place.

    At full resolution each temporary of the norms and the FFN gate is a
    59-155 MB map; in place, inference holds several fewer at once, with the
    same values (the same operations in the same order).
    """
    return not paddle.is_grad_enabled() and not is_traced()


class WithBiasLayerNorm(nn.Layer):
    """LayerNorm over the channels of a (B, C, H, W) map: (x - mean) / std * weight + bias."""

    def __init__(self, dim):
        super().__init__()
        self.weight = _ones_parameter(self, [dim])
        self.bias = self.create_parameter([dim], default_initializer=nn.initializer.Constant(0.0))

    def forward(self, x):
        centred, std = _centred_and_std(x)
        if _temporaries_reusable():
            return centred.divide_(std).multiply_(channel_map(self.weight, x)).add_(channel_map(self.bias, x))
        normalised = centred / std
        return normalised * channel_map(self.weight, x) + channel_map(self.bias, x)


class BiasFreeLayerNorm(nn.Layer):
    """x / std * weight; the original does not subtract the mean here (its std does)."""

    def __init__(self, dim):
        super().__init__()
        self.weight = _ones_parameter(self, [dim])

    def forward(self, x):
        _, std = _centred_and_std(x)
        if _temporaries_reusable():
            return (x / std).multiply_(channel_map(self.weight, x))
        return x / std * channel_map(self.weight, x)


class LayerNorm(nn.Layer):
    """Holds the norm as ``body``, so keys read ``norm1.body.weight`` as in the original."""

    def __init__(self, dim, LayerNorm_type):
        super().__init__()
        self.body = BiasFreeLayerNorm(dim) if LayerNorm_type == "BiasFree" else WithBiasLayerNorm(dim)

    def forward(self, x):
        return self.body(x)


def _l2_norm(x):
    """Norm over axis -2 floored as ``F.normalize`` does (whose Paddle p_norm is 4x slower)."""
    return paddle.sqrt(_sum_over_rows(x * x)).clip(min=NORMALIZE_EPS)


def _normalised_queries_keys(q, k, fac):
    """(..., d, L) q and k L2-normalised over d (as ``F.normalize``), q also scaled by ``fac``."""
    return q * _full(fac / _l2_norm(q), q), k / _full(_l2_norm(k), k)


def _attend(q, k, v, fac):
    """Attention of (..., d, L) queries on (..., d, L) keys/values, returning (..., d, L).

    q and k are L2-normalised over d (as ``F.normalize``); the scores
    (..., L, L) get the scalar ``fac`` and no 1/sqrt(d).
    """
    q, k = _normalised_queries_keys(q, k, fac)
    scores = paddle.matmul(q, k, transpose_x=True)  # (..., L queries, L keys)
    # The scores are the largest tensor here: overwrite them with the softmax
    # (safe for autograd, matmul's backward needs only its inputs). A graph
    # has no in-place softmax_; its own inplace pass does this.
    softmax = F.softmax if is_traced() else F.softmax_
    probs = softmax(scores, axis=-1)
    return paddle.matmul(v, probs, transpose_y=True)


def axis_attention(q, k, v, fac, along_height, budget_bytes, training=False):
    """Self-attention along one image axis, in chunks of rows or columns.

    ``q``, ``k``, ``v``: (B*heads, d, H, W). ``along_height=False``: every row
    attends along W; True: every column along H. Rows (columns) are
    independent, so they are processed a chunk at a time, each chunk's scores
    (B*heads, n, L, L) staying within ``budget_bytes`` (n >= 1); only the
    chunk being processed is put into the (..., d, L) layout the matmuls need.
    A traced graph loops over the chunks at run time, except when ``training``
    (that loop passes no gradient) or for a portable graph (ONNX Runtime
    rejects the loop paddle2onnx writes): its chunks are then unrolled, which
    needs known sizes (training patches are small; at a 720x1280 tile the
    unrolled graph took minutes to trace). A portable graph may leave the
    batch free: its chunks then hold ``budget_bytes`` of scores per image and head.
    """
    line_axis = 3 if along_height else 2
    length_axis = 2 if along_height else 3
    # Row chunks: (B', d, n, W) <-> (B', n, d, W); column chunks: (B', d, H, n) <-> (B', n, d, H).
    to_lines = [0, 3, 1, 2] if along_height else [0, 2, 1, 3]
    from_lines = [0, 2, 3, 1] if along_height else [0, 2, 1, 3]
    itemsize = paddle.finfo(q.dtype).bits // 8

    def attend_lines(start=None, end=None):
        parts = (q, k, v) if start is None else (paddle.slice(t, [line_axis], [start], [end]) for t in (q, k, v))
        return _attend(*(t.transpose(to_lines) for t in parts), fac).transpose(from_lines)

    batch, length, count = q.shape[0], q.shape[length_axis], q.shape[line_axis]
    portable = is_portable_graph()
    if portable and not is_static_size(batch):
        batch = 1  # the free batch of an export: budget per image and head
    known = all(is_static_size(n) and n >= 0 for n in (batch, length, count))
    if portable and not known:
        raise ValueError(f"a portable graph needs the image size fixed at export, got H, W = {q.shape[2:]}")
    if is_traced() and not ((training or portable) and known):
        return _chunk_loop_graph(attend_lines, q, line_axis, length_axis, budget_bytes, itemsize)
    step = max(1, int(budget_bytes // (batch * length * length * itemsize)))
    if step >= count:
        return attend_lines()
    chunks = [attend_lines(start, start + step) for start in range(0, count, step)]
    return paddle.concat(chunks, axis=line_axis)


def _chunk_loop_graph(attend_lines, q, line_axis, length_axis, budget_bytes, itemsize):
    """The chunk loop of :func:`axis_attention` as a graph while-loop (H, W unknown when exporting).

    Inference only: Paddle 3.3.1 passes no gradient through this loop (a
    training graph, as ``train.to_static`` traces, unrolls the chunks instead). Each chunk's result is written into a preallocated output; the eager path
    concatenates instead, since an eager ``while_loop`` copies its loop
    variables on every iteration.
    """
    shape = paddle.shape(q)
    batch, length, count = shape[0], shape[length_axis], shape[line_axis]

    def scalar(value):  # (the *_like creators ask a graph value for its place, with a warning)
        return paddle.full([], value, dtype=shape.dtype)

    step = paddle.maximum(scalar(int(budget_bytes)) // (batch * length * length * itemsize), scalar(1))

    def body(start, out):
        end = paddle.minimum(start + step, count)
        index = (slice(None),) * line_axis + (slice(start, end),)
        return start + step, paddle.static.setitem(out, index, attend_lines(start, end))

    empty = paddle.zeros(shape, dtype=q.dtype)
    _, out = paddle.static.nn.while_loop(lambda start, _: start < count, body, [scalar(0), empty])
    return out


def _swap_last_axes(x):
    """``x`` (..., m, n) with its last two axes transposed, as a product with the smaller identity.

    Exact (products with one, sums of zeros), and MKL's blocked, threaded
    product moved (48, 360 * 640) maps 4x faster than Paddle's transpose.
    """
    rows, cols = x.shape[-2:]
    if rows <= cols:
        return paddle.matmul(x, paddle.eye(rows, dtype=x.dtype), transpose_x=True)
    return paddle.matmul(paddle.eye(cols, dtype=x.dtype), x, transpose_y=True)


def _row_tokens(q, k, v, fac):
    """(B', d, H, W) q, k, v -> (B' * H, W, 3, 1, d): every row's tokens channels-last, q and k normalised."""
    batch, dim, height, width = q.shape
    q, k = _normalised_queries_keys(q.flatten(2), k.flatten(2), fac)
    channels_first = paddle.concat([q, k, v.flatten(2)], axis=1)  # (B', 3d, H*W)
    return _swap_last_axes(channels_first).reshape([batch * height, width, 3, 1, dim])


def _fused_rows(q, k, v, fac):
    batch, dim, height, width = q.shape
    out = fused_attention(_row_tokens(q, k, v, fac), 1.0, 1)
    return _swap_last_axes(out.reshape([batch, height * width, dim])).reshape([batch, dim, height, width])


def fused_row_attention(q, k, v, fac):
    """:func:`axis_attention` along W through ``self_dp_attention`` (see :func:`fused_attention_runs`).

    q, k, v: (B', d, H, W). The kernel takes the tokens of one row after
    another, each token's q, k and v channels-last, and copies them twice;
    the rows go through it in chunks whose tokens stay within
    ``FUSED_TOKENS_BUDGET_MB`` (all rows at once raised an LLFormer tile's
    peak memory by 0.7 GiB).
    """
    batch, dim, height, width = q.shape
    row_bytes = batch * 3 * dim * width * paddle.finfo(q.dtype).bits // 8
    step = max(1, int(FUSED_TOKENS_BUDGET_MB * 2**20 // row_bytes))
    if step >= height:
        return _fused_rows(q, k, v, fac)
    chunks = [_fused_rows(*(t[:, :, start : start + step] for t in (q, k, v)), fac) for start in range(0, height, step)]
    return paddle.concat(chunks, axis=2)


class NextAttentionImplZ(nn.Layer):
    """One axis of the axis-based attention: qkv convs, attention along W (or H), 1x1 out."""

    def __init__(self, num_dims, num_heads, bias, along_height=False, attn_budget_mb=DEFAULT_ATTN_BUDGET_MB):
        super().__init__()
        self.num_heads = num_heads
        self.along_height = along_height
        self.budget_bytes = attn_budget_mb * 2**20
        self.q1 = _conv(num_dims, num_dims * 3, 1, bias)
        self.q2 = _conv(num_dims * 3, num_dims * 3, 3, bias, groups=num_dims * 3)
        self.q3 = _conv(num_dims * 3, num_dims * 3, 3, bias, groups=num_dims * 3)
        self.fac = _ones_parameter(self, [1])
        self.fin = _conv(num_dims, num_dims, 1, bias)

    def forward(self, x):
        if fused_attention_runs(x, self):
            return self._forward_fused(x)
        channels = x.shape[1]
        # The original runs the column attention on the transposed map; a 3x3
        # conv of the transposed map is the conv with the transposed kernel.
        qkv = split_projection(x, self.q1, [self.q2, self.q3], 3, transpose_kernels=self.along_height)
        # Channels are (heads, head_dim), so heads fold into the batch without
        # copying (0 in a shape keeps that axis' size).
        q, k, v = (t.reshape([-1, channels // self.num_heads, 0, 0]) for t in qkv)
        out = axis_attention(q, k, v, self.fac, self.along_height, self.budget_bytes, self.training)
        return self.fin(out.reshape([-1, channels, 0, 0]))

    def _forward_fused(self, x):
        """:meth:`forward` through :func:`fused_row_attention`.

        The column attention is the row attention of the transposed map, as
        in the original: transposing x and the output (C channels) is cheaper
        than bringing q, k and v (3C) into the kernel's column layout.
        """
        if self.along_height:
            x = x.transpose([0, 1, 3, 2])
        qkv = split_projection(x, self.q1, [self.q2, self.q3], 3)
        channels = x.shape[1]
        q, k, v = (t.reshape([-1, channels // self.num_heads, 0, 0]) for t in qkv)
        out = self.fin(fused_row_attention(q, k, v, self.fac).reshape([-1, channels, 0, 0]))
        return out.transpose([0, 1, 3, 2]) if self.along_height else out


class NextAttentionZ(nn.Layer):
    """Row attention (along W), then column attention (along H), as the code orders them."""

    def __init__(self, num_dims, num_heads=1, bias=True, attn_budget_mb=DEFAULT_ATTN_BUDGET_MB):
        super().__init__()
        if num_dims % num_heads:
            raise ValueError(f"num_dims {num_dims} is not divisible by num_heads {num_heads}")
        self.row_att = NextAttentionImplZ(num_dims, num_heads, bias, False, attn_budget_mb)
        self.col_att = NextAttentionImplZ(num_dims, num_heads, bias, True, attn_budget_mb)

    def forward(self, x):
        return self.col_att(self.row_att(x))


class FeedForward(nn.Layer):
    """Dual gated feed-forward network: each half gates the other through GELU."""

    def __init__(self, dim, ffn_expansion_factor, bias):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = _conv(dim, hidden * 2, 1, bias)
        self.dwconv = _conv(hidden * 2, hidden * 2, 3, bias, groups=hidden * 2)
        self.project_out = _conv(hidden, dim, 1, bias)

    def forward(self, x):
        x1, x2 = split_projection(x, self.project_in, [self.dwconv], 2)
        if _temporaries_reusable():
            gated = F.gelu(x2).multiply_(x1)
            x1 = F.gelu(x1).multiply_(x2)  # rebinding x1 frees the first half
            return self.project_out(gated.add_(x1))
        return self.project_out(F.gelu(x2) * x1 + F.gelu(x1) * x2)


class TransformerBlock(nn.Layer):
    """``x + attn(norm1(x))``, then ``x + ffn(norm2(x))``.

    With ``recompute``, training keeps only the block's input for the backward
    and runs the block's forward again there (activation recomputation).
    """

    def __init__(self, dim, num_heads, ffn_expansion_factor, bias, LayerNorm_type, attn_budget_mb=DEFAULT_ATTN_BUDGET_MB,
                 recompute=False):
        super().__init__()
        self.recompute = recompute
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        # The original builds the attention with its default bias=True, not ``bias``.
        self.attn = NextAttentionZ(dim, num_heads, attn_budget_mb=attn_budget_mb)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x):
        if self.recompute and self.training and not x.stop_gradient:
            return recompute(self._residuals, x)
        return self._residuals(x)

    def _residuals(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Layer):
    def __init__(self, in_c, embed_dim, bias=False):
        super().__init__()
        self.proj = _conv(in_c, embed_dim, 3, bias)

    def forward(self, x):
        return self.proj(x)


class Downsample(nn.Layer):
    def __init__(self, n_feat):
        super().__init__()
        self.body = nn.Sequential(_conv(n_feat, n_feat // 2, 3, False), PixelUnshuffle(2))

    def forward(self, x):
        return self.body(x)


class Upsample(nn.Layer):
    def __init__(self, n_feat):
        super().__init__()
        self.body = nn.Sequential(_conv(n_feat, n_feat * 2, 3, False), nn.PixelShuffle(2))

    def forward(self, x):
        return self.body(x)


def _token_norms(tokens):
    """L2 norms of the rows of (B, N, L) ``tokens``, floored as ``F.normalize`` does.

    The diagonal of the N x N Gram matrix is taken as the row sums of its
    product with the identity (exact: products with 1 and 0, sums with 0),
    since paddle2onnx 2.1 has no ``diagonal``.
    """
    gram = paddle.matmul(tokens, tokens, transpose_y=True)
    diagonal = (gram * paddle.eye(gram.shape[-1], dtype=gram.dtype)).sum(axis=-1)
    return paddle.sqrt(diagonal).clip(min=NORMALIZE_EPS)


class LAM_Module_v2(nn.Layer):
    """Layer attention over N stacked maps given as (B, N*C, H, W): each map is one token."""

    def __init__(self, in_dim, num_layers=3, bias=True):
        super().__init__()
        self.num_layers = num_layers
        self.temperature = _ones_parameter(self, [1])
        self.qkv = _conv(in_dim, in_dim * 3, 1, bias)
        self.qkv_dwconv = _conv(in_dim * 3, in_dim * 3, 3, bias, groups=in_dim * 3)
        self.project_out = _conv(in_dim, in_dim, 1, bias)

    def _projection(self, x, index):
        return projection_part(x, self.qkv, [self.qkv_dwconv], index, 3).reshape([0, self.num_layers, -1])

    def forward(self, x):
        # q and k are needed only for the N x N scores, and v only after: computed
        # in turn, two of these full-resolution maps are held at once, not three.
        q, k = self._projection(x, 0), self._projection(x, 1)
        # normalize(q) @ normalize(k)^T, with the norms taken from the diagonals
        # of q q^T and k k^T: each token has C*H*W elements (15M for one
        # 720x1280 tile), and Paddle's CPU p_norm/sum add them up one by one
        # (relative error 4e-5 already at 256x256, which the temperature and
        # softmax amplify), while matmul accumulates in blocks. It also spares
        # two full-size normalised copies.
        norms = _token_norms(q).unsqueeze(-1) * _token_norms(k).unsqueeze(-2)
        cosine = paddle.matmul(q, k, transpose_y=True) / norms
        del q, k
        attn = F.softmax(cosine * self.temperature, axis=-1)
        v = self._projection(x, 2)
        out = paddle.matmul(attn, v).reshape([-1, *x.shape[1:]])  # keeps the sizes fixed at export known
        return self.project_out(out) + x


class LLFormer(nn.Layer):
    """LLFormer; the defaults are the official constructor's (see the module docstring).

    Args: as the official constructor, plus
        attn_budget_mb: the most memory (MiB) the axis attention's scores may
            take at once; rows/columns are processed in chunks to stay within it
            (at least one row or column per chunk).
        recompute: in training, keep only each transformer block's input for
            the backward and recompute the rest there. The paper's batch of 12
            128x128 crops then needs about 3 GiB instead of about 30.
    """

    def __init__(
        self,
        inp_channels=3,
        out_channels=3,
        dim=16,
        num_blocks=(1, 2, 4, 8),
        num_refinement_blocks=2,
        heads=(1, 2, 4, 8),
        ffn_expansion_factor=2.66,
        bias=False,
        LayerNorm_type="WithBias",
        attention=True,
        skip=False,
        attn_budget_mb=DEFAULT_ATTN_BUDGET_MB,
        recompute=False,
    ):
        super().__init__()
        self.info = ModelInfo("enhancement", input_multiple=SIZE_MULTIPLE, eval_transforms=WHOLE_IMAGE)
        self.skip = skip

        def stage(width, num_heads, depth):
            return nn.Sequential(
                *[
                    TransformerBlock(width, num_heads, ffn_expansion_factor, bias, LayerNorm_type, attn_budget_mb,
                                     recompute)
                    for _ in range(depth)
                ]
            )

        def skip_weights(width):
            # Trainable only with ``attention`` (the original's requires_grad=attention).
            return _ones_parameter(self, [2, width], trainable=attention)

        # Never used in forward; kept for the state_dict (and the parameter count).
        self.coefficient = _ones_parameter(self, [4, 2, dim * 8], trainable=attention)

        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_1 = stage(dim, heads[0], num_blocks[0])
        self.encoder_2 = stage(dim, heads[0], num_blocks[0])
        self.encoder_3 = stage(dim, heads[0], num_blocks[0])
        self.layer_fussion = LAM_Module_v2(dim * 3)
        self.conv_fuss = _conv(dim * 3, dim, 1, bias)
        self.latent = stage(dim, heads[0], num_blocks[0])

        self.down_1 = Downsample(dim)
        self.decoder_level1_0 = stage(dim * 2, heads[1], num_blocks[0])
        self.down_2 = Downsample(dim * 2)
        self.decoder_level2_0 = stage(dim * 4, heads[2], num_blocks[1])
        self.down_3 = Downsample(dim * 4)
        self.decoder_level3_0 = stage(dim * 8, heads[3], num_blocks[2])
        self.down_4 = Downsample(dim * 8)
        self.decoder_level4 = stage(dim * 16, heads[3], num_blocks[3])

        self.up4_3 = Upsample(dim * 16)
        self.decoder_level3_1 = stage(dim * 8, heads[3], num_blocks[2])
        self.up3_2 = Upsample(dim * 8)
        self.decoder_level2_1 = stage(dim * 4, heads[2], num_blocks[1])
        self.up2_1 = Upsample(dim * 4)
        self.decoder_level1_1 = stage(dim * 2, heads[1], num_blocks[0])
        self.up2_0 = Upsample(dim * 2)

        self.coefficient_4_3 = skip_weights(dim * 8)
        self.coefficient_3_2 = skip_weights(dim * 4)
        self.coefficient_2_1 = skip_weights(dim * 2)
        self.coefficient_1_0 = skip_weights(dim)
        self.skip_4_3 = _conv(dim * 8, dim * 8, 1, bias)
        self.skip_3_2 = _conv(dim * 4, dim * 4, 1, bias)
        self.skip_2_1 = _conv(dim * 2, dim * 2, 1, bias)  # never used: level 1 uses skip_1_0
        self.skip_1_0 = _conv(dim * 2, dim * 2, 1, bias)

        self.refinement_1 = stage(dim, heads[0], num_refinement_blocks)
        self.refinement_2 = stage(dim, heads[0], num_refinement_blocks)
        self.refinement_3 = stage(dim, heads[0], num_refinement_blocks)
        self.layer_fussion_2 = LAM_Module_v2(dim * 3)
        self.conv_fuss_2 = _conv(dim * 3, dim, 1, bias)
        self.output = _conv(dim, out_channels, 3, bias)

    @staticmethod
    def _mix(weights, encoder, decoder):
        """``weights[0] * encoder + weights[1] * decoder`` with per-channel weights."""
        return channel_map(weights[0], encoder) * encoder + channel_map(weights[1], decoder) * decoder

    @staticmethod
    def _stacked(stages, x):
        """Run the stages one after another; their outputs concatenated along channels.

        Only the concatenation outlives the call, so the separate full-resolution
        outputs are not held through the rest of the network.
        """
        outputs = []
        for stage in stages:
            x = stage(x)
            outputs.append(x)
        return paddle.concat(outputs, axis=1)

    def forward_aligned(self, inp_img):
        """The original network; H and W must be multiples of 16."""
        encoders = [self.encoder_1, self.encoder_2, self.encoder_3]
        fused = self.conv_fuss(self.layer_fussion(self._stacked(encoders, self.patch_embed(inp_img))))

        level1 = self.decoder_level1_0(self.down_1(fused))
        level2 = self.decoder_level2_0(self.down_2(level1))
        level3 = self.decoder_level3_0(self.down_3(level2))
        level4 = self.decoder_level4(self.down_4(level3))

        x = self.skip_4_3(self._mix(self.coefficient_4_3, level3, self.up4_3(level4)))
        x = self.skip_3_2(self._mix(self.coefficient_3_2, level2, self.up3_2(self.decoder_level3_1(x))))
        x = self.skip_1_0(self._mix(self.coefficient_2_1, level1, self.up2_1(self.decoder_level2_1(x))))
        x = self._mix(self.coefficient_1_0, self.latent(fused), self.up2_0(self.decoder_level1_1(x)))

        refinements = [self.refinement_1, self.refinement_2, self.refinement_3]
        out = self.output(self.conv_fuss_2(self.layer_fussion_2(self._stacked(refinements, x))))
        return out + inp_img if self.skip else out

    def forward(self, inp_img):
        """Any H, W: reflect-pad bottom/right to multiples of 16, run, crop back."""
        height, width = inp_img.shape[2], inp_img.shape[3]  # graph values when exported with free H/W
        padded = reflect_pad_to_multiple(inp_img, SIZE_MULTIPLE)
        if padded is inp_img:
            return self.forward_aligned(inp_img)
        return self.forward_aligned(padded)[:, :, :height, :width]


MODELS.register(LLFormer)

# The configuration of every official train/test script (the paper's model).
register_variant(
    "llformer",
    LLFormer,
    dim=16,
    num_blocks=[2, 4, 8, 16],
    num_refinement_blocks=2,
    heads=[1, 2, 4, 8],
    ffn_expansion_factor=2.66,
    bias=False,
    LayerNorm_type="WithBias",
    attention=True,
    skip=False,
)
