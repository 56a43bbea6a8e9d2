"""The ladder's backward step: every parameter's gradient after one backward, against the official code in float64.

Each case (see ``tests/fixtures/make_gradient_fixtures.py``) rebuilds the
official run's weights from their seeds, builds our model and our loss from
the shipped config's ``loss`` section, runs one training step's forward and
backward in float32 through the task layer the trainer uses, maps every
gradient to its PyTorch name and layout (Linear weights transposed) and
projects it as the reference was projected (whole, or the same CountSketch).

Per tensor, with ``rel(g) = |P g - P g64| / |P g64|`` (L2 norms of the
projections): a tensor passes if ``rel(ours) <= 1e-4`` or
``rel(ours) <= rel(official float32)``, the issue's two clauses (the second for
ill-conditioned tensors, where float32 cannot do better). Each case's row
reports its worst tensor by ``rel(ours) / max(1e-4, rel(official float32))``,
with that tensor's own tolerance. For LLFormer and the ill-conditioned UHDFour
LOL case our model also runs in float64 (``Layer.to(dtype='float64')``),
against the official float64 gradients.
"""

import copy
import json
import os
import tempfile
from typing import NamedTuple

import numpy as np
import paddle

from ppuhd import builder
from ppuhd.config.loader import load_yaml_with_bases
from ppuhd.engine.tasks import build_task
from ppuhd.losses.base import total_of
from ppuhd.registry import LOSSES, MODELS
from ppuhd.weights import check_state_dict, convert_torch_state_dict
from ppuhd.weights.convert import torch_key_plan

from .ladder import FIXTURES_ROOT, fixture, fixture_script, generated_by, result, rung

FOLDER = "gradients"
SCRIPT = "make_gradient_fixtures.py"
for _official in ("", "deit", "uhdfour", "llformer"):
    generated_by(SCRIPT, FOLDER, official=_official)

CONFIGS = os.path.normpath(os.path.join(FIXTURES_ROOT, os.pardir, os.pardir, "configs"))
TOLERANCE = 1e-4  # the issue: within 1e-4 of the gradient's own scale
# Both float64 runs agreeing this closely shows that float32 differences come from rounding, not
# from a different computation. LLFormer's agree to 3e-14; UHDFour's to 1e-9, the effect of one
# float32 detail of the official code: pytorch_ssim rounds its Gaussian window to float32
# (a float64 window changes the official float64 gradients by 1.3e-9).
FLOAT64_TOLERANCE = 1e-8
UHDFOUR_MODELS = {
    "uhdfour_uhd": {"type": "uhdfour_uhd"},
    "uhdfour_lol": {"type": "uhdfour_lol"},
    # the official InteractNet(nc=2): nc // 2 extract channels, nc * 12 low channels
    "uhdfour_lol_nc2": dict(type="UHDFour", factor=2, extract_channels=1, low_channels=24, fuse_channels=32,
                            deep_high=True),
}


GEN = fixture_script(os.path.splitext(SCRIPT)[0])  # its case table, synthetic weights and projection


def shipped_loss(config):
    """The ``loss`` section of a shipped config (with its ``_base_`` files), as a dict to adjust and build."""
    return copy.deepcopy(load_yaml_with_bases(os.path.join(CONFIGS, config))["loss"])


def _stored_state(reference, prefix="", namespace="model", gain=1.0):
    keys, shapes = list(reference[f"{prefix}keys"]), json.loads(str(reference[f"{prefix}shapes"]))
    return GEN.synthetic_state_dict(keys, shapes, namespace, gain)


def _load(model, torch_state):
    converted = convert_torch_state_dict(model, torch_state)
    check_state_dict(model, converted, source="the official run's weights")
    model.set_state_dict(converted)
    return model


def _our_case(case, reference, scratch):
    """(our model with the official weights, our loss from the shipped config) for ``case``."""
    vit = dict(GEN.VIT)
    regnet = {"type": "RegNet", **GEN.REGNET_TINY, "num_classes": GEN.NUM_CLASSES}
    if case == "vit":
        model_cfg, loss_cfg = {"type": "VisionTransformer", **vit}, shipped_loss("vit/vit_small_patch16_224.yml")
    elif case == "regnety":
        model_cfg, loss_cfg = regnet, shipped_loss("regnet/regnety_160.yml")
    elif case.startswith("deit_"):
        model_cfg = {"type": "DistilledVisionTransformer", **vit}
        loss_cfg = shipped_loss("deit/deit_small_distilled_patch16_224.yml")
        teacher_file = os.path.join(scratch, "teacher.npz")
        np.savez(teacher_file, **_stored_state(reference, "teacher_", "teacher"))
        loss_cfg.update(teacher=regnet, teacher_weights=teacher_file, distillation_type=case.split("_")[1])
    elif case.startswith("uhdfour_"):
        model_cfg = UHDFOUR_MODELS[case]
        loss_cfg = shipped_loss("uhdfour/uhdfour_uhdll.yml" if case == "uhdfour_uhd" else "uhdfour/uhdfour_lol.yml")
        vgg_file = os.path.join(scratch, "vgg19.npz")
        np.savez(vgg_file, **_stored_state(reference, "vgg_", "vgg19", gain=np.sqrt(6.0)))
        for term in loss_cfg["terms"]:
            if term["loss"]["type"] == "PerceptualLoss":
                term["loss"]["weights"] = vgg_file
    elif case.startswith("llformer"):
        model_cfg, loss_cfg = {"type": "LLFormer", **GEN.LLFORMER[case]}, shipped_loss("llformer/llformer_uhdlol4k.yml")
    else:
        raise KeyError(case)
    model = _load(builder.build(model_cfg, MODELS, "model"), _stored_state(reference))
    return model, builder.build(loss_cfg, LOSSES, "loss")


def our_gradients(case, reference, dtype="float32"):
    """(loss, {torch name: our gradient in torch layout}) of one training-mode backward of ``case``."""
    with tempfile.TemporaryDirectory() as scratch:
        model, criterion = _our_case(case, reference, scratch)
    if dtype != "float32":
        model.to(dtype=dtype)
        criterion.to(dtype=dtype)
    model.train()
    criterion.train()
    batch = {k: paddle.to_tensor(v if v.dtype.kind != "f" else v.astype(dtype)) for k, v in GEN.case_batch(case).items()}
    loss = total_of(build_task(model, criterion).loss_terms(model, batch))
    loss.backward()
    params = dict(model.named_parameters())
    grads = {}
    for key, (torch_key, transpose) in torch_key_plan(model).items():
        if key in params and params[key].grad is not None:
            grad = params[key].grad.numpy().astype(np.float64)
            grads[torch_key] = grad.T if transpose else grad
    return float(loss), grads


class Tensor(NamedTuple):
    """One tensor's errors against float64: ours, the official float32's at the stored point, and its
    maximum and median over the nudged points (the stored point's value when only it was measured)."""

    name: str
    ours: float
    official: float
    official_max: float
    official_median: float


def compare(case, dtype="float32"):
    """Per tensor (reference order): a :class:`Tensor`; and both losses."""
    reference = np.load(fixture(FOLDER, f"{case}.npz"))
    loss, grads = our_gradients(case, reference, dtype)
    names = list(reference["params"])
    if set(grads) != set(names):
        raise AssertionError(f"{case}: gradients for different parameters; only ours: {sorted(set(grads) - set(names))}, "
                             f"only the official: {sorted(set(names) - set(grads))}")
    # the official float32 error at every nudged point where it was measured, else at the stored one
    at_points = reference["points/rel32"].astype(np.float64) if "points/rel32" in reference else None
    rows = []
    for i, name in enumerate(names):
        ref64 = reference[f"ref64/{name}"].astype(np.float64)
        scale = np.linalg.norm(ref64)
        ours = np.linalg.norm(GEN.project(name, grads[name]) - ref64) / scale
        official = np.linalg.norm(reference[f"delta32/{name}"].astype(np.float64)) / scale
        spread = (official, official) if at_points is None else (at_points[:, i].max(), np.median(at_points[:, i]))
        rows.append(Tensor(name, ours, official, *spread))
    return rows, loss, float(reference["loss64"])


def _row(family, case):
    rows, loss, loss64 = compare(case)
    allowed = [max(TOLERANCE, row.official_max) for row in rows]
    worst_index = int(np.argmax([row.ours / limit for row, limit in zip(rows, allowed)]))
    worst = rows[worst_index]
    beyond = [row for row in rows if row.ours > TOLERANCE]
    at_stored = sum(1 for row in beyond if row.ours <= row.official)
    at_nudged = sum(1 for row in beyond if row.official < row.ours <= row.official_max)
    failing = len(beyond) - at_stored - at_nudged
    points = "" if worst.official == worst.official_max else " and over the nudged points"
    note = (f"{len(rows)} tensors; {len(beyond)} beyond 1e-4, of which {at_stored} within the official float32's "
            f"error at the stored point, {at_nudged} only within its error at some nudged point, {failing} not; "
            f"worst {worst.name} (official float32 {worst.official:.1e}{points}: max {worst.official_max:.1e}, "
            f"median {worst.official_median:.1e}); loss {loss:.7f} vs float64 {loss64:.7f}")
    return result("backward", family)(case, worst.ours, allowed[worst_index], measure="rel L2 of the gradient",
                                      note=note)


@rung("backward", "ViT")
def vit_gradients():
    return [_row("ViT", "vit")]


@rung("backward", "DeiT")
def deit_gradients():
    return [_row("DeiT", "deit_soft"), _row("DeiT", "deit_hard")]


@rung("backward", "RegNetY")
def regnet_gradients():
    return [_row("RegNetY", "regnety")]


@rung("backward", "UHDFour")
def uhdfour_gradients():
    # uhdfour_lol is the ill-conditioned case (docs/alignment.md, Backward): float64 too
    return [_row("UHDFour", case) for case in UHDFOUR_MODELS] + [_float64_row("UHDFour", "uhdfour_lol")]


def _float64_row(family, case):
    """Our model run in float64 against the official float64 run: only summation order may differ."""
    rows, _, _ = compare(case, "float64")
    worst = max(rows, key=lambda row: row.ours)
    note = f"worst {worst.name}"
    scales = [row.ours for row in rows if row.name.endswith((".fac", ".temperature"))]
    if scales:
        note += f"; attention scales (fac, temperature) at most {max(scales):.1e}"
    return result("backward", family)(f"{case} float64", worst.ours, FLOAT64_TOLERANCE,
                                      measure="rel L2 of the gradient", note=note)


@rung("backward", "LLFormer")
def llformer_gradients():
    rows = [_row("LLFormer", case) for case in GEN.LLFORMER]
    return rows + [_float64_row("LLFormer", case) for case in GEN.LLFORMER]
