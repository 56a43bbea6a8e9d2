"""Workarounds for Paddle 3.3.1, in one place.

Each says which Paddle behaviour it works around and how it showed here, so
that when a Paddle release fixes it, the workaround can be deleted here and
its callers go back to Paddle's own operator. None of them changes results:
each computes what the operator it replaces computes (tests compare them).

Three questions the models ask while running:

* :func:`is_traced`: is this code being traced into a static graph
  (``paddle.jit.to_static`` for export) rather than run eagerly?
* :func:`is_static_size`: is this size a Python int? Always in eager mode; in
  a traced graph only for dimensions fixed at export (an image size exported
  as free is a run-time value there).
* :func:`is_portable_graph`: is the graph being traced for another runtime
  (ONNX, through paddle2onnx), inside :func:`portable_graph`? Such a graph
  has fixed image sizes and may use only operators every runtime has: no
  complex tensors (FFTs), no graph loops (ONNX Runtime rejects the loops
  paddle2onnx writes for them), no ``diagonal``.
"""

import contextlib
import contextvars
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


def is_traced():
    """True while ``paddle.jit.to_static`` traces the code into a graph."""
    return not paddle.in_dynamic_mode()


def is_static_size(value):
    """True for a size known now (a Python int), False for a run-time value of a traced graph."""
    return isinstance(value, int)


_PORTABLE = contextvars.ContextVar("ppuhd_portable_graph", default=False)


@contextlib.contextmanager
def portable_graph():
    """Within this block, graphs traced by ``paddle.jit.to_static`` take their portable form.

    Wrap the tracing call (``paddle.jit.save`` of a ``to_static`` layer, which
    traces it). The setting belongs to the current context only (a
    ``contextvars`` variable) and is restored on leaving.
    """
    token = _PORTABLE.set(True)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def is_portable_graph():
    """True while tracing inside :func:`portable_graph` (never in eager mode)."""
    return is_traced() and _PORTABLE.get()


def atan2(y, x):
    """``paddle.atan2(y, x)`` from ``atan`` and ``where``: what a portable graph uses.

    paddle2onnx 2.1 writes ``atan2`` as ``atan(y / x) + sign(y) * pi`` for
    x < 0, which is 0 instead of pi for y = 0 (the phase of a negative real
    number, as every negative DC bin of an FFT is) and NaN at (0, 0). Here:
    y = +-0 with x < 0 gives +pi (``torch.angle`` of a negative real), x = 0
    gives +-pi/2 by the sign of y, and (0, 0) gives 0.
    """
    angle = paddle.atan(y / paddle.where(x == 0, 1.0, x))
    half_turn = math.pi * (2 * paddle.cast(y >= 0, y.dtype) - 1)  # +pi for y >= 0 (+0 and -0), else -pi
    angle = paddle.where(x < 0, angle + half_turn, angle)
    return paddle.where(x == 0, paddle.sign(y) * (math.pi / 2), angle)


def as_float32(size):
    """A size (a Python int, or a run-time value when traced) as a float32 scalar tensor."""
    return paddle.full([], size, "float32") if is_static_size(size) else paddle.cast(size, "float32")


def reflect_pad_to_multiple(x, multiple):
    """``x`` (N, C, H, W) reflect-padded at the bottom and right to multiples of ``multiple``.

    Unchanged when the sizes are known to be multiples already. Crop the
    result back with ``[:, :, :H, :W]``.
    """
    height, width = x.shape[2], x.shape[3]
    pad_h, pad_w = -height % multiple, -width % multiple
    if is_static_size(pad_h) and is_static_size(pad_w) and pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, [0, pad_w, 0, pad_h], mode="reflect")


def pixel_unshuffle(x, factor):
    """PyTorch's ``nn.PixelUnshuffle(factor)`` by reshape and transpose (the same data movement).

    Paddle 3.3.1's ``pixel_unshuffle`` rejects unknown H and W, so a model
    using it cannot be exported with free image sizes. Output channel
    ``c * f * f + i * f + j`` holds pixel offset (i, j) of each f x f cell of
    input channel c.
    """
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]  # no -1: sizes known at export stay known
    x = x.reshape([0, channels, height // factor, factor, width // factor, factor])  # (B, C, H/f, i, W/f, j)
    return x.transpose([0, 1, 3, 5, 2, 4]).reshape([0, channels * factor * factor, height // factor, width // factor])


class PixelUnshuffle(nn.Layer):
    """:func:`pixel_unshuffle` as a layer (no parameters)."""

    def __init__(self, downscale_factor):
        super().__init__()
        self.factor = downscale_factor

    def forward(self, x):
        return pixel_unshuffle(x, self.factor)


class LeakyReLU(nn.LeakyReLU):
    """``nn.LeakyReLU``, written as max(x, slope * x) in a traced graph.

    Same values (0 <= slope <= 1). Paddle 3.3.1's oneDNN inference pass that
    fuses conv + leaky_relu (``conv_activation_mkldnn_fuse_pass``) crashes
    the process with a segmentation fault on UHDFour; this pattern is not
    fused. Eager execution (training, dygraph inference) keeps the single
    fast kernel.
    """

    def forward(self, x):
        if not is_traced():
            return super().forward(x)
        return paddle.maximum(x, x * self._negative_slope)


def _linear_taps(out_size, in_size):
    """Source pixels and weights of PyTorch's 1-D linear resize, align_corners False.

    Half-pixel centres: source = (i + 0.5) * in/out - 0.5, clamped at 0 (in
    float32, as PyTorch computes it); output i weighs its floor and the next
    pixel (the last pixel is repeated at the end). Returns (first, second,
    weight of second).
    """
    scale = as_float32(in_size) / as_float32(out_size)
    src = paddle.clip((paddle.arange(out_size, dtype="float32") + 0.5) * scale - 0.5, min=0.0)
    first = paddle.floor(src)
    frac = src - first
    first = paddle.cast(first, "int64")
    second = first + paddle.cast(first < in_size - 1, "int64")
    return first, second, frac


def resize_bilinear(x, size):
    """PyTorch's ``F.interpolate(x, size, mode='bilinear', align_corners=False)``, from gathers.

    Along W, then along H, as PyTorch combines them; ``size`` may hold
    run-time values. Paddle 3.3.1's own ``bilinear_interp`` fails in
    ``paddle.inference`` with oneDNN, and so would products with
    interpolation matrices: oneDNN's matmul misreads a conv's output there.

    The row weights are a full [H, W] plane, not an [H, 1] column: oneDNN's
    element-wise product broadcasts an operand of shape [H, 1] (over N, C
    and W) through a slow generic path: 0.3 s for one 3-channel 1080p
    product, 15 times a same-shape one (UHDFour's exported graph spent 36%
    of its time there).
    """
    first, second, frac = _linear_taps(size[1], x.shape[3])
    x = paddle.index_select(x, first, axis=3) * (1.0 - frac) + paddle.index_select(x, second, axis=3) * frac
    first, second, frac = _linear_taps(size[0], x.shape[2])
    frac = frac.unsqueeze(1).expand([size[0], x.shape[3]])
    return paddle.index_select(x, first, axis=2) * (1.0 - frac) + paddle.index_select(x, second, axis=2) * frac


def channel_map(param, like):
    """A per-channel parameter (C,) shaped to combine elementwise with a (B, C, H, W) map ``like``.

    Run eagerly on a CPU it is expanded to ``like``'s full shape: Paddle 3.3.1's
    CPU elementwise kernels broadcast an operand along inner axes through a slow
    path (a (1, C, 1, 1) bias added to a 12x16x128x128 map: 27 ms, against 2.8 ms
    for expand + an add of equal shapes; with the backward, 68 ms against 17).
    Graphs keep the broadcast, which their passes fuse into the convolution.
    """
    param = param.reshape([1, -1, 1, 1])
    if is_traced() or not like.place.is_cpu_place():
        return param
    return paddle.expand_as(param, like)


def conv2d(x, weight, bias=None, **options):
    """``F.conv2d`` of an NCHW map, adding the bias through :func:`channel_map` (the same sum, faster on a CPU)."""
    y = F.conv2d(x, weight, None, **options)
    return y if bias is None else y + channel_map(bias, y)


class Conv2D(nn.Conv2D):
    """``nn.Conv2D`` adding its bias through :func:`channel_map` (the same sum, faster on a CPU)."""

    def forward(self, x):
        if self._padding_mode != "zeros" or self._data_format != "NCHW":
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, stride=self._stride, padding=self._padding,
                      dilation=self._dilation, groups=self._groups)


class Linear(nn.Linear):
    """``nn.Linear`` that adds its bias as a matrix product on a CPU.

    Paddle 3.3.1's CPU backward of the broadcast bias add sums the rows of the
    output gradient on one thread: about a fifth of a DeiT-S training step.
    Adding the bias as ``ones @ bias`` gives the same output (1 * b is exact)
    and turns that sum into a product, which runs on all cores. In inference
    the broadcast add itself is the slow part: ``ones @ bias`` plus an add of
    equal shapes took 1.8 ms where the broadcast add took 2.3 ms (DeiT-Ti's
    fc1, batch 8). Graphs and GPUs take the plain path.
    """

    def forward(self, x):
        if self.bias is None or is_traced() or not x.place.is_cpu_place():
            return super().forward(x)
        y = paddle.matmul(x, self.weight)
        ones = paddle.ones([y.size // y.shape[-1], 1], dtype=y.dtype)
        return y + paddle.matmul(ones, self.bias.unsqueeze(0)).reshape(y.shape)
