"""UHDFour (Li et al., "Embedding Fourier for Ultra-High-Definition Low-Light
Image Enhancement", ICLR 2023), ported from the official ``InteractNet``.

Two branches, one image:

* Low branch (``lownet``), at 1/f resolution: the RGB image goes through a
  1x1 conv (3 -> 8, ``extract``) and a bilinear downsampling by f, then a
  small U-Net of five FouSpa blocks (``ProcessBlock``) of widths c, 2c, 3c,
  2c, c (c = 192): stride-2 2x2 convs down, bilinear resize + concat + 1x1
  transposed conv up. A 1x1 conv maps to 3*f^2 channels; its 2-D real FFT
  gives an amplitude and a phase, each through a 1x1 conv (``transamp``,
  ``transpha``), for the high branch; a last 1x1 conv gives the 1/f RGB
  output ``y_down``.
* High branch (``highnet``): PixelUnshuffle(f) of the raw RGB (3*f^2
  channels at 1/f resolution) -> one ``ProcessBlockAdjust`` that modulates
  its amplitude spectrum with the low branch's amplitude (SFT) and fuses its
  phase with the low branch's phase -> PixelShuffle(f) -> 3x3 conv; that is
  concatenated with ``y_down`` bilinearly upsampled by f, then 1x1 conv
  (6 -> 16) and 3x3 conv (-> 3). No final activation, residual or clamp.
* FouSpa block: ``x + cat(spatial(x), irfft2(freq(rfft2(x))))`` fused by a
  1x1 conv. Spatial part = an invertible coupling block
  (``y1 = x1 + F(x2)``, ``s = 0.8 (2 sigmoid(H(y1)) - 1)``,
  ``y2 = x2 exp(s) + G(y1)``, plus a skip) whose F, G, H are two-conv blocks
  with a half instance norm (``InstanceNorm2d(C/2, affine)`` on the first
  half of the channels, eps 1e-5) and LeakyReLU 0.1. Frequency part = two
  1x1-conv MLPs (conv, LeakyReLU 0.1, conv) on |X| and angle(X), recombined
  as mag*cos(pha) + i mag*sin(pha); no eps, no clamp.

Two official variants, both here: ``uhdfour_uhd`` (``EnhanceN_arch.py``,
f = 8, tail 6 -> 16 -> 3) and ``uhdfour_lol`` (``EnhanceN_arch_LOL.py``,
f = 2, two more FouSpa blocks ``conv3``/``conv4`` after the adjust block and
a tail 6 -> 32 -> 32 -> 32 -> 3). The high branch's width is always 3*f^2;
the low branch's width, the extract width and the tail width are arguments,
so a narrow model can be built for a CPU demo.

Quirks of the official code, kept: the paper's figure draws four U-Net
blocks, the code has five; the LOL tail's ``con_temp1``/``con_temp2`` run
without activation between them (a purely linear chain); the SFT's 3x3 convs
slide over the amplitude *spectrum* (zero padding, no wrap-around); the phase
fusion concatenates the low branch's phase first; the low branch of the LOL
model maps to 12 channels however wide it is.

Parameter names equal the official state_dict's (minus ``module.``), so
:func:`ppuhd.weights.convert_torch_state_dict` converts a checkpoint. Modules
the official code builds but never calls in ``forward`` are **not** built
here (the UHD checkpoint stores 33.6M parameters of which 17.5M are used):
``frequency_spatial`` and ``spatial_frequency`` in every block, and in the
UHD variant the high branch's ``conv3``/``conv4`` (whole FouSpa blocks) and
``con_temp1``/``con_temp2``. Their PyTorch keys are listed, precisely, in
``torch_ignored_keys``: conversion drops exactly them and still fails on any
other missing or unexpected key.

Differences in formulation (same numbers; checked against PyTorch):

* ``irfft2(X, s=(H, W))`` cannot be exported with a run-time ``s`` in Paddle
  3.3.1. In exported graphs it is ``real(ifft2(X'))``, X' = the half
  spectrum with every column but the DC and (even W) Nyquist one doubled,
  zero-filled to W columns. This equals the C2R transform for *any* half
  spectrum, also the non-Hermitian ones the MLPs produce (the imaginary parts
  of the DC and Nyquist columns are ignored, as torch and numpy do). Dygraph
  uses Paddle's own (faster) ``irfft2``.
* Paddle's ``rfft2`` leaves rounding noise (+-1e-7) in the imaginary part of
  the bins that are real in exact arithmetic (row 0 or H/2, column 0 or W/2),
  where PyTorch returns exactly +0. For a negative real bin the phase then
  flips between +pi and -pi, and the phase MLP amplifies that (1e-4 errors
  on the LOL fixtures). Those bins' imaginary parts are set to +0, the exact
  value.
* ``extract`` (1x1) followed by the bilinear 1/f downsampling (half-pixel
  centres: the mean of the central 2x2 pixels of each f x f cell) is computed
  as one stride-f conv whose kernel is the product of both: no full-resolution
  feature map of 8 channels is ever made. Both steps are linear and the
  bilinear weights sum to 1, so this is exact.
* The full-resolution 3x3 convs of the tail run in horizontal stripes in
  dygraph: Paddle's eager CPU conv unfolds its whole input 9-fold (im2col),
  4.7 GB for the 16-channel map of a 4K frame.

Workarounds for Paddle 3.3.1 bugs met when exporting with run-time H and W
and running ``paddle.inference`` (oneDNN, its CPU default) keep the numbers:
bilinear resizes, PixelUnshuffle and LeakyReLU come from
:mod:`ppuhd.paddle_compat` (where each bug is described); the U-Net's 1x1
``ConvTranspose2d`` layers are applied as the equal 1x1 convs (slicing
channels of a transposed conv's output fails).

Any input size: ``forward`` reflect-pads H and W (bottom, right) to a
multiple of f and crops ``y`` back to the input's size and ``y_down`` to
ceil(H/f) x ceil(W/f); the sides must be at least 4f (the U-Net halves the
1/f image twice). The official test instead crops the input (and the ground
truth) to a multiple of 8 at the top left (``padding = 8`` in its
``ValData``, for UHD and LOL alike): the ``CropToMultiple`` transform
reproduces that (``configs/uhdfour/uhdfour_uhdll_official_test.yml``), and
``pad_input=False`` (or :meth:`UHDFour.forward_unpadded`) runs the network as
the original does.

Initialisation follows PyTorch's defaults (uniform +-1/sqrt(fan_in) for every
conv and transposed conv weight and bias, instance-norm affine = ones/zeros),
so training from scratch starts like the original.
"""

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..contract import ModelInfo
from ..paddle_compat import (LeakyReLU, atan2, is_portable_graph, is_static_size, is_traced, pixel_unshuffle,
                             reflect_pad_to_multiple, resize_bilinear)
from ..registry import MODELS
from .layers import torch_default_init_
from .preprocessing import WHOLE_IMAGE
from .variants import register_variant

# --------------------------------------------------------------------------
# Exportable FFT and resize helpers
# --------------------------------------------------------------------------


def _real_bins(length, count):
    """Bool [count]: which of the first ``count`` DFT bins of a real signal of ``length`` samples are real.

    Bin k is its own mirror image (k = -k mod length) for k = 0 and, when the
    length is even, k = length/2. ``length`` may be a run-time value.
    """
    k = paddle.arange(count)
    return (k == 0) | (k * 2 == length)


def _exactly_real(height, width):
    """Bool [H, W // 2 + 1]: the bins of ``rfft2`` of a real H x W signal that are real in exact arithmetic."""
    return _real_bins(height, height).unsqueeze(1) & _real_bins(width, width // 2 + 1).unsqueeze(0)


def rfft2_polar(x):
    """Amplitude and phase of ``rfft2(x)`` (norm 'backward') of a real [N, C, H, W] tensor.

    The bins that are real in exact arithmetic get an imaginary part of
    exactly +0 (Paddle leaves rounding noise there, PyTorch does not), so a
    negative one has phase +pi, not +-pi at random. A portable graph
    (:func:`ppuhd.paddle_compat.portable_graph`) computes it as
    :func:`rfft2_polar_matmul`.
    """
    if is_portable_graph():
        return rfft2_polar_matmul(x)
    h, w = x.shape[-2], x.shape[-1]
    spec = paddle.fft.rfft2(x)
    spec = paddle.complex(spec.real(), paddle.where(_exactly_real(h, w), 0.0, spec.imag()))
    return paddle.abs(spec), paddle.angle(spec)


def _dft_cos_sin(length, bins):
    """[bins, length] float64 cos and sin of 2 pi k n / length (k < bins), the sines that are 0 exactly 0.

    k n is reduced modulo ``length`` in integers first, so every entry is
    accurate to float64 rounding however large k n gets; sin(pi) would
    otherwise be 1e-16, not 0.
    """
    turns = (np.arange(bins)[:, None] * np.arange(length)[None, :]) % length
    angle = 2 * np.pi * turns / length
    return np.cos(angle), np.where(2 * turns % length == 0, 0.0, np.sin(angle))


def _require_static_sizes(*sizes):
    if not all(is_static_size(n) for n in sizes):
        raise ValueError(f"the DFT as matrix products needs sizes known now (fixed at export), got {sizes}")


def _constant(array, like):
    return paddle.to_tensor(array, dtype=like.dtype)


def _dft_along_height(x):
    """[cos; sin] (2H x H) times ``x`` along its H axis: ``x`` [N, C, H, L] -> [N, C, 2H, L]."""
    cos, sin = _dft_cos_sin(x.shape[2], x.shape[2])
    return paddle.matmul(_constant(np.concatenate([cos, sin]), x), x)


def rfft2_polar_matmul(x):
    """:func:`rfft2_polar` as real matrix products (sizes known now), for graphs without complex numbers.

    With a = 2 pi k n / H and b = 2 pi l m / W, ``rfft2(x)[k, l]`` is
    sum x (cos a cos b - sin a sin b) - i sum x (sin a cos b + cos a sin b):
    one product with [cos b | sin b] along W, one with [cos a; sin a] along
    H, and the four blocks combined. The amplitude is sqrt(re^2 + im^2), the
    phase :func:`ppuhd.paddle_compat.atan2` of the parts, with the exactly
    real bins' imaginary part set to +0 as in :func:`rfft2_polar` (a
    negative one has phase +pi, as ``torch.angle`` gives).
    """
    h, w = x.shape[-2], x.shape[-1]
    _require_static_sizes(h, w)
    bins = w // 2 + 1
    cos_w, sin_w = _dft_cos_sin(w, bins)
    blocks = _dft_along_height(paddle.matmul(x, _constant(np.concatenate([cos_w, sin_w]).T, x)))  # [N, C, 2H, 2B]
    real = blocks[:, :, :h, :bins] - blocks[:, :, h:, bins:]
    imag = paddle.where(_exactly_real(h, w), 0.0, -(blocks[:, :, :h, bins:] + blocks[:, :, h:, :bins]))
    return paddle.sqrt(real * real + imag * imag), atan2(imag, real)


def irfft2_polar(mag, pha, width):
    """``torch.fft.irfft2(mag * exp(i pha), s=(H, width))`` (norm 'backward'), exportable.

    ``mag``/``pha``: [N, C, H, width // 2 + 1], any values (the spectrum need
    not be Hermitian). With a Python int ``width`` (dygraph) this is Paddle's
    ``irfft2``, which treats such spectra as PyTorch does. With a run-time
    ``width`` (an exported graph, where ``irfft2`` cannot take it) it is
    computed from a complex inverse FFT: irfft2 = inverse FFT along H, then
    per row the C2R transform along W, ``real(sum_k c_k Z_k e^{2 pi i k n/W}) / W``
    with c_k = 1 for the DC and (even W) Nyquist bin and 2 for the others
    (their mirror images contribute the conjugate). So: weight the columns,
    zero-fill to W columns, inverse FFT, real part.
    """
    if is_portable_graph():
        return irfft2_polar_matmul(mag, pha, width)
    if is_static_size(width):  # 3x faster, and half the memory
        return paddle.fft.irfft2(paddle.complex(mag * paddle.cos(pha), mag * paddle.sin(pha)), s=(mag.shape[2], width))
    bins = mag.shape[-1]
    mag = mag * paddle.where(_real_bins(width, bins), 1.0, 2.0)
    filler = paddle.zeros([mag.shape[0], mag.shape[1], mag.shape[2], width - bins], mag.dtype)
    real = paddle.concat([mag * paddle.cos(pha), filler], axis=-1)
    imag = paddle.concat([mag * paddle.sin(pha), filler], axis=-1)
    return paddle.fft.ifft2(paddle.complex(real, imag)).real()


def irfft2_polar_matmul(mag, pha, width):
    """:func:`irfft2_polar` as real matrix products (sizes known now), for graphs without complex numbers.

    The spectrum Z = mag (cos pha + i sin pha); inverse along H, U = [cos a; sin a]
    times [Re Z | Im Z] combined as Re U = cos Re Z - sin Im Z and
    Im U = cos Im Z + sin Re Z; then the C2R transform along W,
    sum_l c_l (Re U cos b - Im U sin b) / (H W), with c_l as in
    :func:`irfft2_polar`, is one product with a [2B, W] matrix (the DC and
    Nyquist columns' sines are 0, so their imaginary parts are ignored, as
    torch does).
    """
    h, bins = mag.shape[-2], mag.shape[-1]
    _require_static_sizes(h, width)
    blocks = _dft_along_height(paddle.concat([mag * paddle.cos(pha), mag * paddle.sin(pha)], axis=-1))
    real = blocks[:, :, :h, :bins] - blocks[:, :, h:, bins:]
    imag = blocks[:, :, :h, bins:] + blocks[:, :, h:, :bins]
    cos_w, sin_w = _dft_cos_sin(width, bins)
    weights = np.full((bins, 1), 2.0)  # a column stands for itself and its mirror image
    weights[0] = 1.0  # DC
    if width % 2 == 0:
        weights[-1] = 1.0  # Nyquist
    weights /= h * width
    inverse_w = np.concatenate([weights * cos_w, -weights * sin_w])  # [2B, W]
    return paddle.matmul(paddle.concat([real, imag], axis=-1), _constant(inverse_w, mag))


def _downsample_kernel(factor):
    """[factor, factor] weights of PyTorch's bilinear downsampling by an even integer factor.

    Output pixel i samples at (i + 0.5) * factor - 0.5 = factor*i + factor/2 - 0.5:
    the mean of the two central rows and columns of each cell.
    """
    taps = np.zeros(factor, np.float32)
    taps[factor // 2 - 1 : factor // 2 + 1] = 0.5
    return np.outer(taps, taps)


# --------------------------------------------------------------------------
# FouSpa blocks
# --------------------------------------------------------------------------


class UNetConvBlock(nn.Layer):
    """3x3 conv, half instance norm, LeakyReLU, 3x3 conv, LeakyReLU, plus a 1x1 skip."""

    def __init__(self, in_size, out_size, relu_slope=0.1):
        super().__init__()
        self.identity = nn.Conv2D(in_size, out_size, 1)
        self.conv_1 = nn.Conv2D(in_size, out_size, 3, padding=1)
        self.relu_1 = LeakyReLU(relu_slope)
        self.conv_2 = nn.Conv2D(out_size, out_size, 3, padding=1)
        self.relu_2 = LeakyReLU(relu_slope)
        self.half = out_size // 2
        self.norm = nn.InstanceNorm2D(self.half, epsilon=1e-5)

    def forward(self, x):
        out = self.conv_1(x)
        out = paddle.concat([self.norm(out[:, : self.half]), out[:, self.half :]], axis=1)
        out = self.relu_2(self.conv_2(self.relu_1(out)))
        return out + self.identity(x)


class InvBlock(nn.Layer):
    """Affine coupling: y1 = x1 + F(x2); y2 = x2 * exp(clamp * (2 sigmoid(H(y1)) - 1)) + G(y1)."""

    def __init__(self, channel_num, channel_split_num, clamp=0.8):
        super().__init__()
        self.split_len1 = channel_split_num
        self.split_len2 = channel_num - channel_split_num
        self.clamp = clamp
        self.F = UNetConvBlock(self.split_len2, self.split_len1)
        self.G = UNetConvBlock(self.split_len1, self.split_len2)
        self.H = UNetConvBlock(self.split_len1, self.split_len2)

    def forward(self, x):
        x1, x2 = x[:, : self.split_len1], x[:, self.split_len1 :]
        y1 = x1 + self.F(x2)
        s = self.clamp * (F.sigmoid(self.H(y1)) * 2 - 1)
        y2 = x2 * paddle.exp(s) + self.G(y1)
        return paddle.concat([y1, y2], axis=1)


class SpaBlock(nn.Layer):
    """The spatial half of a FouSpa block: x + InvBlock(x)."""

    def __init__(self, nc):
        super().__init__()
        self.block = InvBlock(nc, nc // 2)

    def forward(self, x):
        return x + self.block(x)


def _spectral_mlp(nc):
    # Sequential so the keys are processmag.0 / processmag.2, as in the original.
    return nn.Sequential(nn.Conv2D(nc, nc, 1), LeakyReLU(0.1), nn.Conv2D(nc, nc, 1))


class FreBlock(nn.Layer):
    """The frequency half: 1x1-conv MLPs on amplitude and phase (returned in polar form)."""

    def __init__(self, nc):
        super().__init__()
        self.processmag = _spectral_mlp(nc)
        self.processpha = _spectral_mlp(nc)

    def forward(self, mag, pha):
        return self.processmag(mag), self.processpha(pha)


class SFT(nn.Layer):
    """Spatial feature transform: fuse(cat[x, mul(res) * x + add(res)])."""

    def __init__(self, nc):
        super().__init__()
        self.convmul = nn.Conv2D(nc, nc, 3, padding=1)
        self.convadd = nn.Conv2D(nc, nc, 3, padding=1)
        self.convfuse = nn.Conv2D(2 * nc, nc, 1)

    def forward(self, x, res):
        return self.convfuse(paddle.concat([x, self.convmul(res) * x + self.convadd(res)], axis=1))


class FreBlockAdjust(nn.Layer):
    """FreBlock guided by the low branch: SFT on the amplitude, concat-fuse of the phases."""

    def __init__(self, nc):
        super().__init__()
        self.processmag = _spectral_mlp(nc)
        self.processpha = _spectral_mlp(nc)
        self.sft = SFT(nc)
        self.cat = nn.Conv2D(2 * nc, nc, 1)

    def forward(self, mag, pha, y_amp, y_phase):
        mag = self.sft(self.processmag(mag), y_amp)
        pha = self.cat(paddle.concat([y_phase, self.processpha(pha)], axis=1))  # low phase first
        return mag, pha


class ProcessBlock(nn.Layer):
    """FouSpa block: x + cat_conv([spatial(x), irfft2(freq(rfft2(x)))])."""

    def __init__(self, in_nc):
        super().__init__()
        self.spatial_process = SpaBlock(in_nc)
        self.frequency_process = FreBlock(in_nc)
        self.cat = nn.Conv2D(2 * in_nc, in_nc, 1)

    def _frequency(self, x):
        return self.frequency_process(*rfft2_polar(x))

    def forward(self, x, *guide):
        mag, pha = self._frequency(x, *guide)
        x_freq = irfft2_polar(mag, pha, x.shape[-1])
        return self.cat(paddle.concat([self.spatial_process(x), x_freq], axis=1)) + x


class ProcessBlockAdjust(ProcessBlock):
    """FouSpa block whose frequency part is guided by the low branch's amplitude and phase."""

    def __init__(self, in_nc):
        super().__init__(in_nc)
        self.frequency_process = FreBlockAdjust(in_nc)

    def _frequency(self, x, y_amp, y_phase):
        return self.frequency_process(*rfft2_polar(x), y_amp, y_phase)


# --------------------------------------------------------------------------
# The two branches
# --------------------------------------------------------------------------


def _pointwise_transposed(layer, x):
    """A 1x1, stride-1 ``Conv2DTranspose`` ``layer`` applied as the equal 1x1 conv.

    Its weight [in, out, 1, 1] transposed is a conv weight. In Paddle 3.3.1's
    oneDNN inference, slicing channels (as the next block does) of a
    transposed conv's output fails ("onednn_op.slice raises dnnl::error").
    """
    return F.conv2d(x, layer.weight.transpose([1, 0, 2, 3]), layer.bias)


class LowNet(nn.Layer):
    """The 1/f branch: a 3-level U-Net of FouSpa blocks (widths nc, 2nc, 3nc)."""

    def __init__(self, in_nc, nc, out_nc):
        super().__init__()
        self.conv0 = nn.Conv2D(in_nc, nc, 1)
        self.conv1 = ProcessBlock(nc)
        self.downsample1 = nn.Conv2D(nc, nc * 2, 2, stride=2)
        self.conv2 = ProcessBlock(nc * 2)
        self.downsample2 = nn.Conv2D(nc * 2, nc * 3, 2, stride=2)
        self.conv3 = ProcessBlock(nc * 3)
        self.up1 = nn.Conv2DTranspose(nc * 5, nc * 2, 1)
        self.conv4 = ProcessBlock(nc * 2)
        self.up2 = nn.Conv2DTranspose(nc * 3, nc, 1)
        self.conv5 = ProcessBlock(nc)
        self.convout = nn.Conv2D(nc, out_nc, 1)
        self.convoutfinal = nn.Conv2D(out_nc, 3, 1)
        self.transamp = nn.Conv2D(out_nc, out_nc, 1)
        self.transpha = nn.Conv2D(out_nc, out_nc, 1)

    def forward(self, x):
        x01 = self.conv1(self.conv0(x))
        x12 = self.conv2(self.downsample1(x01))
        x = self.conv3(self.downsample2(x12))
        x = self.conv4(_pointwise_transposed(self.up1, paddle.concat([resize_bilinear(x, x12.shape[2:]), x12], axis=1)))
        x = self.conv5(_pointwise_transposed(self.up2, paddle.concat([resize_bilinear(x, x01.shape[2:]), x01], axis=1)))
        xout = self.convout(x)
        amp, pha = rfft2_polar(xout)
        return self.convoutfinal(xout), self.transamp(amp), self.transpha(pha)


# Budget for the unfolded input (im2col) of one full-resolution 3x3 conv, bytes.
_IM2COL_BYTES = 256 * 2**20


def _conv3x3_in_stripes(layer, x):
    """``layer(x)`` for a 3x3 conv with padding 1, computed in horizontal stripes in dygraph.

    Paddle's eager CPU conv unfolds its whole input 9-fold (im2col): 4.7 GB
    for the 16-channel 4K map before ``con_temp3``. Stripes of rows, each
    with its one-row halos (or the zero padding at the image's top and
    bottom), give the same numbers with a bounded buffer. Exported graphs
    (oneDNN convs in inference) use the plain conv.
    """
    if is_traced():
        return layer(x)
    h, w = x.shape[2], x.shape[3]
    rows = max(1, _IM2COL_BYTES // (x.shape[1] * 9 * 4 * w))
    if h <= rows:
        return layer(x)
    stripes = []
    for top in range(0, h, rows):
        bottom = min(top + rows, h)
        first, last = max(top - 1, 0), min(bottom + 1, h)
        padding = [int(first == top), int(last == bottom), 1, 1]  # zeros only at the image border
        stripes.append(F.conv2d(x[:, :, first:last], layer.weight, layer.bias, padding=padding))
    return paddle.concat(stripes, axis=2)


class HighNet(nn.Layer):
    """The full-resolution branch: PixelUnshuffle(f), FouSpa block(s), PixelShuffle(f), fusion tail."""

    def __init__(self, factor, fuse_channels, deep):
        super().__init__()
        width = 3 * factor * factor
        self.factor = factor
        self.deep = deep
        self.conv1 = ProcessBlockAdjust(width)
        if deep:  # LOL: two more blocks (the UHD model builds them too but skips them)
            self.conv3 = ProcessBlock(width)
            self.conv4 = ProcessBlock(width)
        self.conv5 = nn.PixelShuffle(factor)
        self.convout = nn.Conv2D(3, 3, 3, padding=1)
        self.trans = nn.Conv2D(6, fuse_channels, 1)
        if deep:  # LOL: two more 3x3 convs, without activation (as in the original)
            self.con_temp1 = nn.Conv2D(fuse_channels, fuse_channels, 3, padding=1)
            self.con_temp2 = nn.Conv2D(fuse_channels, fuse_channels, 3, padding=1)
        self.con_temp3 = nn.Conv2D(fuse_channels, 3, 3, padding=1)

    def forward(self, x, y_down, y_down_amp, y_down_phase):
        size = x.shape[2:]
        x = self.conv1(pixel_unshuffle(x, self.factor), y_down_amp, y_down_phase)  # official conv0
        if self.deep:
            x = self.conv4(self.conv3(x))
        x = _conv3x3_in_stripes(self.convout, self.conv5(x))
        x = self.trans(paddle.concat([resize_bilinear(y_down, size), x], axis=1))
        if self.deep:
            x = _conv3x3_in_stripes(self.con_temp2, _conv3x3_in_stripes(self.con_temp1, x))
        return _conv3x3_in_stripes(self.con_temp3, x)


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------

# Keys of one FouSpa block's parameters, relative to the block.
_BLOCK_PARAMS = (
    r"(spatial_process\.block\.[FGH]\.(identity|conv_1|conv_2|norm)"
    r"|frequency_process\.process(mag|pha)\.[02]|cat|frequency_spatial|spatial_frequency)\.(weight|bias)"
)


@MODELS.register()
class UHDFour(nn.Layer):
    """UHDFour's ``InteractNet``; see the module docstring.

    Args:
        factor: f, the scale of the low branch and of PixelUnshuffle (UHD 8,
            LOL 2). The high branch has 3*f^2 channels; f must be even.
        extract_channels: width of the first 1x1 conv (official: 8 = nc//2).
        low_channels: width c of the low U-Net, whose levels have c, 2c, 3c
            channels (official: 192 = nc*12); a multiple of 4.
        fuse_channels: width of the tail after ``trans`` (UHD 16, LOL 32).
        deep_high: the LOL variant's longer high branch (``conv3``/``conv4``
            blocks and ``con_temp1``/``con_temp2`` convs are used).
        pad_input: pad inputs to a multiple of f and crop the outputs back;
            False runs the network as the original (sides must be multiples).
    """


    def __init__(
        self, factor=8, extract_channels=8, low_channels=192, fuse_channels=16, deep_high=False, pad_input=True
    ):
        super().__init__()
        if factor < 2 or factor % 2:
            raise ValueError(f"factor must be even (the high branch's 3*f^2 channels are halved twice), got {factor}")
        if low_channels % 4:
            raise ValueError(f"low_channels must be a multiple of 4 (half instance norms of halves), got {low_channels}")
        self.factor = factor
        self.info = ModelInfo("enhancement", input_multiple=factor, eval_transforms=WHOLE_IMAGE)
        self.pad_input = pad_input
        self._down_kernel = _downsample_kernel(factor)
        self.extract = nn.Conv2D(3, extract_channels, 1)
        self.lownet = LowNet(extract_channels, low_channels, 3 * factor * factor)
        self.highnet = HighNet(factor, fuse_channels, deep_high)
        for layer in self.sublayers():
            if isinstance(layer, (nn.Conv2D, nn.Conv2DTranspose)):
                torch_default_init_(layer)

        # PyTorch keys of the modules the original builds but never runs.
        used_high_blocks = "[134]" if deep_high else "1"
        self.torch_ignored_keys = [
            rf"^(lownet\.conv[1-5]|highnet\.conv{used_high_blocks})\.(frequency_spatial|spatial_frequency)\.(weight|bias)$"
        ]
        if not deep_high:
            self.torch_ignored_keys += [
                rf"^highnet\.conv[34]\.{_BLOCK_PARAMS}$",
                r"^highnet\.con_temp[12]\.(weight|bias)$",
            ]

    def _extract_down(self, x):
        """``extract`` then bilinear downsampling by f, as one stride-f conv (see the module docstring)."""
        kernel = paddle.to_tensor(self._down_kernel, dtype=self.extract.weight.dtype)  # float64 runs stay float64
        weight = self.extract.weight * kernel  # [out, 3, 1, 1] * [f, f] -> [out, 3, f, f]
        return F.conv2d(x, weight, self.extract.bias, stride=self.factor)

    def forward_unpadded(self, x):
        """The original forward: H and W must be multiples of f. Returns (y, y_down)."""
        y_down, y_down_amp, y_down_phase = self.lownet(self._extract_down(x))
        return self.highnet(x, y_down, y_down_amp, y_down_phase), y_down

    def forward(self, x):
        """(y, y_down): the enhanced image, of x's size, and the 1/f output, ceil(H/f) x ceil(W/f)."""
        if not self.pad_input:
            return self.forward_unpadded(x)
        f = self.factor
        h, w = x.shape[-2], x.shape[-1]
        padded = reflect_pad_to_multiple(x, f)
        if padded is x:  # nothing to pad: no full-resolution copies
            return self.forward_unpadded(x)
        y, y_down = self.forward_unpadded(padded)
        return y[:, :, :h, :w], y_down[:, :, : (h + f - 1) // f, : (w + f - 1) // f]  # ceil(h/f), ceil(w/f)


register_variant("uhdfour_uhd", UHDFour, factor=8, extract_channels=8, low_channels=192, fuse_channels=16, deep_high=False)
register_variant("uhdfour_lol", UHDFour, factor=2, extract_channels=8, low_channels=192, fuse_channels=32, deep_high=True)
