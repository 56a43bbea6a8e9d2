"""LPIPS (Zhang et al., CVPR 2018) with the AlexNet backbone, as LLFormer's evaluation uses it.

``lpips.LPIPS(net='alex')`` (version 0.1): both images in [-1, 1] are shifted
and scaled (``ScalingLayer``), passed through AlexNet's five ReLU stages,
unit-normalised along channels, their squared difference weighted per
channel by a 1x1 conv (``lin0``-``lin4``), averaged over space and summed
over the stages. LLFormer reads its saved 8-bit PNGs and maps them with
``x / 127.5 - 1``; this metric quantises the output the same way first.

Nothing is downloaded: give the weights as files. Either one full
``lpips.LPIPS(net='alex').state_dict()`` (keys ``net.sliceK.N.*`` and
``linK.model.1.weight``), or LPIPS's released ``weights/v0.1/alex.pth`` (the
``lin`` layers) plus torchvision's ``alexnet`` ImageNet weights
(``features.N.*``) as ``backbone_weights``.
"""

import re

import numpy as np
import paddle
import paddle.nn as nn

from ..registry import METRICS
from ..weights import check_state_dict, find_state_dict, read_checkpoint
from .base import Metric
from .image_quality import quantize

# torchvision's alexnet().features[:12]: (index, in, out, kernel, stride, padding); ReLU after each conv.
_ALEXNET_CONVS = [(0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1), (8, 384, 256, 3, 1, 1),
                  (10, 256, 256, 3, 1, 1)]
_POOL_BEFORE = (3, 6)  # a 3x3 stride-2 max pool precedes these convolutions
_SHIFT = [-0.030, -0.088, -0.188]
_SCALE = [0.458, 0.448, 0.450]


def _lpips_key(key):
    """A key of any accepted weights file as this module names it, or None to ignore it."""
    if match := re.fullmatch(r"net\.slice\d\.(\d+)\.(weight|bias)", key):
        return f"features.{match[1]}.{match[2]}"
    if match := re.fullmatch(r"lin(\d)\.model\.1\.weight", key):
        return f"lins.{match[1]}.weight"
    if re.fullmatch(r"features\.\d+\.(weight|bias)", key):
        return key
    return None  # lpips's duplicate 'lins.N', its scaling constants, torchvision's classifier


class LPIPSAlex(nn.Layer):
    """The LPIPS network; ``forward(x, y)`` gives one distance per image of two [-1, 1] batches."""

    def __init__(self):
        super().__init__()
        self.features = nn.LayerDict(
            {str(i): nn.Conv2D(c_in, c_out, k, s, p) for i, c_in, c_out, k, s, p in _ALEXNET_CONVS}
        )
        self.lins = nn.LayerList([nn.Conv2D(c_out, 1, 1, bias_attr=False) for _, _, c_out, *_ in _ALEXNET_CONVS])
        self.register_buffer("shift", paddle.to_tensor(_SHIFT).reshape([1, 3, 1, 1]), persistable=False)
        self.register_buffer("scale", paddle.to_tensor(_SCALE).reshape([1, 3, 1, 1]), persistable=False)

    def stages(self, x):
        x = (x - self.shift) / self.scale
        outputs = []
        for conv_index, *_ in _ALEXNET_CONVS:
            if conv_index in _POOL_BEFORE:
                x = nn.functional.max_pool2d(x, 3, 2)
            x = nn.functional.relu(self.features[str(conv_index)](x))
            outputs.append(x)
        return outputs

    def forward(self, x, y):
        total = 0.0
        for lin, fx, fy in zip(self.lins, self.stages(x), self.stages(y)):
            fx = fx / (paddle.sqrt((fx * fx).sum(axis=1, keepdim=True)) + 1e-10)
            fy = fy / (paddle.sqrt((fy * fy).sum(axis=1, keepdim=True)) + 1e-10)
            total = total + lin((fx - fy) ** 2).mean(axis=[2, 3])
        return total.flatten()

    def load(self, *paths):
        """Load and merge weights files (see the module docstring); all keys must be covered."""
        state = {}
        for path in paths:
            for key, value in find_state_dict(read_checkpoint(path)).items():
                if (name := _lpips_key(key)) is not None:
                    state[name] = value
        check_state_dict(self, state, source=" + ".join(paths))
        self.set_state_dict(state)


@METRICS.register()
class LPIPS(Metric):
    """Learned perceptual distance (lower is better), per image, averaged.

    Args:
        weights: a full LPIPS state dict, or LPIPS's ``alex.pth`` (lin layers).
        backbone_weights: torchvision's ``alexnet`` weights, when ``weights``
            holds only the lin layers.
        quantize: score the output as its saved 8-bit PNG, as LLFormer does.
        output_index, prefix, source: see ``Metric``.
    """

    def __init__(self, weights, backbone_weights=None, quantize=True, output_index=0, prefix="", source="output"):
        super().__init__(output_index, prefix, source)
        self.network = LPIPSAlex()
        self.network.load(*[p for p in (weights, backbone_weights) if p])
        self.network.eval()
        self.quantize = quantize
        self.reset()

    @property
    def names(self):
        return [self.prefix + "lpips"]

    def reset(self):
        self.records = []

    def _to_unit_range(self, images):
        if not self.quantize:
            return images * 2 - 1
        return paddle.to_tensor(quantize(images.numpy()).astype(np.float32) / 127.5 - 1)

    def update(self, outputs, target):
        with paddle.no_grad():
            distances = self.network(self._to_unit_range(self.select(outputs)), self._to_unit_range(target))
        self.records += [{"lpips": float(d)} for d in distances.numpy()]

    def sums(self):
        return {"lpips": sum(r["lpips"] for r in self.records), "count": len(self.records)}

    def compute(self, sums):
        return {self.prefix + "lpips": sums["lpips"] / max(sums["count"], 1)}

    def per_image(self):
        return [{self.prefix + "lpips": r["lpips"]} for r in self.records]
