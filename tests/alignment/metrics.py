"""Metric rungs: this project's metrics equal the official evaluation code's.

Classification: ``timm.utils.accuracy`` (DeiT's ``engine.evaluate``), from a
fixture. Enhancement: the official scripts score with scikit-image (UHDFour:
PSNR ``10 log10(1 / MSE)`` and ``structural_similarity(data_range=1)`` on the
unclamped float output; LLFormer: ``peak_signal_noise_ratio`` and
``structural_similarity`` on the saved 8-bit PNGs) and LLFormer's LPIPS with the
``lpips`` package's AlexNet; scikit-image is called here directly.
"""

import os
import tempfile

import numpy as np
import paddle

from ppuhd.metrics.classification import TopKAccuracy
from ppuhd.metrics.image_quality import ImageQuality, quantize

from .ladder import fixture, fixture_script, generated_by, result, rung

generated_by("make_ladder_fixtures.py", "ladder")
generated_by("make_lpips_fixtures.py", "lpips")


def _npz(*parts):
    with np.load(fixture(*parts)) as npz:
        return {key: npz[key] for key in npz.files}


def _top_k(family):
    row, ref = result("metric", family), _npz("ladder", "classification.npz")
    metric = TopKAccuracy((1, 5))
    for start in range(0, len(ref["labels"]), 24):  # uneven batches, as a last partial batch
        metric.update(paddle.to_tensor(ref["logits"][start:start + 24]), paddle.to_tensor(ref["labels"][start:start + 24]))
    ours = metric.compute(metric.sums())
    return [row("top-1 (timm.utils.accuracy, ties included)", abs(ours["top1"] - float(ref["top1"])), 1e-9),
            row("top-5 (timm.utils.accuracy, ties included)", abs(ours["top5"] - float(ref["top5"])), 1e-9)]


@rung("metric", "ViT")
def vit_top_k():
    return _top_k("ViT")


@rung("metric", "DeiT")
def deit_top_k():
    return _top_k("DeiT")


@rung("metric", "RegNetY")
def regnet_top_k():
    return _top_k("RegNetY")


def _image_pair(seed, shape=(2, 3, 45, 61)):
    rng = np.random.default_rng(seed)
    target = rng.random(shape).astype(np.float32)
    return (target + rng.normal(0, 0.08, shape)).astype(np.float32), target  # unclamped, as a model gives it


def _scores(convention, output, target):
    metric = ImageQuality(convention)
    metric.update(paddle.to_tensor(output), paddle.to_tensor(target))
    return metric.per_image()


@rung("metric", "UHDFour")
def uhdfour_quality():
    from skimage.metrics import structural_similarity

    row, rows = result("metric", "UHDFour"), []
    output, target = _image_pair(1)
    for i, record in enumerate(_scores("uhdfour", output, target)):
        out, tgt = output[i].transpose(1, 2, 0), target[i].transpose(1, 2, 0)
        psnr = 10 * np.log10(1 / np.mean((out.astype(np.float64) - tgt) ** 2))
        ssim = structural_similarity(out, tgt, data_range=1, channel_axis=-1)
        rows += [row(f"image {i}: PSNR (dB)", abs(record["psnr"] - psnr), 1e-6),
                 row(f"image {i}: SSIM (skimage, float)", abs(record["ssim"] - ssim), 1e-6)]
    return rows


@rung("metric", "LLFormer")
def llformer_quality():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    row, rows = result("metric", "LLFormer"), []
    output, target = _image_pair(2)
    for i, record in enumerate(_scores("llformer", output, target)):
        saved_out, saved_tgt = (quantize(a[i].transpose(1, 2, 0)) for a in (output, target))  # the saved PNGs
        rows += [row(f"image {i}: PSNR (skimage, 8-bit)", abs(record["psnr"] - peak_signal_noise_ratio(
                     saved_tgt, saved_out)), 1e-6),
                 row(f"image {i}: SSIM (skimage, 8-bit)", abs(record["ssim"] - structural_similarity(
                     saved_out, saved_tgt, channel_axis=-1)), 1e-6)]
    rows += _lpips(row)
    return rows


def _lpips(row):
    """AlexNet LPIPS against the ``lpips`` package (seeded random weights, rebuilt here)."""
    from ppuhd.metrics.lpips import LPIPS, LPIPSAlex

    seeded_weights = fixture_script("lpips_weights").seeded_weights

    ref = _npz("lpips", "lpips_alex.npz")
    network, shapes = LPIPSAlex(), {}
    for key in ref["keys"]:
        index = int(key.split(".")[2]) if key.startswith("net.") else int(key[3])
        layer = network.features[str(index)] if key.startswith("net.") else network.lins[index]
        shapes[str(key)] = tuple(getattr(layer, "bias" if key.endswith("bias") else "weight").shape)
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "lpips.npz")
        np.savez(weights, **seeded_weights(shapes), **{"scaling_layer.shift": np.zeros((1, 3, 1, 1), np.float32)})
        metric = LPIPS(weights)
    metric.update(paddle.to_tensor(ref["a"] / 255.0, dtype="float32"), paddle.to_tensor(ref["b"] / 255.0,
                                                                                         dtype="float32"))
    got = np.array([r["lpips"] for r in metric.per_image()])
    mean = metric.compute(metric.sums())["lpips"]
    return [row("LPIPS AlexNet (lpips 0.1.4), per image", float(np.abs(got - ref["distance"]).max()), 1e-5),
            row("LPIPS AlexNet, mean over images", abs(mean - float(np.mean(ref["distance"]))), 1e-5)]
