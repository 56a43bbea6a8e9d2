"""Losses for image enhancement, and their weighted combinations over model outputs.

UHDFour trains with (official ``UHDFour_model.py``)::

    5 * SmoothL1(y, gt) + 0.5 * SmoothL1(y_down, down8(gt))
      + 0.001 * MSE(VGG19_conv4_4(y_down), VGG19_conv4_4(down8(gt)))
      + 0.002 * (1 - SSIM(y, gt))

which is written here as a ``CombinedLoss`` whose terms each name the model
output they score; the target is resized (bilinearly, as the official
``F.interpolate(scale_factor=1/8)``) to that output's size.
"""

import functools

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..contract import select_output
from ..registry import LOSSES
from ..weights import check_state_dict, find_state_dict, read_checkpoint
from .base import Loss, total_of


@LOSSES.register()
class SmoothL1Loss(Loss):
    """Huber-like loss, PyTorch's ``smooth_l1_loss`` (``beta``: where it turns from squared to linear)."""

    def __init__(self, beta=1.0):
        super().__init__()
        self.beta = beta

    def forward(self, prediction, target):
        diff = (select_output(prediction) - target).abs()
        return paddle.where(diff < self.beta, 0.5 * diff * diff / self.beta, diff - 0.5 * self.beta).mean()


@LOSSES.register()
class L1Loss(Loss):
    def forward(self, prediction, target):
        return (select_output(prediction) - target).abs().mean()


@LOSSES.register()
class MSELoss(Loss):
    def forward(self, prediction, target):
        return ((select_output(prediction) - target) ** 2).mean()


def gaussian_window(size=11, sigma=1.5):
    """The normalised 1-D Gaussian of ``pytorch_ssim`` (its 2-D window is the outer product)."""
    coords = paddle.arange(size, dtype="float32") - size // 2
    g = paddle.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


@functools.lru_cache(maxsize=8)
def _band_matrix(length, window_size, sigma, device, dtype):
    """(length, length) matrix M with ``(t @ M)[..., j] = sum_k window[k] t[..., j + k - r]`` for the
    Gaussian ``window``, taps beyond the edges dropped (zero padding), on ``device`` (the current
    one, where it is built) as ``dtype``. Cached: training crops share sizes."""
    window, size = gaussian_window(window_size, sigma), window_size
    offsets = paddle.arange(length).unsqueeze(1) - paddle.arange(length).unsqueeze(0) + size // 2
    inside = (offsets >= 0) & (offsets < size)
    band = paddle.where(inside, paddle.gather(window, offsets.clip(0, size - 1).flatten()).reshape(offsets.shape), 0.0)
    return band.astype(dtype)


def ssim(x, y, window_size=11, sigma=1.5):
    """Mean SSIM of two NCHW batches in [0, 1], as ``pytorch_ssim`` (used by UHDFour).

    A Gaussian window (11, sigma 1.5) per channel with zero padding, C1 =
    0.01**2, C2 = 0.03**2 (data range 1), averaged over every pixel.

    The window is separable, so each blur is a product with a banded matrix
    along W and one along H: the same sums as the 11x11 depthwise convolution
    (in another order), but Paddle's CPU depthwise convolution and its
    gradient took a third of a UHDFour training step, and products run on
    every core.
    """
    device, dtype = paddle.get_device(), str(x.dtype).replace("paddle.", "")
    along_width = _band_matrix(x.shape[-1], window_size, sigma, device, dtype)
    along_height = _band_matrix(x.shape[-2], window_size, sigma, device, dtype)

    def blur(t):
        return paddle.matmul(along_height, paddle.matmul(t, along_width), transpose_x=True)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean()


@LOSSES.register()
class SSIMLoss(Loss):
    """``1 - SSIM`` (Gaussian window ``window_size``, ``sigma``); see ``ssim``."""

    def __init__(self, window_size=11, sigma=1.5):
        super().__init__()
        self.window_size, self.sigma = window_size, sigma

    def forward(self, prediction, target):
        return 1.0 - ssim(select_output(prediction), target, self.window_size, self.sigma)


# torchvision's VGG19 ``features``: convolution widths, 'M' for max pooling.
VGG19_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def vgg19_layer_index(name):
    """The index in ``features`` of a layer named like ``conv4_4`` or ``relu3_1``."""
    kind, _, position = name.partition("_")
    if kind[:-1] not in ("conv", "relu") or not kind[-1].isdigit() or not position.isdigit():
        raise ValueError(f"VGG19 layer names look like conv4_4 or relu3_1, got {name!r}")
    block, conv = int(kind[-1]), int(position)
    index, seen_block, seen_conv = 0, 1, 0
    for item in VGG19_LAYOUT:
        if item == "M":
            seen_block, seen_conv = seen_block + 1, 0
            index += 1
            continue
        seen_conv += 1
        if (seen_block, seen_conv) == (block, conv):
            return index + (1 if kind.startswith("relu") else 0)
        index += 2  # a convolution and its ReLU
    raise ValueError(f"VGG19 has no layer {name!r}")


class VGG19Features(nn.Layer):
    """torchvision's ``vgg19().features`` up to a layer, with its parameter names (``features.N.weight``)."""

    def __init__(self, last_layer="conv4_4"):
        super().__init__()
        layers, in_channels = [], 3
        for item in VGG19_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2D(2, 2))
            else:
                layers += [nn.Conv2D(in_channels, item, 3, padding=1), nn.ReLU()]
                in_channels = item
        self.features = nn.Sequential(*layers[: vgg19_layer_index(last_layer) + 1])

    def forward(self, x):
        return self.features(x)


@LOSSES.register()
class PerceptualLoss(Loss):
    """MSE between VGG19 features of prediction and target, as UHDFour (conv4_4, before its ReLU).

    Args:
        weights: VGG19 weights file: torchvision's ``vgg19`` ``.pth`` (read
            directly, the classifier is ignored) or one converted to
            ``.pdparams``; nothing is downloaded.
        layer: the last layer used, e.g. 'conv4_4' (official) or 'relu5_4'.
        normalize: apply ImageNet mean/std first (UHDFour does not).
    """

    def __init__(self, weights, layer="conv4_4", normalize=False):
        super().__init__()
        self.vgg = VGG19Features(layer)
        self._load_vgg(weights)
        for param in self.vgg.parameters():
            param.stop_gradient = True
        self.vgg.eval()
        self.normalize = normalize
        self.register_buffer("mean", paddle.to_tensor([0.485, 0.456, 0.406]).reshape([1, 3, 1, 1]), persistable=False)
        self.register_buffer("std", paddle.to_tensor([0.229, 0.224, 0.225]).reshape([1, 3, 1, 1]), persistable=False)

    def _load_vgg(self, path):
        """Load the layers used from a full VGG19 file of any format (convolutions need no conversion)."""
        needed = self.vgg.state_dict()
        state = {k: v for k, v in find_state_dict(read_checkpoint(path)).items() if k in needed}
        check_state_dict(self.vgg, state, source=path)
        self.vgg.set_state_dict(state)

    def train(self):
        super().train()
        self.vgg.eval()
        return self

    def features(self, x):
        return self.vgg((x - self.mean) / self.std if self.normalize else x)

    def forward(self, prediction, target):
        with paddle.no_grad():
            target_features = self.features(target)
        return ((self.features(select_output(prediction)) - target_features) ** 2).mean()


@LOSSES.register()
class CombinedLoss(Loss):
    """A weighted sum of losses, each on one model output.

    Args:
        terms: list of ``{loss: {type: ...}, weight: w, output: i, name: n}``;
            ``output`` (default 0) picks the model output the term scores, and
            the target is resized bilinearly to that output's size when they
            differ; ``name`` is the term's name in the logs (default: the
            loss's class and output, e.g. ``SmoothL1Loss_out1``).
    """

    TERM_KEYS = ("loss", "weight", "output", "name")

    def __init__(self, terms):
        super().__init__()
        if not terms:
            raise ValueError("CombinedLoss needs at least one term")
        for i, term in enumerate(terms):
            unknown = set(term) - set(self.TERM_KEYS)
            if unknown or "loss" not in term:
                raise ValueError(f"term {i} must have 'loss' and optionally 'weight', 'output', 'name'; "
                                 f"got {sorted(term)}")
        self.losses = nn.LayerList([term["loss"] for term in terms])
        self.weights = [float(term.get("weight", 1.0)) for term in terms]
        self.outputs = [int(term.get("output", 0)) for term in terms]
        self.names = [term.get("name") or f"{type(term['loss']).__name__}_out{index}"
                      for term, index in zip(terms, self.outputs)]
        if len(set(self.names)) < len(self.names):
            raise ValueError(f"two terms have the same name ({self.names}); give them distinct 'name's")

    def _weighted(self, outputs, target):
        terms = {}
        for name, loss, weight, index in zip(self.names, self.losses, self.weights, self.outputs):
            prediction = select_output(outputs, index)
            scaled = target
            if prediction.shape[-2:] != target.shape[-2:]:
                scaled = F.interpolate(target, size=prediction.shape[-2:], mode="bilinear", align_corners=False)
            terms[name] = weight * loss(prediction, scaled)
        return terms

    def terms(self, outputs, batch):
        return self._weighted(outputs, batch["target"])

    def forward(self, outputs, target):
        return total_of(self._weighted(outputs, target))
