"""Forward rungs: converted official weights give the official outputs.

Each family's fixture holds an official checkpoint (or the seed it is rebuilt
from) and the official outputs on fixed inputs, written by the official code
(``tests/fixtures/make_{vit,deit,regnet,uhdfour,llformer}_fixtures.py``). The
weights go through the same readers and converters as a user's checkpoint.
"""

import json

import numpy as np
import paddle

from ppuhd import build_model
from ppuhd.weights import convert_torch_state_dict, find_state_dict, read_checkpoint

from .ladder import fixture, fixture_script, generated_by, max_abs, result, rung

TOL = 1e-5  # fp32, small inputs; the bound for full-size inputs is 1e-4

generated_by("make_vit_fixtures.py", "vit")
generated_by("make_deit_fixtures.py", "deit", official="deit")
generated_by("make_regnet_fixtures.py", "regnet")
generated_by("make_uhdfour_fixtures.py", "uhdfour", official="uhdfour")
generated_by("make_llformer_fixtures.py", "llformer", official="llformer")

VIT_SMALL = dict(type="VisionTransformer", patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)
DEIT_SMALL = dict(type="DistilledVisionTransformer", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3,
                  num_classes=10)
REGNET_TINY = dict(type="RegNet", w0=16, wa=16.0, wm=2.0, depth=7, group_size=8, se_ratio=0.25, stem_width=16,
                   num_classes=10)
# Paddle arguments equal to the official UHDFour constructors of each fixture.
UHDFOUR_OFFICIAL = {
    "uhd_full": dict(type="UHDFour", factor=8, extract_channels=8, low_channels=192, fuse_channels=16,
                     deep_high=False),
    "lol_full": dict(type="UHDFour", factor=2, extract_channels=8, low_channels=192, fuse_channels=32,
                     deep_high=True),
    "lol_narrow": dict(type="UHDFour", factor=2, extract_channels=1, low_channels=24, fuse_channels=32,
                       deep_high=True),  # the official nc=2
}


def _npz(*parts):
    with np.load(fixture(*parts)) as npz:
        return {key: npz[key] for key in npz.files}


def _numpy(outputs):
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return [o.numpy() for o in outputs]


def _run(model, x, training=False):
    model.train() if training else model.eval()
    with paddle.no_grad():
        return _numpy(model(paddle.to_tensor(x)))


def load_converted(model, state):
    """``state`` (official names, numpy) converted into ``model``; AssertionError on any unmatched key."""
    missing, unexpected = model.set_state_dict(convert_torch_state_dict(model, state))
    if missing or unexpected:
        raise AssertionError(f"conversion left keys unmatched: missing {missing}, unexpected {unexpected}")
    return model


@rung("forward", "ViT")
def vit_logits():
    row, ref = result("forward", "ViT"), _npz("vit", "vit_tiny_timm.npz")
    rows = []
    for case, img_size, tag in (("timm logits 32x32", 32, "native"), ("dynamic size 48x40", 32, "wide"),
                                ("dynamic size 16x64", 32, "flat"), ("loaded into a 48x48 model", 48, "resized")):
        model = build_model({**VIT_SMALL, "img_size": img_size}, weights=fixture("vit", "vit_tiny_timm.pth"))
        (logits,) = _run(model, ref[f"x_{tag}"])
        rows.append(row(case, max_abs(logits, ref[f"y_{tag}"]), TOL))
    return rows


@rung("forward", "DeiT")
def deit_heads():
    row, ref = result("forward", "DeiT"), _npz("deit", "deit_reference.npz")
    model = build_model(DEIT_SMALL, weights=fixture("deit", "deit_distilled_small.pth"))
    cls_logits, dist_logits = _run(model, ref["x"], training=True)
    (average,) = _run(model, ref["x"])
    return [row("train: class head", max_abs(cls_logits, ref["train_cls"]), TOL),
            row("train: distillation head", max_abs(dist_logits, ref["train_dist"]), TOL),
            row("eval: average of the heads", max_abs(average, ref["eval_avg"]), TOL)]


@rung("forward", "RegNetY")
def regnet_logits():
    row, ref = result("forward", "RegNetY"), _npz("regnet", "regnety_tiny_timm.npz")
    model = build_model(REGNET_TINY, weights=fixture("regnet", "regnety_tiny_timm.pth"))
    rows = [row("eval 64x64", max_abs(_run(model, ref["x"])[0], ref["y"]), TOL),
            row("eval 45x37", max_abs(_run(model, ref["x_odd"])[0], ref["y_odd"]), TOL)]
    # batch statistics: a longer sum over a small batch, hence the wider bound (as tests/test_regnet.py)
    rows.append(row("train mode (batch statistics)", max_abs(_run(model, ref["x"], training=True)[0],
                                                            ref["y_train"]), 1e-4))
    return rows


def uhdfour_official_state(name, npz):
    """The official state dict of a UHDFour fixture: the stored checkpoint, or rebuilt from its seed."""
    if name == "lol_narrow":
        return find_state_dict(read_checkpoint(fixture("uhdfour", "lol_narrow.pth")))
    synthetic_state_dict = fixture_script("make_uhdfour_fixtures").synthetic_state_dict
    return synthetic_state_dict(list(npz["keys"]), json.loads(str(npz["shapes"])), int(npz["seed"]))


@rung("forward", "UHDFour")
def uhdfour_outputs():
    row, rows = result("forward", "UHDFour"), []
    for name, arguments in UHDFOUR_OFFICIAL.items():
        ref = _npz("uhdfour", f"{name}.npz")
        model = load_converted(build_model(arguments), uhdfour_official_state(name, ref))
        y, y_down = _run(model, ref["input"])
        size = "x".join(str(s) for s in ref["input"].shape[2:])
        rows += [row(f"{name} {size}: full resolution", max_abs(y, ref["y"]), TOL),
                 row(f"{name} {size}: low-resolution output", max_abs(y_down, ref["y_down"]), TOL)]
    return rows


@rung("forward", "LLFormer")
def llformer_outputs():
    row, rows = result("forward", "LLFormer"), []
    for name in ("narrow", "variant"):
        with open(fixture("llformer", f"{name}.json")) as f:
            arguments = json.load(f)["model"]
        ref = _npz("llformer", f"{name}.npz")
        state = find_state_dict(read_checkpoint(fixture("llformer", f"{name}.pth")), "state_dict")
        model = load_converted(build_model({"type": "LLFormer", **arguments}), state)
        for case, key in (("multiple of 16", "input"), ("odd size, reflect-padded as test_UHD.py", "input_odd")):
            size = "x".join(str(s) for s in ref[key].shape[2:])
            output_key = key.replace("input", "output")
            rows.append(row(f"{name} {size}: {case}", max_abs(_run(model, ref[key])[0], ref[output_key]), TOL))
    return rows
