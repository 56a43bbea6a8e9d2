"""RegNetX and RegNetY (Radosavovic et al., CVPR 2020), as timm implements them.

RegNetY-16GF (``regnety_160``) is the teacher DeiT distils from.

Architecture: a stem (3x3 stride-2 conv, BatchNorm, ReLU; 32 channels), four
stages of bottleneck blocks, global average pooling and a Linear classifier.
Each block is ``relu(conv3(se(conv2(conv1(x)))) + shortcut(x))``: 1x1 conv-BN-ReLU,
3x3 grouped conv-BN-ReLU (stride 2 in the first block of a stage), the
squeeze-excitation (RegNetY only; after conv2, not after conv3 as in SE-ResNet),
then a 1x1 conv-BN without activation. The shortcut is a 1x1 strided conv-BN
where the shape changes (first block of each stage), the identity elsewhere.
Convolutions have no bias, except the SE's two 1x1 convs.

Widths and depths come from the RegNet parameters (w0, wa, wm, depth), as
timm's ``generate_regnet`` computes them: the linear widths ``w0 + wa * i``
of the ``depth`` blocks are snapped to ``w0 * wm**k`` (k rounded from the
log), rounded to multiples of 8, and blocks of equal width form a stage; then
each stage's width is rounded to a multiple of its group width, the group
width being at most the bottleneck width. Details kept from timm:

* the width rule runs in float32 (timm uses float32 torch tensors), so the
  rounding happens exactly where timm's does;
* the SE's reduced width is ``round(se_ratio * block input width)`` (pycls's
  rule), not a fraction of the bottleneck width it squeezes;
* stochastic-depth rates rise linearly over all blocks, 0 to ``drop_path_rate``
  (timm calls the schedule 'stagewise' but its rates are per block);
* BatchNorm eps 1e-5 and torch momentum 0.1 (Paddle's ``momentum=0.9``).

Parameter and buffer names equal timm's state_dict keys (``stem.conv``,
``stem.bn``, ``s1.b1.conv1.conv``, ``s1.b1.conv2.bn``, ``s1.b1.se.fc1``,
``s1.b1.downsample.conv``, ``head.fc``, ...), so a timm checkpoint (DeiT's
``regnety_160`` teacher is one) converts by copying keys, renaming BatchNorm
statistics and transposing ``head.fc.weight``. torchvision and pycls
checkpoints name things differently and are not converted.

Initialisation for training from scratch is timm's: convolutions normal with
std sqrt(2 / fan_out), fan_out = k*k*out_channels / groups (kaiming, fan-out,
ReLU); conv biases zero; Linear normal(0, 0.01) with zero bias; BatchNorm
weight 1 and bias 0, except the last BatchNorm of each block (``conv3.bn``),
whose weight starts at zero (``zero_init_last=True``, timm's default) so each
block starts as its shortcut.

One difference cannot be configured away: in training mode Paddle's
BatchNorm updates the running variance with the biased batch variance, torch
with the unbiased one (a factor n/(n-1), n = batch * height * width). The
forward pass is identical; the running variances differ by about 1/n
relative (1.6e-4 at batch 128 on the 7x7 maps of the last stage).

Not ported, as the paper's RegNetX/Y models do not use them: timm's
``output_stride`` 8/16 (dilated stages), the pre-activation RegNetV,
RegNetZ's options (no shortcut, linear output, final 1x1 conv), average-pool
shortcuts, and the torchvision-compatible group rounding of the ``*_tv``
variants (``group_min_ratio``).
"""

import math

import numpy as np
import paddle.nn as nn
import paddle.nn.functional as F

from ..contract import ModelInfo
from ..registry import BACKBONES, MODELS
from .layers import DropPath
from .preprocessing import resize_and_center_crop
from .variants import register_variant

BN_EPS = 1e-5
BN_MOMENTUM = 1.0 - 0.1  # torch's momentum 0.1 in Paddle's convention


def regnet_stages(w0, wa, wm, depth, group_size, bottle_ratio=1.0, quant=8):
    """Per-stage ``(widths, depths, group_sizes)`` from the RegNet parameters, as timm computes them."""
    if not (wa >= 0 and w0 > 0 and wm > 1 and w0 % quant == 0):
        raise ValueError(
            f"RegNet needs wa >= 0, w0 > 0 a multiple of {quant} and wm > 1; got w0={w0}, wa={wa}, wm={wm}"
        )
    # Each step rounded to float32 like timm's float32 torch ops; log and pow are
    # taken in float64 first, because numpy's float32 power can be 1 ulp off the
    # correctly rounded value torch returns, and that moves widths at a .5 tie.
    f32 = np.float32
    linear = np.arange(depth, dtype=f32) * f32(wa) + f32(w0)
    log_ratio = np.log((linear / f32(w0)).astype(np.float64)).astype(f32)
    exps = np.round(log_ratio / f32(math.log(wm)))
    powers = np.power(np.float64(f32(wm)), exps.astype(np.float64)).astype(f32)
    block_widths = np.round(f32(w0) * powers / f32(quant)) * f32(quant)
    widths, depths = np.unique(block_widths.astype(np.int64), return_counts=True)
    # Group width at most the bottleneck width; bottleneck width a multiple of the group width.
    bottlenecks = [int(w * bottle_ratio) for w in widths.tolist()]
    groups = [min(group_size, b) for b in bottlenecks]
    bottlenecks = [int(round(b / g) * g) for b, g in zip(bottlenecks, groups)]
    widths = [int(b / bottle_ratio) for b in bottlenecks]
    return widths, depths.tolist(), groups


class ConvNormAct(nn.Layer):
    """Convolution without bias, BatchNorm, optional ReLU (timm's ``ConvNormAct``: keys ``conv``, ``bn``)."""

    def __init__(self, in_chs, out_chs, kernel_size=1, stride=1, groups=1, apply_act=True):
        super().__init__()
        padding = ((stride - 1) + (kernel_size - 1)) // 2  # timm's symmetric default padding
        self.conv = nn.Conv2D(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(out_chs, momentum=BN_MOMENTUM, epsilon=BN_EPS)
        self.act = nn.ReLU() if apply_act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SEModule(nn.Layer):
    """Squeeze-excitation: channel gates from the global mean, two 1x1 convs with bias."""

    def __init__(self, channels, rd_channels):
        super().__init__()
        self.fc1 = nn.Conv2D(channels, rd_channels, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2D(rd_channels, channels, 1)

    def forward(self, x):
        scale = self.fc2(self.act(self.fc1(x.mean(axis=[2, 3], keepdim=True))))
        return x * F.sigmoid(scale)


class Bottleneck(nn.Layer):
    """1x1 -> grouped 3x3 -> SE -> 1x1 with a residual shortcut."""

    def __init__(self, in_chs, out_chs, stride=1, bottle_ratio=1.0, group_size=1, se_ratio=0.0, drop_path=0.0):
        super().__init__()
        mid_chs = int(round(out_chs * bottle_ratio))
        self.conv1 = ConvNormAct(in_chs, mid_chs, 1)
        self.conv2 = ConvNormAct(mid_chs, mid_chs, 3, stride, groups=mid_chs // group_size)
        self.se = SEModule(mid_chs, int(round(in_chs * se_ratio))) if se_ratio else nn.Identity()
        self.conv3 = ConvNormAct(mid_chs, out_chs, 1, apply_act=False)
        if in_chs != out_chs or stride != 1:
            self.downsample = ConvNormAct(in_chs, out_chs, 1, stride, apply_act=False)
        else:
            self.downsample = None  # identity shortcut; timm's nn.Identity has no keys either
        self.drop_path = DropPath(drop_path)
        self.act3 = nn.ReLU()

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.conv3(self.se(self.conv2(self.conv1(x))))
        return self.act3(self.drop_path(x) + shortcut)


class RegStage(nn.Layer):
    """Blocks ``b1 ... bN`` of one width; the first one changes width and strides."""

    def __init__(self, depth, in_chs, out_chs, stride, drop_path_rates, **block_args):
        super().__init__()
        for i in range(depth):
            block = Bottleneck(
                in_chs if i == 0 else out_chs,
                out_chs,
                stride if i == 0 else 1,
                drop_path=drop_path_rates[i],
                **block_args,
            )
            self.add_sublayer(f"b{i + 1}", block)

    def forward(self, x):
        for block in self.children():
            x = block(x)
        return x


class ClassifierHead(nn.Layer):
    """Global average pool, dropout, Linear ``fc`` (absent with ``num_classes=0``)."""

    def __init__(self, in_features, num_classes, drop_rate=0.0):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x):
        return self.fc(self.drop(x.mean(axis=[2, 3])))


class RegNet(nn.Layer):
    """RegNet classifier; with ``num_classes=0`` it returns the pooled features.

    Args:
        w0, wa, wm, depth: the RegNet width rule (initial width, slope,
            quantisation multiplier) and the number of blocks.
        group_size: channels per group of the 3x3 convolutions.
        bottle_ratio: bottleneck width / block width (1 in RegNetX and Y).
        se_ratio: squeeze-excitation width / block input width; 0.25 for
            RegNetY, 0 (no SE) for RegNetX.
        stem_width: output channels of the stem.
        in_chans: input channels.
        num_classes: classifier outputs; 0 for a feature extractor.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly to this over the blocks.
        zero_init_last: start the last BatchNorm of each block at weight 0.
    """

    def __init__(
        self,
        w0,
        wa,
        wm,
        depth,
        group_size,
        bottle_ratio=1.0,
        se_ratio=0.0,
        stem_width=32,
        in_chans=3,
        num_classes=1000,
        drop_rate=0.0,
        drop_path_rate=0.0,
        zero_init_last=True,
    ):
        super().__init__()
        widths, depths, group_sizes = regnet_stages(w0, wa, wm, depth, group_size, bottle_ratio)
        if len(widths) != 4:
            raise ValueError(
                f"RegNet has four stages, but w0={w0}, wa={wa}, wm={wm}, depth={depth} give {len(widths)} "
                f"(widths {widths})"
            )
        self.num_classes = num_classes
        # DeiT's evaluation (shorter side 256, bicubic, crop 224): its RegNetY teacher was trained and
        # measured with DeiT's pipeline (timm's generic RegNet cfg says crop 0.95; docs/models/deit.md)
        self.info = ModelInfo("classification", num_classes, (224, 224), eval_transforms=resize_and_center_crop(224))
        self.stem = ConvNormAct(in_chans, stem_width, 3, stride=2)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stage_names = []
        in_chs = stem_width
        for i, (width, stage_depth, stage_group) in enumerate(zip(widths, depths, group_sizes)):
            first = sum(depths[:i])
            stage = RegStage(
                stage_depth,
                in_chs,
                width,
                stride=2,
                drop_path_rates=rates[first : first + stage_depth],
                bottle_ratio=bottle_ratio,
                group_size=stage_group,
                se_ratio=se_ratio,
            )
            self.stage_names.append(f"s{i + 1}")
            self.add_sublayer(self.stage_names[-1], stage)
            in_chs = width
        self.num_features = in_chs
        self.head = ClassifierHead(in_chs, num_classes, drop_rate)
        self.init_weights(zero_init_last)

    def init_weights(self, zero_init_last=True):
        """timm's init: kaiming-normal fan-out convs (fan-out divided by groups),
        normal(0.01) Linear, zero biases, optionally zero last BatchNorm weight per block."""
        for layer in self.sublayers():
            if isinstance(layer, nn.Conv2D):
                out_chs, _, kh, kw = layer.weight.shape
                fan_out = kh * kw * out_chs // layer._groups
                nn.initializer.Normal(0.0, math.sqrt(2.0 / fan_out))(layer.weight)
                if layer.bias is not None:
                    nn.initializer.Constant(0.0)(layer.bias)
            elif isinstance(layer, nn.Linear):
                nn.initializer.Normal(0.0, 0.01)(layer.weight)
                nn.initializer.Constant(0.0)(layer.bias)
            elif zero_init_last and isinstance(layer, Bottleneck):
                nn.initializer.Constant(0.0)(layer.conv3.bn.weight)

    def forward_features(self, x):
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x):
        return self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


MODELS.register(RegNet)
BACKBONES.register(RegNet)

# The RegNetX and RegNetY models of the paper (Designing Network Design Spaces,
# appendix), as timm's model_cfgs; the three digits are the GFLOPs x 10.
REGNETX_CONFIGS = {
    "002": dict(w0=24, wa=36.44, wm=2.49, group_size=8, depth=13),
    "004": dict(w0=24, wa=24.48, wm=2.54, group_size=16, depth=22),
    "006": dict(w0=48, wa=36.97, wm=2.24, group_size=24, depth=16),
    "008": dict(w0=56, wa=35.73, wm=2.28, group_size=16, depth=16),
    "016": dict(w0=80, wa=34.01, wm=2.25, group_size=24, depth=18),
    "032": dict(w0=88, wa=26.31, wm=2.25, group_size=48, depth=25),
    "040": dict(w0=96, wa=38.65, wm=2.43, group_size=40, depth=23),
    "064": dict(w0=184, wa=60.83, wm=2.07, group_size=56, depth=17),
    "080": dict(w0=80, wa=49.56, wm=2.88, group_size=120, depth=23),
    "120": dict(w0=168, wa=73.36, wm=2.37, group_size=112, depth=19),
    "160": dict(w0=216, wa=55.59, wm=2.1, group_size=128, depth=22),
    "320": dict(w0=320, wa=69.86, wm=2.0, group_size=168, depth=23),
}
REGNETY_CONFIGS = {
    "002": dict(w0=24, wa=36.44, wm=2.49, group_size=8, depth=13),
    "004": dict(w0=48, wa=27.89, wm=2.09, group_size=8, depth=16),
    "006": dict(w0=48, wa=32.54, wm=2.32, group_size=16, depth=15),
    "008": dict(w0=56, wa=38.84, wm=2.4, group_size=16, depth=14),
    "016": dict(w0=48, wa=20.71, wm=2.65, group_size=24, depth=27),
    "032": dict(w0=80, wa=42.63, wm=2.66, group_size=24, depth=21),
    "040": dict(w0=96, wa=31.41, wm=2.24, group_size=64, depth=22),
    "064": dict(w0=112, wa=33.22, wm=2.27, group_size=72, depth=25),
    "080": dict(w0=192, wa=76.82, wm=2.19, group_size=56, depth=17),
    "120": dict(w0=168, wa=73.36, wm=2.37, group_size=112, depth=19),
    "160": dict(w0=200, wa=106.23, wm=2.48, group_size=112, depth=18),
    "320": dict(w0=232, wa=115.89, wm=2.53, group_size=232, depth=20),
}

for _flops, _arch in REGNETX_CONFIGS.items():
    register_variant(f"regnetx_{_flops}", RegNet, **_arch)
for _flops, _arch in REGNETY_CONFIGS.items():
    register_variant(f"regnety_{_flops}", RegNet, se_ratio=0.25, **_arch)
