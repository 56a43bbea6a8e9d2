"""Loss rungs: each family's training loss equals the official one on the same outputs and targets."""

import os
import tempfile

import numpy as np
import paddle

from ppuhd import builder
from ppuhd.losses.classification import CrossEntropyLoss, SoftTargetCrossEntropy
from ppuhd.losses.distillation import DistillationLoss
from ppuhd.registry import LOSSES

from .ladder import fixture, generated_by, result, rung

REL = 1e-5  # fp32 sums of a few hundred terms

generated_by("make_ladder_fixtures.py", "ladder")
generated_by("make_deit_fixtures.py", "deit", official="deit")
generated_by("make_enhancement_fixtures.py", "enhancement", official="uhdfour")


def _relative(value, reference):
    reference = float(reference)
    return abs(float(value) - reference) / max(abs(reference), 1e-12)


def _npz(*parts):
    with np.load(fixture(*parts)) as npz:
        return {key: npz[key] for key in npz.files}


class LinearTeacher(paddle.nn.Layer):
    """The DeiT fixture's teacher: one Linear layer with the official run's weights."""

    def __init__(self, weight, bias):
        super().__init__()
        self.fc = paddle.nn.Linear(*weight.T.shape)
        self.fc.weight.set_value(weight.T)  # torch stores Linear weights as (out, in)
        self.fc.bias.set_value(bias)

    def forward(self, x):
        return self.fc(x)


@rung("loss", "ViT")
def vit_cross_entropy():
    row, ref = result("loss", "ViT"), _npz("ladder", "classification.npz")
    logits, labels = paddle.to_tensor(ref["logits"]), paddle.to_tensor(ref["labels"])
    return [row("cross-entropy (torch)", _relative(CrossEntropyLoss()(logits, labels), ref["cross_entropy"]), REL,
                "rel"),
            row("label smoothing 0.1 (torch)", _relative(CrossEntropyLoss(0.1)(logits, labels),
                                                         ref["cross_entropy_smooth"]), REL, "rel")]


@rung("loss", "DeiT")
def deit_distillation():
    """The official ``DistillationLoss`` (none/soft/hard, tau 1 and 3, two base criteria), alpha 0.3."""
    row, ref, rows = result("loss", "DeiT"), _npz("deit", "deit_reference.npz"), []
    soft = _npz("ladder", "classification.npz")
    rows.append(row("SoftTargetCrossEntropy (timm)", _relative(
        SoftTargetCrossEntropy()(paddle.to_tensor(soft["logits"]), paddle.to_tensor(soft["soft_targets"])),
        soft["soft_target_cross_entropy"]), REL, "rel"))
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "teacher.pdparams")
        paddle.save(LinearTeacher(ref["teacher_weight"], ref["teacher_bias"]).state_dict(), weights)
        for key, base_name, base, targets in (
                ("smooth", "label smoothing 0.1", CrossEntropyLoss(0.1), ref["labels"]),
                ("soft", "soft targets", SoftTargetCrossEntropy(), ref["soft_targets"])):
            for kind in ("none", "soft", "hard"):
                for tau in (1.0, 3.0):
                    teacher = LinearTeacher(np.zeros_like(ref["teacher_weight"]), np.zeros_like(ref["teacher_bias"]))
                    loss = DistillationLoss(base, teacher, weights, distillation_type=kind, alpha=0.3, tau=tau)
                    value = loss((paddle.to_tensor(ref["loss_cls"]), paddle.to_tensor(ref["loss_dist"])),
                                 paddle.to_tensor(targets), paddle.to_tensor(ref["loss_inputs"]))
                    rows.append(row(f"{kind}, tau {tau:g}, base {base_name}",
                                    _relative(value, ref[f"loss_{key}_{kind}_tau{tau:g}"]), REL, "rel"))
    return rows


@rung("loss", "UHDFour")
def uhdfour_terms():
    """Every term of the official training loss (VGG19 cut at conv2_2 to keep the fixture small)."""
    row, ref = result("loss", "UHDFour"), _npz("enhancement", "losses.npz")
    outputs = (paddle.to_tensor(ref["output"]), paddle.to_tensor(ref["output_down"]))
    target = paddle.to_tensor(ref["target"])
    with tempfile.TemporaryDirectory() as tmp:
        vgg = os.path.join(tmp, "vgg.npz")
        np.savez(vgg, **{"features." + k[4:]: v for k, v in ref.items() if k.startswith("vgg.")})
        terms = {
            "smooth_l1_full": {"loss": {"type": "SmoothL1Loss"}, "weight": 5.0, "output": 0},
            "smooth_l1_down": {"loss": {"type": "SmoothL1Loss"}, "weight": 0.5, "output": 1},
            "ssim_term": {"loss": {"type": "SSIMLoss"}, "weight": 0.002, "output": 0},
            "perceptual_conv2_2": {"loss": {"type": "PerceptualLoss", "weights": vgg, "layer": "conv2_2"},
                                   "weight": 0.001, "output": 1},
        }
        combined = builder.build({"type": "CombinedLoss", "terms": list(terms.values())}, LOSSES)
        values = combined.terms(outputs, {"target": target})
    rows = [row(f"{name} ({term['weight']:g} x {term['loss']['type']})", _relative(value, ref[name]), REL, "rel")
            for (name, term), value in zip(terms.items(), values.values())]
    total = sum(float(ref[name]) for name in terms)
    rows.append(row("total", _relative(sum(float(v) for v in values.values()), total), REL, "rel"))
    return rows


@rung("loss", "LLFormer")
def llformer_smooth_l1():
    row, ref = result("loss", "LLFormer"), _npz("ladder", "enhancement.npz")
    value = builder.build({"type": "SmoothL1Loss"}, LOSSES)(paddle.to_tensor(ref["output"]),
                                                          paddle.to_tensor(ref["target"]))
    return [row("SmoothL1 (torch, beta 1)", _relative(value, ref["smooth_l1"]), REL, "rel")]
