"""Step 'data': real photographs through each shipped config's preprocessing and the official one.

The references (``tests/fixtures/data_alignment/``) are scikit-image photographs
saved as JPEG and PNG, and what the official pipelines made of each file:
DeiT's ``build_transform`` (evaluation at 224 and 384; its training crop with
timm's recorded draws), timm's evaluation for its ViT weights, UHDFour's test
loader and LLFormer's tiled test. Ours reads the same files with ``read_image``
and runs the transforms of the shipped configs.

Tolerance: one 8-bit level after normalisation, ``1 / (255 * std)``. With
ImageNet's per-channel statistics a row reports the channel whose difference
is largest in levels, and that channel's level.
"""

import json
import os

import numpy as np
from PIL import Image

from ppuhd import builder
from ppuhd.config import load_config
from ppuhd.data.image_io import read_image
from ppuhd.data.transforms import Compose, ToCHW
from ppuhd.engine.tiling import tile_starts, tiled_forward
from ppuhd.contract import model_info
from ppuhd.models.vit import TIMM_DEFAULT_TAGS
from ppuhd.registry import MODELS, TRANSFORMS

from .ladder import fixture, generated_by, result, rung

generated_by("make_data_alignment_fixtures.py", "data_alignment", official="deit")

FOLDER = "data_alignment"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
HALF_STD = np.array([0.5, 0.5, 0.5])
ONE_LEVEL = 1 / 255


def facts():
    with open(fixture(FOLDER, "official", "facts.json")) as f:
        return json.load(f)


def official(pipeline, name):
    """The official uint8 output of ``pipeline`` for the input file ``name``."""
    return np.asarray(Image.open(fixture(FOLDER, "official", pipeline, name + ".png")).convert("RGB"))


def config_transforms(config, split="val_dataset"):
    cfg = load_config(os.path.join(REPO, "configs", config))
    return [builder.build(t, TRANSFORMS, f"{split}.transforms.{i}") for i, t in enumerate(cfg[split]["transforms"])]


def normalised(image_uint8, transforms):
    """The official image just before ToTensor, normalised as the config's ``Normalize`` does."""
    (normalize,) = [t for t in transforms if type(t).__name__ == "Normalize"]
    return normalize({"image": image_uint8})["image"].transpose(2, 0, 1)


def level_diff(ours, reference, std):
    """(max abs difference of the channel farthest from the reference in 8-bit levels, one level there)."""
    per_channel = np.abs(np.asarray(ours, np.float64) - reference).reshape(len(std), -1).max(axis=1)
    level = 1 / (255 * std)
    worst = int(np.argmax(per_channel / level))
    return per_channel[worst], level[worst]


def compare_eval(row, config, pipeline, names, std):
    transforms = config_transforms(config)
    rows = []
    for name in names:
        ours = Compose(transforms)({"image": read_image(fixture(FOLDER, name))})["image"]
        diff, level = level_diff(ours, normalised(official(pipeline, name), transforms), std)
        rows.append(row(f"{config}: {name}", diff, level, note=pipeline))
    return rows


def stored(pipeline):
    """Input files with a stored output of ``pipeline``."""
    folder = fixture(FOLDER, "official", pipeline)
    return sorted(name[: -len(".png")] for name in os.listdir(folder))


@rung("data", "DeiT")
def deit_evaluation():
    row = result("data", "DeiT")
    rows = compare_eval(row, "deit/deit_small_patch16_224.yml", "deit_eval_224", stored("deit_eval_224"), IMAGENET_STD)
    rows += compare_eval(row, "deit/deit_base_patch16_384.yml", "deit_eval_384", stored("deit_eval_384"), IMAGENET_STD)
    for name in stored("decoded"):  # Image.open(...).convert('RGB') of grayscale and CMYK JPEGs
        ours, reference = (image.transpose(2, 0, 1) / (255.0 * IMAGENET_STD[:, None, None])
                           for image in (read_image(fixture(FOLDER, name)), official("decoded", name)))
        diff, level = level_diff(ours, reference, IMAGENET_STD)
        rows.append(row(f"decode: {name}", diff, level, note="read_image vs PIL convert('RGB')"))
    return rows


class ScriptedRng:
    """Replays timm's recorded ``random.uniform`` / ``random.randint`` draws as a numpy Generator's
    ``uniform`` / ``integers``, failing if ours asks for anything else or in another order."""

    def __init__(self, calls):
        self.calls = list(calls)

    def _next(self, kind, low, high):
        if not self.calls:
            raise AssertionError(f"ours draws more than timm: {kind}({low}, {high})")
        recorded, rec_low, rec_high, value = self.calls.pop(0)
        if recorded != kind or not np.isclose(rec_low, low, rtol=0, atol=1e-12) or not np.isclose(
                rec_high, high, rtol=0, atol=1e-12):
            raise AssertionError(f"ours draws {kind}({low}, {high}) where timm drew {recorded}({rec_low}, {rec_high})")
        return value

    def uniform(self, low, high):
        return self._next("uniform", low, high)

    def integers(self, low, high):
        return self._next("randint", low, high - 1)  # numpy's bound is exclusive, randint's inclusive


@rung("data", "DeiT")
def deit_training_crop():
    row = result("data", "DeiT")
    crop, *rest = config_transforms("deit/deit_small_patch16_224.yml", "train_dataset")
    normalize = [t for t in rest if type(t).__name__ == "Normalize"]
    rows = []
    for name, recorded in facts()["crops"].items():
        image = read_image(fixture(FOLDER, name))
        assert (list(crop.scale), list(crop.size)) == (recorded["scale"], recorded["size"])
        np.testing.assert_allclose(crop.ratio, recorded["ratio"])
        rng = ScriptedRng(recorded["calls"])
        box = crop.crop_box(*image.shape[:2], rng)
        rows.append(row(f"box: {name}", np.abs(np.subtract(box, recorded["box"])).max() + len(rng.calls), 0,
                        measure="pixels + draws left", note=f"timm box {recorded['box']}"))
        ours = crop({"image": image}, ScriptedRng(recorded["calls"]))["image"]
        chw = Compose([*normalize, ToCHW()])
        diff, level = level_diff(chw({"image": ours})["image"],
                                 chw({"image": official("deit_crop", name)})["image"], IMAGENET_STD)
        rows.append(row(f"crop {recorded['box']}: {name}", diff, level, note="RandomResizedCrop vs timm, same box"))
    return rows


@rung("data", "RegNetY")
def regnet_evaluation():
    # DeiT's teacher was trained and measured with DeiT's data pipeline (see docs/models/deit.md).
    return compare_eval(result("data", "RegNetY"), "regnet/regnety_160.yml", "deit_eval_224",
                        stored("deit_eval_224"), IMAGENET_STD)


@rung("data", "ViT")
def vit_evaluation():
    row = result("data", "ViT")
    rows = compare_eval(row, "vit/vit_base_patch16_224.yml", "vit_eval_224", stored("vit_eval_224"), HALF_STD)
    rows += compare_eval(row, "vit/vit_base_patch16_384.yml", "vit_eval_384", stored("vit_eval_384"), HALF_STD)
    return rows


def timm_settings(eval_transforms):
    """(input side, crop_pct, interpolation, mean, std, backend) that our eval transforms amount to."""
    resize, crop, normalize, _ = eval_transforms
    assert resize["type"] == "ResizeShort" and crop["type"] == "CenterCrop"
    return (crop["size"], resize["crop_ratio"], resize["interpolation"], tuple(normalize["mean"]),
            tuple(normalize["std"]), resize["backend"])


@rung("data", "ViT")
def vit_variants_follow_timm_pretrained_cfgs():
    """Every ViT variant's contract against timm's pretrained_cfg of its name (default tag)."""
    cfgs, mismatches = facts()["timm_cfgs"], []
    names = [name for name in cfgs if name.startswith("vit_")]
    for name in names:
        cfg = cfgs[name]
        side = int(name.rsplit("_", 1)[1])
        # Only the input size matters to the contract; a narrow, one-block model builds in milliseconds.
        info = model_info(MODELS.get(name)(depth=1, embed_dim=8, num_heads=1, num_classes=10))
        expected = (side, 0.9 if side == 224 else 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3, "pil")
        if cfg is not None:
            expected = (cfg["input_size"][1], cfg["crop_pct"], cfg["interpolation"], tuple(cfg["mean"]),
                        tuple(cfg["std"]), "pil")
            if cfg["crop_mode"] != "center":
                mismatches.append(f"{name}: crop_mode {cfg['crop_mode']}")
        if timm_settings(info.eval_transforms) != expected:
            mismatches.append(f"{name}: {timm_settings(info.eval_transforms)} != {expected}")
        if TIMM_DEFAULT_TAGS.get(name, "missing") != (cfg["tag"] if cfg else None):
            mismatches.append(f"{name}: tag {TIMM_DEFAULT_TAGS.get(name, 'missing')} != {cfg and cfg['tag']}")
    return [result("data", "ViT")(f"{len(names)} variant names vs timm pretrained_cfg", len(mismatches), 0,
                                  measure="mismatches", note="; ".join(mismatches))]


@rung("data", "UHDFour")
def uhdfour_test_read():
    row = result("data", "UHDFour")
    transforms = Compose(config_transforms("uhdfour/uhdfour_uhdll_official_test.yml"))
    rows = []
    for name in stored("uhdfour_test"):
        ours = transforms({"image": read_image(fixture(FOLDER, name), "float32")})["image"]
        reference = official("uhdfour_test", name).transpose(2, 0, 1) / 255.0
        diff, level = level_diff(ours, reference, np.ones(3))
        rows.append(row(f"uhdfour_uhdll_official_test.yml: {name}", diff, level,
                        note="read, crop to a multiple of 8, [0, 1]"))
    return rows


def stand_in_model(tiles):
    """The generator's stand-in for LLFormer (content-dependent, nonlinear), in numpy."""
    return 0.8 * tiles**2 + 0.2 * tiles.mean(axis=(1, 2, 3), keepdims=True)


@rung("data", "LLFormer")
def llformer_tiled_test():
    row = result("data", "LLFormer")
    recorded = facts()["llformer"]
    cfg = load_config(os.path.join(REPO, "configs", "llformer", "llformer_uhdlol4k_test.yml"))
    tiling = cfg["tiling"]
    geometry = (list(tiling["tile_size"]), list(tiling["stride"]), tiling["blend"])
    rows = [row("llformer_uhdlol4k_test.yml tiling vs test_UHD.py", 0 if geometry == (
        recorded["uhd_tile"], recorded["uhd_stride"], "average") else 1, 0, measure="mismatches",
        note=f"ours {geometry}")]
    for frame, corners in recorded["uhd_corners"].items():
        height, width = map(int, frame.split("x"))
        ours = [[t, l] for t in tile_starts(height, 720, 360) for l in tile_starts(width, 1280, 640)]
        rows.append(row(f"tile corners, {frame} frame", 0 if ours == corners else 1, 0, measure="mismatches",
                        note=f"{len(corners)} tiles"))
    transforms = Compose(config_transforms("llformer/llformer_uhdlol4k_test.yml"))
    image = transforms({"image": read_image(fixture(FOLDER, recorded["file"]), "float32")})["image"]
    merged = tiled_forward(stand_in_model, image, recorded["tile"], recorded["stride"], multiple=16, blend="average")
    reference = np.load(fixture(FOLDER, "official", "llformer_tiled.npz"))["merged"]
    rows.append(row(f"read, reflect pad to 16, {recorded['tile'][0]}x{recorded['tile'][1]} tiles: {recorded['file']}",
                    np.abs(merged - reference).max(), ONE_LEVEL, note="stand-in model, overlaps averaged"))
    return rows
