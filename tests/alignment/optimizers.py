"""Ladder step "optimizer": DeiT's weight-decay groups and the optimizers' updates against PyTorch.

Groups: our ``param_groups`` on the Paddle DeiT models against the names in
each group of ``timm.optim.create_optimizer(args, model)`` as DeiT's main.py
calls it (the Paddle ports keep the PyTorch parameter names); the count of
names in a different group must be 0.

Updates: the optimizers built from configs, as the trainer builds them, run
ten steps on the fixture's gradients with the fixture's changing lr; measured
is the largest difference to torch.optim's parameters after any step,
relative to the parameter's largest magnitude. Tolerance 1e-6: both run in
float32 (machine epsilon 1.2e-7) and order their arithmetic differently
(Paddle's fused kernels fold the bias corrections into the step size and the
epsilon), so each step may round the parameter differently by about an ulp;
ten steps stay within ten ulps of its magnitude, 1.2e-6.
"""

import json

import numpy as np
import paddle

from ppuhd import build_model, builder
from ppuhd.engine.optimizers import param_groups
from ppuhd.registry import OPTIMIZERS

from .ladder import fixture, generated_by, result, rung

generated_by("make_optimizer_fixtures.py", "optimizers", official="deit")

SMALL = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)
MODELS = {"distilled": "DistilledVisionTransformer", "plain": "VisionTransformer"}
UPDATE_TOLERANCE = 1e-6


def groups_by_decay(groups, names):
    return {float(g["weight_decay"]): {names[id(p)] for p in g["params"]} for g in groups}


@rung("optimizer", "DeiT")
def deit_param_groups():
    row = result("optimizer", "DeiT")
    with open(fixture("optimizers", "deit_param_groups.json")) as f:
        reference = json.load(f)
    rows = []
    for key, model_type in MODELS.items():
        model = build_model({"type": model_type, **SMALL})
        names = {id(p): n for n, p in model.named_parameters()}
        ours = groups_by_decay(param_groups(model, reference["args"]["weight_decay"]), names)
        theirs = {float(g["weight_decay"]): set(g["names"]) for g in reference["groups"][key]}
        differing = sum(len(ours.get(decay, set()) ^ names_) for decay, names_ in theirs.items())
        differing += sum(len(names_) for decay, names_ in ours.items() if decay not in theirs)
        rows.append(row(f"{model_type}: parameter names in another group than timm "
                        f"{reference['versions']['timm']}'s", differing, 0, measure="count"))
    return rows


class Parameters(paddle.nn.Layer):
    """The fixture's three parameters; ``pos_embed`` is exempt from weight decay by name, ``bias`` as 1-D."""

    def __init__(self, initial):
        super().__init__()
        for name, value in initial.items():
            initializer = paddle.nn.initializer.Assign(value)
            setattr(self, name, self.create_parameter(list(value.shape), default_initializer=initializer))

    def no_weight_decay_names(self):
        return {"pos_embed"}


def our_trajectory(settings, reference, key, names):
    model = Parameters({n: reference[f"init_{n}"] for n in names})
    config = {k: v for k, v in settings.items() if k != "lr"}
    optimizer = builder.build(config, OPTIMIZERS, "optimizer", model=model, learning_rate=float(settings["lr"]))
    path = {n: [] for n in names}
    for step, lr in enumerate(reference[f"lr_{key}"]):
        optimizer.set_lr(float(lr))
        loss = sum((getattr(model, n) * paddle.to_tensor(reference[f"grad_{n}"][step])).sum() for n in names)
        loss.backward()  # the gradient of sum(p * g) is g, exactly
        optimizer.step()
        optimizer.clear_grad()
        for n in names:
            path[n].append(getattr(model, n).numpy().copy())
    return {n: np.stack(v) for n, v in path.items()}


def optimizer_updates(family):
    """Our optimizers, built from each case's config arguments, against torch.optim's trajectory."""
    row = result("optimizer", family)
    reference = np.load(fixture("optimizers", "trajectories.npz"))
    with open(fixture("optimizers", "trajectories.json")) as f:
        settings = json.load(f)
    names = [k[len("init_"):] for k in reference.files if k.startswith("init_")]
    rows = []
    for key, case in settings["optimizers"].items():
        if case["family"] != family:
            continue
        optimizer = {k: v for k, v in case.items() if k != "family"}
        ours = our_trajectory(optimizer, reference, key, names)
        worst = 0.0
        for n in names:
            theirs = reference[f"{key}_{n}"].astype(np.float64)
            per_step = tuple(range(1, theirs.ndim))
            diff = np.abs(ours[n] - theirs).max(axis=per_step)
            worst = max(worst, float((diff / np.abs(theirs).max(axis=per_step)).max()))
        shown = ", ".join(f"{k} {v}" for k, v in optimizer.items() if k != "type")
        rows.append(row(f"{optimizer['type']} ({shown}) vs torch.optim, {settings['steps']} steps", worst,
                        UPDATE_TOLERANCE, measure="max abs / max |param|"))
    return rows


def _updates_of(family):
    def updates():
        return optimizer_updates(family)

    return updates


for _family in ("ViT", "DeiT", "UHDFour", "LLFormer"):
    rung("optimizer", _family)(_updates_of(_family))
