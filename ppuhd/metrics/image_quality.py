"""PSNR, SSIM and MAE per image, with the two official conventions.

* ``convention: uhdfour`` (UHDFour's ``test_PSNR.py``): the float output in
  [0, 1], unclamped; PSNR = 10 log10(1 / MSE); SSIM as scikit-image's
  ``structural_similarity`` with data range 1 (7x7 uniform window, sample
  covariance, mean over channels).
* ``convention: llformer`` (LLFormer's ``test_UHD.py`` + ``evaluation.py``): the
  output clamped to [0, 1] and quantised to 8 bits as the saved PNG is
  (``img_as_ubyte``: round half to even), the target likewise; PSNR and SSIM
  as scikit-image computes them on uint8 images (data range 255).

MAE (in the papers, not in the official code) is the mean absolute error on
the [0, 1] scale of the same images. Values are per image, averaged over
images; each image's values are also kept (``records``) for per-image reports.
"""

import cv2
import numpy as np

from ..registry import METRICS
from .base import Metric

CONVENTIONS = ("uhdfour", "llformer")
MEASURES = ("psnr", "ssim", "mae")


def quantize(image, bits=8):
    """[0, 1] floats to uint8 the way LLFormer saves outputs (clamp, ``img_as_ubyte``);
    ``bits=16``: to uint16 the same way (the nearest of 65536 levels)."""
    dtype = {8: np.uint8, 16: np.uint16}[bits]
    scaled = np.clip(image, 0, 1).astype(np.float32) * np.float32(np.iinfo(dtype).max)
    return np.rint(scaled).astype(dtype)


def psnr(a, b, data_range):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(a, b, data_range, window=7):
    """Mean SSIM of two HxWxC images, equal to scikit-image's ``structural_similarity``
    with its defaults (uniform window, sample covariance, K1 0.01, K2 0.03) and ``channel_axis=-1``."""
    pad = (window - 1) // 2
    cov_norm = window * window / (window * window - 1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    scores = []
    for channel in range(a.shape[2]):
        x = a[..., channel].astype(np.float64)
        y = b[..., channel].astype(np.float64)

        def mean_filter(t):
            # scikit-image crops the border, so its padding mode never shows
            return cv2.blur(t, (window, window), borderType=cv2.BORDER_REFLECT)[pad:-pad, pad:-pad]

        mx, my = mean_filter(x), mean_filter(y)
        vx = cov_norm * (mean_filter(x * x) - mx * mx)
        vy = cov_norm * (mean_filter(y * y) - my * my)
        vxy = cov_norm * (mean_filter(x * y) - mx * my)
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        scores.append(s.mean())
    return float(np.mean(scores))


def image_measures(output, target, convention="uhdfour"):
    """``{psnr, ssim, mae}`` of one HxWx3 float output against its target."""
    if convention == "llformer":
        a, b = quantize(output), quantize(target)
        return {"psnr": psnr(a, b, 255), "ssim": ssim(a, b, 255),
                "mae": float(np.abs(a.astype(np.float64) - b).mean() / 255)}
    return {"psnr": psnr(output, target, 1.0), "ssim": ssim(output, target, 1.0),
            "mae": float(np.abs(output.astype(np.float64) - target).mean())}


@METRICS.register()
class ImageQuality(Metric):
    """PSNR / SSIM / MAE of enhanced images (see the module docstring for conventions).

    Args:
        convention: 'uhdfour' or 'llformer'.
        measures: which of psnr, ssim, mae to report.
        output_index, prefix, source: see ``Metric`` (UHDFour's full-resolution
            output is 0; ``source: input`` with ``prefix: input_`` reports the
            low-light input's own scores for comparison).
    """

    def __init__(self, convention="uhdfour", measures=MEASURES, output_index=0, prefix="", source="output"):
        super().__init__(output_index, prefix, source)
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        unknown = set(measures) - set(MEASURES)
        if unknown:
            raise ValueError(f"unknown measures {sorted(unknown)}; choose from {MEASURES}")
        self.convention = convention
        self.measures = tuple(measures)
        self.reset()

    @property
    def names(self):
        return [self.prefix + m for m in self.measures]

    def reset(self):
        self.records = []

    def update(self, outputs, target):
        outputs = self.select(outputs).numpy().transpose(0, 2, 3, 1)
        target = target.numpy().transpose(0, 2, 3, 1)
        for out, ref in zip(outputs, target):
            values = image_measures(out, ref, self.convention)
            self.records.append({m: values[m] for m in self.measures})

    def sums(self):
        totals = {m: sum(r[m] for r in self.records) for m in self.measures}
        return {**totals, "count": len(self.records)}

    def compute(self, sums):
        count = max(sums["count"], 1)
        return {self.prefix + m: sums[m] / count for m in self.measures}

    def per_image(self):
        return [{self.prefix + m: record[m] for m in self.measures} for record in self.records]
