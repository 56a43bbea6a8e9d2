"""Export a trained model to a Paddle inference model (``paddle.jit.save``).

The export folder holds::

    model.json, model.pdiparams   the static graph and weights (Paddle 3 / PIR format)
    deploy.yml                    what ppuhd infer needs: task, input size,
                                  preprocessing transforms, class names

The eval-mode model is traced with a free batch size and, with
``dynamic_size``, free height and width (for models that accept any size).
"""

import logging
import os

import numpy as np
import paddle
import yaml

from .. import builder
from ..config import as_run_config
from ..contract import model_info
from ..data.transforms import ToCHW
from ..registry import TRANSFORMS, ConfigError
from ..weights import load_weights
from .layout import DEPLOY_FILE, MODEL_PREFIX
from .predictor import Predictor

logger = logging.getLogger(__name__)


def _input_size(options, info):
    if options.input_size:
        return list(options.input_size)
    if info.input_size:
        return list(info.input_size)
    raise ConfigError("set export.input_size: [H, W] in the config (the model does not say its input size)")


def _preprocessing(cfg, info):
    """The evaluation transforms of the config, or else the model contract's; always ending in CHW."""
    if cfg.get("val_dataset"):
        transforms = list(cfg["val_dataset"].get("transforms") or [])
    else:
        transforms = [dict(t) for t in info.eval_transforms]
        logger.info("the config has no val_dataset: exporting the model's own evaluation preprocessing %s",
                    transforms)
    built = [builder.build(t, TRANSFORMS, f"val_dataset.transforms.{i}") for i, t in enumerate(transforms)]
    if not any(isinstance(t, ToCHW) for t in built):
        transforms.append({"type": "ToCHW"})  # the exported graph takes NCHW batches
    return transforms


def _class_names(cfg):
    """Class names from the validation dataset, if it can be built here (else None)."""
    if not cfg.get("val_dataset"):
        return None
    try:
        return list(getattr(cfg.build_dataset("val"), "class_names", None) or []) or None
    except (OSError, ValueError) as err:
        logger.warning("class names not exported: the validation dataset could not be read (%s)", err)
        return None


def export_model(cfg, weights, output_dir, ema=False, dynamic_size=None, input_size=None):
    """Export the model of ``cfg`` with ``weights``; returns the deploy description dict and the model."""
    cfg = as_run_config(cfg)
    options = cfg.export
    if dynamic_size is not None:
        options.dynamic_size = dynamic_size
    if input_size is not None:
        options.input_size = list(input_size)
    model = load_weights(cfg.build_model(), weights, ema=ema)
    model.eval()
    info = model_info(model)
    height, width = _input_size(options, info)
    shape = [None, 3, None, None] if options.dynamic_size else [None, 3, height, width]
    static = paddle.jit.to_static(
        model, input_spec=[paddle.static.InputSpec(shape, "float32", name="image")], full_graph=True
    )
    os.makedirs(output_dir, exist_ok=True)
    paddle.jit.save(static, os.path.join(output_dir, MODEL_PREFIX))
    deploy = {
        "model": cfg["model"]["type"],
        "task": info.task,
        "input_size": [height, width],
        "dynamic_size": bool(options.dynamic_size),
        "transforms": _preprocessing(cfg, info),
        "class_names": _class_names(cfg) if info.task == "classification" else None,
        "tiling": cfg.get("tiling"),  # ppuhd infer runs tiles the way evaluation does
        "input_multiple": info.input_multiple,
        "primary_output": info.primary_output,
    }
    with open(os.path.join(output_dir, DEPLOY_FILE), "w", encoding="utf-8") as f:
        yaml.safe_dump(deploy, f, sort_keys=False)
    return deploy, model


def max_export_difference(model, output_dir, input_size, batch=2, seed=0):
    """Largest |dygraph - exported| output difference on a random batch."""
    x = np.random.default_rng(seed).standard_normal((batch, 3, *input_size)).astype(np.float32)
    with paddle.no_grad():
        expected = model(paddle.to_tensor(x))
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    got = Predictor(output_dir).run(x)
    return max(float(np.abs(e.numpy() - g).max()) for e, g in zip(expected, got))
